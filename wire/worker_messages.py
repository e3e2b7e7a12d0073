"""The worker's message set: what BUILD carries, read field by field.

These readers check what the wire can know: types, the job id, and the shape of the
message. The values' own rules (layouts, currency counts, N_BYTES, packed lengths) belong to
the tree library; the worker applies them on top (worker/build_request.py).
"""
from dataclasses import dataclass

from .envelope import ProtocolError, field, job_id
from .protocol import Code


@dataclass
class BuildRequest:
    job: str
    batch: int
    count: int
    n_currencies: int
    layout: str
    n_bytes: int
    depth: int
    usernames: bytes
    balances: bytes
    as_json: bool = False
    currencies: list = None
    # SPEC section 7. The username words are field values already, encoded by the sender
    # under this rule; the worker hashes them as they are, refuses a rule it does not know
    # and says is_sorted in its JSON answer.
    username_encoding: str = "bytes"
    is_sorted: bool = False

    def body(self):
        body = {"job": self.job, "batch": self.batch, "count": self.count,
                "n_currencies": self.n_currencies, "layout": self.layout,
                "n_bytes": self.n_bytes, "depth": self.depth, "usernames": self.usernames,
                "balances": self.balances, "json": self.as_json}
        if self.currencies:
            body["currencies"] = list(self.currencies)
        if self.username_encoding != "bytes":
            body["username_encoding"] = self.username_encoding
        if self.is_sorted:
            body["is_sorted"] = True
        return body


def read_build(body):
    """A BUILD body -> BuildRequest with every field of the right type; ProtocolError otherwise."""
    job = job_id(body)
    batch = field(body, "batch", int, "an integer batch index")
    count = field(body, "count", int, "an integer entry count")
    n_currencies = field(body, "n_currencies", int, "an integer currency count")
    layout = field(body, "layout", str, "a layout name")
    n_bytes = field(body, "n_bytes", int, "an integer N_BYTES")
    depth = field(body, "depth", int, "an integer tree depth")
    usernames = field(body, "usernames", bytes, "packed 32-byte username words")
    balances = field(body, "balances", bytes, "packed 32-byte balance words")
    as_json = body.get("json", False)
    currencies = body.get("currencies")
    encoding = body.get("username_encoding", "bytes")
    is_sorted = body.get("is_sorted", False)
    if not isinstance(encoding, str):
        raise ProtocolError(Code.BAD_FIELD, "field 'username_encoding': expected a name")
    if type(is_sorted) is not bool:
        raise ProtocolError(Code.BAD_FIELD, "field 'is_sorted': expected true or false")
    if batch < 0:
        raise ProtocolError(Code.BAD_FIELD, "field 'batch': must not be negative")
    if type(as_json) is not bool:
        raise ProtocolError(Code.BAD_FIELD, "field 'json': expected true or false")
    if currencies is not None and (not isinstance(currencies, list) or len(currencies) != n_currencies
                                   or not all(isinstance(c, str) for c in currencies)):
        raise ProtocolError(Code.CURRENCY_MISMATCH, f"field 'currencies': expected "
                            f"{n_currencies} names")
    return BuildRequest(job, batch, count, n_currencies, layout, n_bytes, depth, usernames,
                        balances, as_json, currencies, encoding, is_sorted)


def check_cancel(body):
    return job_id(body)

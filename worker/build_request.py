"""A BUILD as the worker accepts it: the wire's types and shape, then the tree library's rules
on the values, each answered with the error code the protocol names for it."""
from .. import wire
from ..mst.limits import (CurrencyMismatch, check_n_bytes, check_n_currencies, check_packed,
                          check_shape, check_username_encoding, layout_code, tree_bytes)
from ..wire import Code, ProtocolError


def check_build(body, max_message_bytes=wire.DEFAULT_MAX_MESSAGE_BYTES):
    """A BUILD body -> BuildRequest; ProtocolError (BAD_FIELD, CURRENCY_MISMATCH) otherwise."""
    request = wire.read_build(body)
    wire.rule(check_n_currencies, request.n_currencies, "field 'n_currencies'")
    wire.rule(layout_code, request.layout, "field 'layout'")
    wire.rule(check_n_bytes, request.n_bytes, "field 'n_bytes'")
    wire.rule(check_username_encoding, request.username_encoding, "field 'username_encoding'")
    wire.rule(check_shape, request.count, request.depth, "fields 'count' and 'depth'")
    try:
        check_packed(request.usernames, request.balances, request.count, request.n_currencies,
                     names=("field 'usernames'", "field 'balances'"))
    except CurrencyMismatch as error:
        raise ProtocolError(Code.CURRENCY_MISMATCH, str(error)) from None
    except ValueError as error:
        raise ProtocolError(Code.BAD_FIELD, str(error)) from None
    size = tree_bytes(request.depth, request.n_currencies)
    if size > max_message_bytes:       # a tiny request must not buy a huge tree
        raise ProtocolError(Code.BAD_FIELD, f"a mini-tree of depth {request.depth} with "
                            f"{request.n_currencies} currencies is {size} bytes, over "
                            f"this worker's message limit of {max_message_bytes}")
    return request

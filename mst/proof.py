"""Checking an inclusion proof (SPEC sections 5 and 7): strict parsing, then recomputation.

A proof states everything its check needs: the layout, and (SPEC section 7) the username
encoding and whether the tree is sorted. Proofs written before section 7 carry neither field:
they are `bytes` and unsorted. Sortedness cannot be checked from one path (it is a statement
about the neighbours), so it is parsed, returned to the caller, and shown by summa-verify."""
import re

from ..cython_ext import _kernel
from ..cython_ext.params import P
from .csv_reader import username_to_word
from .limits import (DEFAULT_USERNAME_ENCODING, check_n_currencies, check_username_encoding,
                     layout_code)
from .words import int_of, word_of

_FIELD = re.compile(r"0x[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")   # canonical: one proof text per proof


class InvalidProof(ValueError):
    """The proof is malformed or does not lead to its root; the message says why."""


def _field(value, where):
    if not isinstance(value, str) or not _FIELD.fullmatch(value):
        raise InvalidProof(f"{where}: expected a field element written 0x + 64 lowercase hex digits")
    number = int(value, 16)
    if number >= P:
        raise InvalidProof(f"{where}: not below the field modulus")
    return number


def _node(value, n_currencies, where):
    if not isinstance(value, dict) or set(value) != {"hash", "balances"}:
        raise InvalidProof(f"{where}: expected an object with exactly 'hash' and 'balances'")
    balances = value["balances"]
    if not isinstance(balances, list) or len(balances) != n_currencies:
        raise InvalidProof(f"{where}.balances: expected {n_currencies} balances")
    return (_field(value["hash"], f"{where}.hash"),
            [_field(b, f"{where}.balances[{i}]") for i, b in enumerate(balances)])


KEYS = {"layout", "n_currencies", "entry", "index", "path", "path_indices", "root"}
OPTIONAL = {"username_encoding", "is_sorted"}     # SPEC section 7; absent: bytes, unsorted


def variants(proof):
    """(username encoding, is_sorted) that a parsed-valid proof states."""
    return proof.get("username_encoding", DEFAULT_USERNAME_ENCODING), proof.get("is_sorted", False)


def _parse(proof):
    if not isinstance(proof, dict) or not KEYS <= set(proof) <= KEYS | OPTIONAL:
        raise InvalidProof(f"expected an object with exactly the keys {sorted(KEYS)}, and "
                           f"optionally {sorted(OPTIONAL)}")
    layout, n = proof["layout"], proof["n_currencies"]
    try:
        layout_code(layout)
        check_n_currencies(n)
        encoding = check_username_encoding(proof.get("username_encoding", DEFAULT_USERNAME_ENCODING),
                                           "username_encoding")
    except ValueError as error:
        raise InvalidProof(str(error)) from None
    if type(proof.get("is_sorted", False)) is not bool:
        raise InvalidProof("is_sorted: expected true or false")
    entry = proof["entry"]
    if not isinstance(entry, dict) or set(entry) != {"username", "balances"}:
        raise InvalidProof("entry: expected an object with exactly 'username' and 'balances'")
    if not isinstance(entry["username"], str):
        raise InvalidProof("entry.username: expected a string")
    try:
        username = int_of(username_to_word(entry["username"], encoding))
    except ValueError as error:
        raise InvalidProof(f"entry.username: {error}") from None
    balances = entry["balances"]
    if not isinstance(balances, list) or len(balances) != n:
        raise InvalidProof(f"entry.balances: expected {n} decimal strings")
    for i, b in enumerate(balances):
        if not isinstance(b, str) or not _DECIMAL.fullmatch(b) or int(b) >= P:
            raise InvalidProof(f"entry.balances[{i}]: expected a decimal string without leading "
                               f"zeros, below the field modulus")
    path, sides, index = proof["path"], proof["path_indices"], proof["index"]
    if not isinstance(path, list) or not isinstance(sides, list) or len(path) != len(sides):
        raise InvalidProof("path and path_indices: expected two lists of the same length")
    if any(type(s) is not int or s not in (0, 1) for s in sides):
        raise InvalidProof("path_indices: expected only 0 and 1")
    if type(index) is not int or not 0 <= index < 1 << len(sides):
        raise InvalidProof("index: expected an integer that fits the path length")
    if any((index >> level) & 1 != side for level, side in enumerate(sides)):
        raise InvalidProof("index: does not match path_indices")
    siblings = [_node(node, n, f"path[{i}]") for i, node in enumerate(path)]
    root = _node(proof["root"], n, "root")
    return layout, username, [int(b) for b in balances], siblings, sides, root


def _hash(elements):
    return int_of(_kernel.hash_words(b"".join(word_of(e) for e in elements), 1, len(elements)))


def _parent(layout, left, right):
    sums = [a + b for a, b in zip(left[1], right[1])]
    if any(s >= P for s in sums):
        raise InvalidProof("a balance sum along the path leaves the field")
    if layout == "interleaved":
        return _hash([left[0], *left[1], right[0], *right[1]]), sums
    return _hash([*sums, left[0], right[0]]), sums


def verify_proof(proof):
    """Return the root it proves; raise InvalidProof with the reason otherwise."""
    layout, username, balances, siblings, sides, root = _parse(proof)
    node = (_hash([username, *balances]), balances)
    for sibling, side in zip(siblings, sides):
        node = _parent(layout, sibling, node) if side else _parent(layout, node, sibling)
    if node[0] != root[0]:
        raise InvalidProof("the path does not lead to the root hash")
    if node[1] != root[1]:
        raise InvalidProof("the path does not lead to the root balances")
    return root

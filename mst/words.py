"""Field words to and from Python ints and the spec's JSON hex (used for the few nodes a
caller asks for: a root, a proof path)."""
from ..cython_ext.params import WORD


def word_of(value):
    return int(value).to_bytes(WORD, "little")


def int_of(word):
    return int.from_bytes(word, "little")


def field_hex(value):
    """A field element as the spec writes it in JSON."""
    return "0x%064x" % value

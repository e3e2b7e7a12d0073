"""Field words and layout names, shared by the tree, the proofs and the store."""

WORD = 32                                     # bytes in a field word, little-endian
LAYOUTS = {"interleaved": 0, "sum-first": 1}  # kernel codes of the middle-node layouts
DEFAULT_LAYOUT = "interleaved"


def word_of(value):
    return int(value).to_bytes(WORD, "little")


def int_of(word):
    return int.from_bytes(word, "little")


def field_hex(value):
    """A field element as the spec writes it in JSON."""
    return "0x%064x" % value


def layout_code(layout):
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown layout {layout!r} (expected one of: {', '.join(LAYOUTS)})") from None

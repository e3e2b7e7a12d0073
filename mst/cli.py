"""summa-proof and summa-verify: offline, from a result directory and a proof file."""
import json
import sys

from .commands import Parser, run
from .proof import InvalidProof, variants, verify_proof
from .store import check, load


EXPORT_CHUNK = 1024     # proofs verified side by side (each distinct node hashed once)


def _proof(argv):
    parser = Parser(prog="summa-proof", description="Print the inclusion proof of USERNAME "
                    "from a result directory written by summa-aggregate --out (works offline). "
                    "Every proof is verified against the manifest's root before it is printed.")
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("username", metavar="USERNAME", nargs="?")
    parser.add_argument("--usernames", metavar="FILE",
                        help="print one proof per line (JSON lines) for each username in FILE "
                             "(one per line; - for standard input)")
    parser.add_argument("--check", action="store_true",
                        help="check every file of DIR against the manifest's SHA-256s")
    args = parser.parse_args(argv)
    if sum((args.username is not None, args.usernames is not None, args.check)) != 1:
        parser.error("give exactly one of USERNAME, --usernames FILE or --check")
    if args.check:
        checked = check(args.directory)
        print(f"ok: {args.directory}: {checked} bytes match the manifest's SHA-256s")
        return 0
    tree, _ = load(args.directory)
    if args.usernames is not None:
        return _export(tree, args.directory, args.usernames)
    try:
        proof = tree.proof(args.username)
    except KeyError:
        raise KeyError(f"username {args.username!r} is not in {args.directory}") from None
    print(json.dumps(proof, indent=2))
    return 0


def _export(tree, directory, source):
    """JSON lines, in the order of the usernames; a missing one gets an error line."""
    handle = sys.stdin if source == "-" else open(source, encoding="utf-8", newline="")
    missing = 0
    sys.stdout.flush()
    out = getattr(sys.stdout, "buffer", None)
    with handle:
        chunk = []
        for line in handle:
            name = line.rstrip("\r\n")
            if name:
                chunk.append(name)
            if len(chunk) == EXPORT_CHUNK:
                missing += _export_chunk(tree, chunk, out)
                chunk = []
        missing += _export_chunk(tree, chunk, out)
    if out is not None:
        out.flush()
    if missing:
        print(f"summa-proof: {missing} username(s) not in {directory} (see the error lines)",
              file=sys.stderr)
        return 1
    return 0


def _missing_line(name):
    return json.dumps({"username": name, "error": "not in the tree"}, separators=(",", ":")) + "\n"


def _export_chunk(tree, names, out):
    """One chunk of the export: its proofs verified together (each distinct node hashed once,
    the verified nodes kept for the next chunks) and written as one block."""
    if not names:
        return 0
    if not hasattr(tree, "proof_lines"):          # a version-1 result
        lines, missing = [], 0
        for name in names:
            index = tree.index_of(name)
            if index is None:
                lines.append(_missing_line(name))
                missing += 1
            else:
                lines.append(json.dumps(tree.proof(index), separators=(",", ":")) + "\n")
        _write(out, "".join(lines).encode())
        return missing
    text, indices = tree.proof_lines(names)
    if None not in indices:
        _write(out, text)
        return 0
    proofs = iter(text.splitlines(keepends=True))
    _write(out, b"".join(next(proofs) if index is not None else _missing_line(name).encode()
                         for name, index in zip(names, indices)))
    return indices.count(None)


def _write(out, data):
    if out is None:
        sys.stdout.write(data.decode())
    else:
        out.write(data)


def _verify(argv):
    parser = Parser(prog="summa-verify", description="Check an inclusion proof: exit 0 when it "
                    "is valid, 1 with the reason when it is not.")
    parser.add_argument("proof", metavar="PROOF_JSON", help="a proof file, or - for standard input")
    parser.add_argument("--root", metavar="HASH", help="also require this published root hash")
    args = parser.parse_args(argv)
    if args.proof == "-":
        text = sys.stdin.read()
    else:
        with open(args.proof, encoding="utf-8") as handle:
            text = handle.read()
    try:
        proof = json.loads(text)
    except ValueError as error:
        raise InvalidProof(f"{args.proof}: not valid JSON ({error})") from None
    root = verify_proof(proof)
    if args.root is not None and args.root.lower() != "0x%064x" % root[0]:
        raise InvalidProof(f"the proof leads to root 0x{root[0]:064x}, not to {args.root}")
    encoding, is_sorted = variants(proof)
    print(f"valid: {proof['entry']['username']!r} at index {proof['index']} "
          f"under root 0x{root[0]:064x} ({proof['layout']}, usernames {encoding}"
          f"{', sorted tree' if is_sorted else ''})")


def proof_main(argv=None):
    return run("summa-proof", _proof, argv)


def verify_main(argv=None):
    return run("summa-verify", _verify, argv)

"""summa-proof and summa-verify: offline, from a result directory and a proof file."""
import json
import sys

from .commands import Parser, run
from .proof import InvalidProof, verify_proof
from .store import load


def _proof(argv):
    parser = Parser(prog="summa-proof", description="Print the inclusion proof of USERNAME "
                    "from a result directory written by summa-aggregate --out (works offline).")
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("username", metavar="USERNAME")
    args = parser.parse_args(argv)
    tree, _ = load(args.directory)
    try:
        proof = tree.proof(args.username)
    except KeyError:
        raise KeyError(f"username {args.username!r} is not in {args.directory}") from None
    print(json.dumps(proof, indent=2))


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
    print(f"valid: {proof['entry']['username']!r} at index {proof['index']} "
          f"under root 0x{root[0]:064x}")


def proof_main(argv=None):
    return run("summa-proof", _proof, argv)


def verify_main(argv=None):
    return run("summa-verify", _verify, argv)

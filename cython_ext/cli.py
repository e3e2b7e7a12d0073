"""summa-proof and summa-verify, plus the error handling every command shares.

User mistakes end as one line on stderr and a non-zero exit, never a traceback:
exit 1 when the data says no (bad CSV, invalid proof), 2 for usage and unreadable input.
"""
import argparse
import json
import sys

from .csv_reader import CsvError
from .proof import InvalidProof, verify_proof
from .store import StoreError, load
from .tree import RangeCheckError

USER_ERRORS = (CsvError, RangeCheckError, StoreError, InvalidProof, KeyError, ValueError)


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(prog, body, argv):
    """Call body(argv); turn the errors a user can cause into one line and an exit code."""
    try:
        return body(argv) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prog}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2


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

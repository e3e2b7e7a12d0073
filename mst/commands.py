"""What every command shares: one argparse base, one way to turn a user's mistake into a line.

User mistakes end as one line on stderr and a non-zero exit, never a traceback:
exit 1 when the data says no (bad CSV, invalid proof), 2 for usage and unreadable input.
"""
import argparse
import sys

from .csv_reader import CsvError
from .limits import DEFAULT_USERNAME_ENCODING, USERNAME_ENCODINGS, check_power_of_two
from .proof import InvalidProof
from .store import StoreError
from .tree import RangeCheckError

USER_ERRORS = (CsvError, RangeCheckError, StoreError, InvalidProof, KeyError, ValueError)


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2 (its subcommands'
    parsers are of the same class: add_subparsers makes them so)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def power_of_two(text):
    """An argparse type: a size by the rule every size follows (ValueError otherwise)."""
    return check_power_of_two(int(text))


power_of_two.__name__ = "power of two"   # argparse names the type in its error


def add_variant_arguments(parser):
    """The job variants of SPEC section 7, the same flags on every command that builds."""
    parser.add_argument("--username-encoding", choices=list(USERNAME_ENCODINGS),
                        default=DEFAULT_USERNAME_ENCODING,
                        help="bytes: a username's UTF-8 bytes are its field value (at most 31 "
                             "bytes always fit); keccak256: their Keccak-256 digest mod p, any "
                             "length (summa-solvency since April 2024)")
    parser.add_argument("--sorted", action="store_true",
                        help="sort every entry by username (UTF-8 bytes) first, and build one "
                             "tree of the sorted sequence (summa-solvency's new_sorted)")


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

"""summa-keys: generate the key pairs of a deployment, split an old key directory by role, or
write the key directory a worker host gets (see wire/keys.py)."""
import grp
import pwd
import sys

from ..mst.commands import Parser
from ..wire.keys import KeysError, generate, split_old, write_worker_keys


def _owner(text):
    """USER[:GROUP] (names or numbers, a number needing no account) -> (uid, gid); the group
    defaults to the user's own (for a number without an account, the same number)."""
    user, _, group = text.partition(":")
    if user.isdigit():
        uid = int(user)
        try:
            default_gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            default_gid = uid
    else:
        entry = pwd.getpwnam(user)
        uid, default_gid = entry.pw_uid, entry.pw_gid
    gid = default_gid if not group else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def main(argv=None):
    parser = Parser(prog="summa-keys", description="Generate CURVE key pairs for the daemon, "
                    "the workers and clients, with one allow-list per role (authorized/ROLE/).")
    parser.add_argument("directory", metavar="DIR")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--split", action="store_true",
                        help="move an old single list authorized/*.key into authorized/ROLE/")
    action.add_argument("--worker-keys", metavar="OUT",
                        help="write to OUT only what a worker needs: its pair and the daemon's "
                             "public key")
    parser.add_argument("--owner", metavar="USER[:GROUP]",
                        help="with --worker-keys: the user (and group) the worker runs as")
    args = parser.parse_args(argv)
    try:
        if args.split:
            roles = split_old(args.directory)
            print(f"summa-keys: moved {', '.join(r + '.key' for r in roles)} into "
                  f"{args.directory}/authorized/ROLE/")
        elif args.worker_keys:
            uid, gid = _owner(args.owner) if args.owner else (-1, -1)
            write_worker_keys(args.directory, args.worker_keys, uid, gid)
            print(f"summa-keys: wrote the worker's key directory {args.worker_keys}")
        else:
            if args.owner:
                parser.error("--owner goes with --worker-keys")
            generate(args.directory)
            print(f"summa-keys: wrote daemon, worker and client key pairs and authorized/"
                  f"{{client,worker,daemon}}/ to {args.directory}")
    except (KeyError, ValueError) as error:
        if not isinstance(error, KeysError):
            print(f"summa-keys: error: --owner {args.owner}: no such user or group", file=sys.stderr)
            return 2
        print(f"summa-keys: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"summa-keys: error: {error}", file=sys.stderr)
        return 1
    return 0

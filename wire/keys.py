"""CURVE keys: generating them, loading them, and admitting each peer only where its role belongs.

A key directory (summa-keys DIR makes one) holds three key pairs, each in zmq.auth's format
(NAME.key public, NAME.key_secret both, the secret mode 0600), and one allow-list per role:

    daemon.key[_secret]     the daemon: a client of the workers, server of control and cancel
    worker.key[_secret]     every worker (one pair shared by all, e.g. a Docker secret)
    client.key[_secret]     summa-submit and other clients
    authorized/client/      public keys the daemon's control socket admits
    authorized/worker/      public keys the daemon's cancellation PUB admits
    authorized/daemon/      public keys a worker's ROUTER admits

Each server socket carries the ZAP domain of the one role it admits (SOCKET_ROLES), and the
context's authenticator checks a peer against that role's list alone, so a worker's key opens
nothing but the cancel feed. A refused peer is logged with the socket and, when the key is one
of ours, its role. A worker needs only WORKER_FILES (write_worker_keys makes that directory).
Depends only on pyzmq (nothing above the wire); the command is summa-keys (daemon/keygen.py).
"""
import glob
import logging
import os
import stat
import tempfile
from dataclasses import dataclass, replace

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("summa.auth")
ROLES = ("daemon", "worker", "client")
SOCKET_ROLES = {"control": "client", "cancel": "worker", "worker": "daemon"}
WORKER_FILES = ("worker.key", "worker.key_secret", "daemon.key", "authorized/daemon/daemon.key")
SECRET_MODE = 0o600


class KeysError(ValueError):
    """A key directory that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Curve:
    """What one side needs: its own pair; for a client socket the server's public key, for a
    server socket the role it admits (its ZAP domain)."""
    public: bytes
    secret: bytes
    server_public: bytes = None
    admits: str = None

    def for_server(self, server_public):
        return replace(self, server_public=server_public)

    def admitting(self, role):
        return replace(self, admits=role)


def _key_text(kind, public, secret=None):
    lines = [f"#   ZeroMQ CURVE {kind} Certificate (summa-keys)", "", "metadata", "curve",
             f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return ("\n".join(lines) + "\n").encode()


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path, data, mode, uid=-1, gid=-1):
    """Write `path` whole or not at all: a temporary file created with its final mode (never
    wider for an instant, whatever the umask allows less of), fsynced, then linked into place,
    which fails rather than replace a file that is there."""
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")   # mkstemp: 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if uid != -1 or gid != -1:
                os.fchown(handle.fileno(), uid, gid)
            os.fsync(handle.fileno())
        os.link(temporary, path)
    finally:
        os.unlink(temporary)


def _write_pair(directory, role, public, secret, uid=-1, gid=-1):
    _write_new(os.path.join(directory, f"{role}.key"), _key_text("Public", public), 0o644, uid, gid)
    _write_new(os.path.join(directory, f"{role}.key_secret"), _key_text("**Secret**", public, secret),
               SECRET_MODE, uid, gid)


def _makedirs(path, uid=-1, gid=-1):
    os.makedirs(path, mode=0o700, exist_ok=True)
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid)


def generate(directory):
    """Create the three pairs and the three allow-lists in `directory` (refused if it holds keys)."""
    _makedirs(directory)
    if glob.glob(os.path.join(directory, "*.key*")) or os.path.exists(os.path.join(directory, "authorized")):
        raise KeysError(f"{directory}: already holds keys (never overwritten)")
    for role in ROLES:
        public, secret = zmq.curve_keypair()
        _write_pair(directory, role, public, secret)
        admitted = os.path.join(directory, "authorized", role)
        _makedirs(admitted)
        _write_new(os.path.join(admitted, f"{role}.key"), _key_text("Public", public), 0o644)
        _fsync_dir(admitted)
    _fsync_dir(os.path.join(directory, "authorized"))
    _fsync_dir(directory)
    return directory


def write_worker_keys(keys_dir, out_dir, uid=-1, gid=-1):
    """A key directory holding only what a worker needs (WORKER_FILES): its own pair, the
    daemon's public key, and the daemon's key as the one its ROUTER admits; owned by uid:gid
    when given (the user a container or a unit runs as). Written afresh each time."""
    source = KeyDir(keys_dir)
    worker, daemon = source.curve("worker"), source.public("daemon")
    for name in WORKER_FILES:                     # stale files from an earlier run (same names)
        if os.path.lexists(os.path.join(out_dir, name)):
            os.unlink(os.path.join(out_dir, name))
    _makedirs(out_dir, uid, gid)
    _makedirs(os.path.join(out_dir, "authorized"), uid, gid)
    _makedirs(os.path.join(out_dir, "authorized", "daemon"), uid, gid)
    _write_pair(out_dir, "worker", worker.public, worker.secret, uid, gid)
    for name in ("daemon.key", "authorized/daemon/daemon.key"):
        _write_new(os.path.join(out_dir, name), _key_text("Public", daemon), 0o644, uid, gid)
    for directory in ("authorized/daemon", "authorized", ""):
        _fsync_dir(os.path.join(out_dir, directory))
    return out_dir


def split_old(directory):
    """Turn an old single allow-list (authorized/*.key, one list for every socket) into one
    list per role, for the keys named after a role; any other key must be placed by hand."""
    old = sorted(glob.glob(os.path.join(directory, "authorized", "*.key")))
    if not old:
        raise KeysError(f"{directory}/authorized: holds no old single allow-list to split")
    names = [os.path.basename(path)[:-len(".key")] for path in old]
    strangers = [name for name in names if name not in ROLES]
    if strangers:
        raise KeysError(f"{directory}/authorized: {', '.join(s + '.key' for s in strangers)} "
                        f"belong to no role: move each into authorized/client/, authorized/worker/ "
                        f"or authorized/daemon/ by hand, then run summa-keys --split again")
    for path, role in zip(old, names):
        _makedirs(os.path.join(directory, "authorized", role))
        os.rename(path, os.path.join(directory, "authorized", role, f"{role}.key"))
        _fsync_dir(os.path.join(directory, "authorized", role))
    _fsync_dir(os.path.join(directory, "authorized"))
    return names


def _load(path, want_secret):
    """(public, secret) from one key file; a secret one must not be readable by group or
    others (checked on the open file, as ssh does)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise KeysError(f"{path}: cannot read a {'secret' if want_secret else 'public'} key "
                        f"({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeysError(f"{path}: not a regular file")
        if want_secret and info.st_mode & 0o077:
            raise KeysError(f"{path}: a secret key readable by group or others (mode "
                            f"{stat.S_IMODE(info.st_mode):04o}); make it private: chmod 600 {path}")
        text = handle.read(64 << 10)
    public = secret = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(b"public-key"):
            public = line.split(b"=", 1)[1].strip(b' \t\'"')
        elif line.startswith(b"secret-key"):
            secret = line.split(b"=", 1)[1].strip(b' \t\'"')
    if public is None or len(public) != 40 or (want_secret and (secret is None or len(secret) != 40)):
        raise KeysError(f"{path}: holds no {'secret' if want_secret else 'public'} CURVE key")
    return public, secret


class KeyDir:
    def __init__(self, directory):
        self.directory = directory
        if not os.path.isdir(directory):
            raise KeysError(f"{directory}: no such key directory (summa-keys {directory} makes one)")

    def curve(self, role):
        """This side's pair, from ROLE.key_secret."""
        public, secret = _load(os.path.join(self.directory, f"{role}.key_secret"), True)
        return Curve(public, secret)

    def public(self, role):
        return _load(os.path.join(self.directory, f"{role}.key"), False)[0]

    def admitted(self, role):
        """The public keys of authorized/ROLE/ (refusing an old single list)."""
        authorized = os.path.join(self.directory, "authorized")
        if glob.glob(os.path.join(authorized, "*.key")):
            raise KeysError(f"{authorized}: an old single allow-list (every key admitted "
                            f"everywhere): split it by role with `summa-keys --split "
                            f"{self.directory}`, or make new keys with `summa-keys NEWDIR`")
        folder = os.path.join(authorized, role)
        if not os.path.isdir(folder):
            raise KeysError(f"{folder}: no such allow-list (summa-keys makes one per role)")
        return {_load(path, False)[0] for path in sorted(glob.glob(os.path.join(folder, "*.key")))}

    def known_roles(self):
        """public key -> role, for every key of this directory whose role is known (logging)."""
        known = {}
        for role in ROLES:
            for path in glob.glob(os.path.join(self.directory, "authorized", role, "*.key")) + \
                    glob.glob(os.path.join(self.directory, f"{role}.key")):
                try:
                    known[_load(path, False)[0]] = role
                except KeysError:
                    pass
        return known


class _AllowList:
    def __init__(self, keys, who, role, known):
        self.keys, self.who, self.role, self.known = set(keys), who, role, known

    def callback(self, domain, key):
        if key in self.keys:
            return True
        what = f"a {self.known[key]} key" if key in self.known else "an unknown key"
        log.warning("%s refused a peer with %s %s: it admits %s keys only", self.who, what,
                    key.decode(), self.role)
        return False


def start_authenticator(context, keys, who, sockets):
    """Check every CURVE server socket of `context` against the allow-list of the role its
    ZAP domain names (`sockets`: names of SOCKET_ROLES); returns the authenticator. A server
    socket without one of these domains admits nobody."""
    authenticator = ThreadAuthenticator(context)
    known = keys.known_roles()
    lists = {name: keys.admitted(SOCKET_ROLES[name]) for name in sockets}   # errors before start
    authenticator.start()
    for name in sockets:
        role = SOCKET_ROLES[name]
        authenticator.configure_curve_callback(
            role, credentials_provider=_AllowList(lists[name], f"{who} {name} socket", role, known))
    return authenticator

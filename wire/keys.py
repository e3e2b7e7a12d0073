"""CURVE keys: generating them, loading them, and refusing peers whose key is unknown.

A key directory (summa-keys DIR makes one) holds three key pairs, each as zmq.auth writes
them (NAME.key public, NAME.key_secret both):

    daemon.key[_secret]   the daemon: its control ROUTER and cancellation PUB are servers
    worker.key[_secret]   every worker (one pair shared by all, e.g. a Docker secret)
    client.key[_secret]   summa-submit and other clients
    authorized/*.key      public keys allowed to connect to any server socket

Servers accept only keys found in authorized/; a refused peer is logged with its key.
Depends only on pyzmq (nothing above the wire); the command is summa-keys (daemon/keygen.py).
"""
import glob
import logging
import os
import shutil
from dataclasses import dataclass

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("summa.auth")
ROLES = ("daemon", "worker", "client")


class KeysError(ValueError):
    """A key directory that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Curve:
    """What one side needs: its own pair, and for a client socket the server's public key."""
    public: bytes
    secret: bytes
    server_public: bytes = None

    def for_server(self, server_public):
        return Curve(self.public, self.secret, server_public)


def generate(directory):
    """Create the three pairs and authorized/ in `directory` (refused if it holds keys)."""
    os.makedirs(directory, exist_ok=True)
    if glob.glob(os.path.join(directory, "*.key*")):
        raise KeysError(f"{directory}: already holds keys (never overwritten)")
    authorized = os.path.join(directory, "authorized")
    os.makedirs(authorized, exist_ok=True)
    for role in ROLES:
        public, secret = zmq.auth.create_certificates(directory, role)
        os.chmod(secret, 0o600)
        shutil.copy(public, authorized)
    return directory


class KeyDir:
    def __init__(self, directory):
        self.directory = directory
        if not os.path.isdir(directory):
            raise KeysError(f"{directory}: no such key directory (summa-keys {directory} makes one)")

    def curve(self, role):
        """This side's pair, from ROLE.key_secret."""
        path = os.path.join(self.directory, f"{role}.key_secret")
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as error:
            raise KeysError(f"{path}: cannot load a secret key ({error})") from None
        if secret is None:
            raise KeysError(f"{path}: holds no secret key")
        return Curve(public, secret)

    def public(self, role):
        path = os.path.join(self.directory, f"{role}.key")
        try:
            return zmq.auth.load_certificate(path)[0]
        except (OSError, ValueError) as error:
            raise KeysError(f"{path}: cannot load a public key ({error})") from None

    def authorized(self):
        keys = set()
        for path in sorted(glob.glob(os.path.join(self.directory, "authorized", "*.key"))):
            keys.add(zmq.auth.load_certificate(path)[0])
        return keys


class _AllowList:
    def __init__(self, keys, who):
        self.keys, self.who = set(keys), who

    def callback(self, domain, key):
        if key in self.keys:
            return True
        log.warning("%s refused a peer with an unknown CURVE key %s", self.who, key.decode())
        return False


def start_authenticator(context, keys, who):
    """Check every CURVE server socket of `context` against `keys`; returns the authenticator."""
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve_callback("*", credentials_provider=_AllowList(keys, who))
    return authenticator

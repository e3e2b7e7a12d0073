"""LocalSpawner: one worker container per executor on this host's Docker engine (Docker SDK).

Containers run the project image with host networking, each bound to its own free port of
127.0.0.1, and carry labels naming this daemon (by its data directory) and the job:
terminate_executors() removes the job's containers, and a daemon that starts again removes
whatever an earlier run of it left behind (cleanup_leftovers), even after a crash.

Every container is hardened the same way (HARDENING): a non-root user, no capabilities,
no-new-privileges, a read-only root filesystem with a small /tmp tmpfs, and a memory limit
(worker_memory_bytes). With keys it gets only the worker's key directory (WORKER_FILES),
bind-mounted read-only: a copy owned by the user the container runs as (container_user).
"""
import hashlib
import logging
import os
import secrets
import socket
import threading
import time

import zmq

from ..executor import Executor, wait_until_answering
from ...mst.shape import MAX_UNIT_BYTES, MAX_UNIT_DEPTH
from ...wire.keys import KeysError, write_worker_keys
from .base import ExecutorSpawner, SpawnError

log = logging.getLogger("summa.daemon")

LABEL = "summa-aggregation.role"             # = "worker" on every container we start
OWNER = "summa-aggregation.owner"            # = a digest of the daemon's data directory
JOB = "summa-aggregation.job"                # = the job the container (or service) serves
READY_SECONDS = 60
KEYS_IN_CONTAINER = "/run/secrets/summa-keys"
WORKER_UID = WORKER_GID = 10001              # the image's user `summa` (Dockerfile)
TMP_BYTES = 16 << 20                         # the writable /tmp of a read-only container
GONE_SECONDS = 30                            # for removed workers to be gone, at most


def owner_of(config):
    return hashlib.sha256(config.data_dir.encode()).hexdigest()[:16]


def container_user():
    """(uid, gid) every worker container runs as: the image's `summa` (10001:10001) when the
    daemon is root, else the daemon's own, so that the copy of the keys it writes for them is
    theirs without a chown it could not do. Never root."""
    if os.geteuid() == 0:
        return WORKER_UID, WORKER_GID
    return os.geteuid(), os.getegid()


def worker_memory_bytes(config):
    """The memory limit of each worker container or replica, in bytes (0: none).

    worker_memory_mb, or by default the worker's own budget for the work this daemon gives it,
    (3 x threads + 2) x the largest message + 256 MiB, over 3/4, since a worker keeps its budget
    within 3/4 of its cgroup limit: the largest message is a unit's subtree, at most 64 MiB by
    the unit rule (times unit_size / 2^16 for a fixed larger unit_size). 768 MiB at 1 thread."""
    if config.worker_memory_mb:
        return max(config.worker_memory_mb, 0) << 20
    message = MAX_UNIT_BYTES * max(1, config.unit_size >> MAX_UNIT_DEPTH)
    return ((3 * config.worker_threads + 2) * message + (256 << 20)) // 3 * 4


def docker_client():
    import docker            # imported here: the mock spawner needs no Docker at all
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException as error:
        raise SpawnError(f"no Docker engine answers: {error}") from None


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_keys_lock = threading.Lock()
_keys_written = {}          # directory -> what this process last copied into it


def _source_of(config, directory):
    """What a copy was made from: the key directory, its worker secret's identity and mtime,
    and the copy's own identity (made afresh when either changed, or the copy is gone)."""
    try:
        secret = os.stat(os.path.join(config.keys_dir, "worker.key_secret"))
        copy = os.stat(os.path.join(directory, "worker.key_secret"))
    except OSError:
        return None
    return config.keys_dir, secret.st_ino, secret.st_mtime_ns, copy.st_ino


def container_keys(config, uid, gid):
    """DATA_DIR/worker-keys-UID: WORKER_FILES only, owned by uid:gid (secret 0600), written
    once per daemon process and key directory (jobs running at once share it; every container
    mounts it read-only)."""
    directory = os.path.join(config.data_dir, f"worker-keys-{uid}")
    with _keys_lock:
        known = _keys_written.get(directory)
        if known is None or known != _source_of(config, directory):
            try:
                write_worker_keys(config.keys_dir, directory, uid, gid)
            except KeysError as error:
                raise SpawnError(str(error)) from None
            except OSError as error:
                raise SpawnError(
                    f"{directory}: cannot write the workers' keys owned by {uid}:{gid}, the user "
                    f"their containers run as ({error.strerror}): a daemon running as root gives "
                    f"them to the image's user {WORKER_UID}:{WORKER_GID}, any other daemon runs its "
                    f"containers as itself and needs to be able to write its data directory") from None
            _keys_written[directory] = _source_of(config, directory)
    return directory


def hardening(config, uid, gid):
    """containers.run() options every worker container gets (docker inspect shows them)."""
    options = dict(user=f"{uid}:{gid}", cap_drop=["ALL"], security_opt=["no-new-privileges"],
                   read_only=True, tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={TMP_BYTES}"})
    memory = worker_memory_bytes(config)
    if memory:
        options.update(mem_limit=memory, memswap_limit=memory)     # and no swap beyond it
    return options


def remove_leftover_containers(client, owner, seconds=GONE_SECONDS):
    """Force-remove every container (any state) with our worker label and this owner, and wait
    (at most `seconds`) until none is left: a Swarm task whose service was just removed may be
    in removal already. Returns how many there were."""
    import docker
    labels = {"label": [f"{LABEL}=worker", f"{OWNER}={owner}"]}
    found, deadline = set(), time.monotonic() + seconds
    while True:
        leftovers = client.containers.list(all=True, filters=labels)
        if not leftovers:
            return len(found)
        for container in leftovers:
            found.add(container.id)
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:      # 409: removal already in progress
                if error.status_code != 409:
                    log.warning("could not remove container %s: %s", container.name, error)
        if time.monotonic() >= deadline:
            log.warning("%d leftover worker container(s) still there after %d s",
                        len(leftovers), seconds)
            return len(found)
        time.sleep(0.2)


class LocalSpawner(ExecutorSpawner):
    job_id = None            # the daemon's runner sets it before spawn_executors

    def __init__(self, config, cancel_endpoint=None, image=None):
        super().__init__(config, cancel_endpoint)
        self.image = image or config.worker_image
        self.client = docker_client()
        self.context = zmq.Context.instance()
        self.containers = []
        self.uid, self.gid = container_user()
        self.keys_dir = None

    def _run(self):
        port = _free_port()
        environment = {"SUMMA_WORKER_BIND": f"tcp://127.0.0.1:{port}",
                       "SUMMA_WORKER_THREADS": str(self.worker_threads)}
        if self.cancel_endpoint:
            environment["SUMMA_WORKER_CANCEL"] = self.cancel_endpoint
        if os.environ.get("SUMMA_KERNEL"):    # the daemon's kernel choice reaches its workers
            environment["SUMMA_KERNEL"] = os.environ["SUMMA_KERNEL"]
        volumes = {}
        if self.config.keys_dir:              # the worker's keys only, read-only, as a secret would be
            if self.keys_dir is None:
                self.keys_dir = container_keys(self.config, self.uid, self.gid)
            volumes[self.keys_dir] = {"bind": KEYS_IN_CONTAINER, "mode": "ro"}
            environment["SUMMA_WORKER_KEYS"] = KEYS_IN_CONTAINER
        else:
            environment["SUMMA_WORKER_INSECURE"] = "1"   # the daemon was set to plaintext
        labels = {LABEL: "worker", OWNER: owner_of(self.config)}
        if self.job_id:
            labels[JOB] = self.job_id
        import docker
        try:
            container = self.client.containers.run(
                self.image, detach=True, network_mode="host", environment=environment, volumes=volumes,
                name=f"summa-worker-{port}-{secrets.token_hex(3)}", labels=labels,
                **hardening(self.config, self.uid, self.gid))
        except docker.errors.DockerException as error:
            raise SpawnError(f"cannot start a worker container from {self.image!r}: "
                             f"{str(error).splitlines()[0]}") from None
        self.containers.append(container)
        return container, f"tcp://127.0.0.1:{port}"

    def _wait_ready(self, container, endpoint):
        """Until it answers PING; a container that exits first fails at once, with its last line."""
        import docker
        deadline = time.monotonic() + READY_SECONDS
        curve = self.config.worker_curve()
        while not wait_until_answering(endpoint, self.context, 1.0, curve=curve):
            try:
                container.reload()
            except docker.errors.NotFound:
                raise SpawnError(f"container {container.name} vanished before it answered") from None
            if container.status in ("exited", "dead"):
                raise SpawnError(self._exit_message(container))
            if time.monotonic() >= deadline:
                raise SpawnError(f"container {container.name} did not answer PING within "
                                 f"{READY_SECONDS} s")

    def _exit_message(self, container):
        lines = container.logs(tail=5).decode("utf-8", "replace").strip().splitlines() or ["no output"]
        message = (f"container {container.name} exited (code {container.attrs['State']['ExitCode']}) "
                   f"before it answered: {lines[-1]}")
        if self.keys_dir and "key" in lines[-1]:
            message += (f" (its keys, {self.keys_dir}, belong to {self.uid}:{self.gid}, the user it "
                        f"runs as; an engine that remaps users (userns-remap, rootless Docker) "
                        f"shows them to it as someone else's)")
        return message

    def spawn_executors(self, count):
        started = [self._run() for _ in range(count)]     # start all, then wait for all
        for container, endpoint in started:
            self._wait_ready(container, endpoint)
        return [Executor(endpoint, f"container {container.name}", container)
                for container, endpoint in started]

    def spawn_executor(self):
        return self.spawn_executors(1)[0]

    def replace(self, executor, now):
        self._remove([executor.handle])
        return self.spawn_executor()

    def quarantine(self, executor):
        self._remove([executor.handle])
        return self.spawn_executor()

    def terminate_executors(self):
        self._remove(self.containers)
        self.containers = []

    @staticmethod
    def _remove(containers):
        """SIGTERM them all, wait up to 3 s each, then remove (SIGKILL); gone ones are fine."""
        import docker
        for container in containers:
            try:
                container.kill(signal="SIGTERM")
            except docker.errors.DockerException:
                pass                       # already stopped or removed
        for container in containers:
            try:
                container.wait(timeout=3)
            except Exception:              # a timeout, or a container already removed
                pass
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as error:
                log.warning("could not remove container %s: %s", container.name, error)

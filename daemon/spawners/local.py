"""LocalSpawner: one worker container per executor on this host's Docker engine (Docker SDK).

Containers run the project image with host networking, each bound to its own free port of
127.0.0.1, and carry labels naming this daemon (by its data directory): terminate_executors()
removes the job's containers, and a daemon that starts again removes whatever an earlier run
of it left behind (cleanup_leftovers), even after a crash.
"""
import hashlib
import logging
import os
import secrets
import socket

import zmq

from ..executor import Executor, wait_until_answering
from .base import ExecutorSpawner, SpawnError

log = logging.getLogger("summa.daemon")

LABEL = "summa-aggregation.role"             # = "worker" on every container we start
OWNER = "summa-aggregation.owner"            # = a digest of the daemon's data directory
READY_SECONDS = 60
KEYS_IN_CONTAINER = "/run/secrets/summa-keys"


def owner_of(config):
    return hashlib.sha256(config.data_dir.encode()).hexdigest()[:16]


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


def cleanup_leftovers(config):
    """Remove containers an earlier run of this daemon left; quiet when Docker is absent."""
    try:
        client = docker_client()
    except (SpawnError, ImportError):
        return 0
    leftovers = client.containers.list(all=True, filters={"label": [f"{LABEL}=worker",
                                                                     f"{OWNER}={owner_of(config)}"]})
    for container in leftovers:
        container.remove(force=True)
    if leftovers:
        log.info("removed %d leftover worker container(s)", len(leftovers))
    return len(leftovers)


class LocalSpawner(ExecutorSpawner):
    def __init__(self, config, cancel_endpoint=None, image=None):
        super().__init__(config, cancel_endpoint)
        self.image = image or config.worker_image
        self.client = docker_client()
        self.context = zmq.Context.instance()
        self.containers = []

    def _run(self):
        port = _free_port()
        environment = {"SUMMA_WORKER_BIND": f"tcp://127.0.0.1:{port}",
                       "SUMMA_WORKER_THREADS": str(self.worker_threads)}
        if self.cancel_endpoint:
            environment["SUMMA_WORKER_CANCEL"] = self.cancel_endpoint
        if os.environ.get("SUMMA_KERNEL"):    # the daemon's kernel choice reaches its workers
            environment["SUMMA_KERNEL"] = os.environ["SUMMA_KERNEL"]
        volumes = {}
        if self.config.keys_dir:              # the key directory, read-only, as a secret would be
            volumes[os.path.abspath(self.config.keys_dir)] = {"bind": KEYS_IN_CONTAINER, "mode": "ro"}
            environment["SUMMA_WORKER_KEYS"] = KEYS_IN_CONTAINER
        else:
            environment["SUMMA_WORKER_INSECURE"] = "1"   # the daemon was set to plaintext
        import docker
        try:
            container = self.client.containers.run(
                self.image, detach=True, network_mode="host", environment=environment, volumes=volumes,
                name=f"summa-worker-{port}-{secrets.token_hex(3)}",
                labels={LABEL: "worker", OWNER: owner_of(self.config)})
        except docker.errors.DockerException as error:
            raise SpawnError(f"cannot start a worker container from {self.image!r}: "
                             f"{str(error).splitlines()[0]}") from None
        self.containers.append(container)
        return container, f"tcp://127.0.0.1:{port}"

    def spawn_executors(self, count):
        started = [self._run() for _ in range(count)]     # start all, then wait for all
        for container, endpoint in started:
            if not wait_until_answering(endpoint, self.context, READY_SECONDS,
                                        curve=self.config.worker_curve()):
                raise SpawnError(f"container {container.name} did not answer PING within "
                                 f"{READY_SECONDS} s")
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

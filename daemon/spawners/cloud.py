"""CloudSpawner: workers as replicas of a Docker Swarm service; Swarm does the scheduling.

With a compose file, each job gets its own service, STACK_SERVICE-JOB, created from the file's
service definition through the Docker SDK (as `docker stack deploy` would), with the job's
executor count as replicas, and retired when the job ends (scaled to 0, its tasks stopped,
removed). It carries the labels of the local spawner's containers (role, owner, job), so that
a daemon that starts again removes what a crashed run of it left (cleanup_leftovers). Each job
running at once holds a block of ports of its own (port_block): replica N of the job in block B
listens on cloud_port + B x MAX_EXECUTORS + N, so parallel jobs never touch each other.

Without a compose file, the spawner only connects to workers already running (a stack deployed
by hand), replica N on cloud_port + N. Either way the executors connect to every host of
cloud_hosts (the worker adds its task slot to its port).

Replicas are hardened like the local spawner's containers: user 10001:10001, no capabilities,
a read-only root filesystem with a /tmp tmpfs, the memory limit, and only WORKER_FILES as
Docker secrets owned by that user, mode 0400. (Swarm services cannot ask for no-new-privileges
before API 1.46; the image's entrypoint sets it itself, with setpriv.)
"""
import hashlib
import os
import re
import secrets
import threading
import time

import zmq

from ..executor import Executor, wait_until_answering
from ...wire import MAX_EXECUTORS
from ...wire.keys import WORKER_FILES
from .base import ExecutorSpawner, SpawnError
from .local import (JOB, LABEL, OWNER, TMP_BYTES, WORKER_GID, WORKER_UID, docker_client, owner_of,
                    worker_memory_bytes)

READY_SECONDS = 120
RETIRE_SECONDS = 30          # for a retired service's tasks to stop, at most
KEYS_IN_REPLICA = "/run/secrets/summa-keys"
SECRET_MODE = 0o400
STOP_GRACE_NS = 5 * 10**9    # SIGTERM, then this long, then SIGKILL (the worker exits well within)
_STOPPED = {"complete", "shutdown", "failed", "rejected", "orphaned", "remove"}
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def substitute(text, environ):
    """Compose-style ${NAME}, ${NAME:-default} and ${NAME-default}."""
    return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), text)


def _loopback(host):
    return host == "localhost" or host.startswith("127.")


_blocks_lock = threading.Lock()
_blocks = {}                 # owner digest -> the port blocks its running jobs hold


def _take_block(owner):
    with _blocks_lock:
        held = _blocks.setdefault(owner, set())
        block = min(set(range(len(held) + 1)) - held)
        held.add(block)
        return block


def _give_block(owner, block):
    with _blocks_lock:
        _blocks.get(owner, set()).discard(block)


def retire(service, seconds=RETIRE_SECONDS):
    """Scale `service` to 0, wait (at most `seconds`) until none of its tasks runs anywhere in
    the Swarm, so that its ports are free, then remove it. Gone already is fine."""
    import docker
    try:
        service.reload()
        service.scale(0)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(task["Status"]["State"] in _STOPPED for task in service.tasks()):
                break
            time.sleep(0.1)
        service.remove()
    except docker.errors.NotFound:
        pass


def leftover_services(client, owner):
    """Services of this daemon (our labels, this owner); [] when this engine is no Swarm manager."""
    import docker
    try:
        found = client.services.list(filters={"label": [f"{LABEL}=worker", f"{OWNER}={owner}"]})
    except docker.errors.APIError:           # 503: not a Swarm manager
        return []
    return [s for s in found if s.attrs["Spec"].get("Labels", {}).get(OWNER) == owner]


class CloudSpawner(ExecutorSpawner):
    job_id = None            # the daemon's runner sets it before spawn_executors

    def __init__(self, config, cancel_endpoint=None, compose_file=None, hosts=None, port=None,
                 stack=None, service=None, image=None):
        super().__init__(config, cancel_endpoint)
        self.compose_file = config.cloud_compose_file if compose_file is None else compose_file
        self.hosts = hosts or config.cloud_hosts
        self.base_port = port or config.cloud_port
        self.port = self.base_port
        self.stack = stack or config.cloud_stack
        self.service_key = service or config.cloud_service
        self.image = image or config.worker_image
        self.owner = owner_of(config)
        self.context = zmq.Context.instance()
        self.service, self.block, self.name = None, None, None

    # ---- the service ------------------------------------------------------------------------

    def _definition(self):
        import yaml
        try:
            with open(self.compose_file, encoding="utf-8") as handle:
                document = yaml.safe_load(handle)
            return document["services"][self.service_key]
        except OSError as error:
            raise SpawnError(f"{self.compose_file}: cannot read: {error.strerror}") from None
        except (yaml.YAMLError, KeyError, TypeError):
            raise SpawnError(f"{self.compose_file}: no service {self.service_key!r} in a "
                             f"valid compose file") from None

    def _environment(self, definition):
        bind_host = "127.0.0.1" if all(_loopback(h) for h in self.hosts) else "0.0.0.0"
        environ = {**os.environ, "SUMMA_WORKER_HOST": bind_host, "SUMMA_WORKER_PORT": str(self.port),
                   "SUMMA_WORKER_CANCEL": self.cancel_endpoint or "",
                   "SUMMA_WORKER_THREADS": str(self.worker_threads),
                   "SUMMA_WORKER_INSECURE": "" if self.config.keys_dir else "1",
                   "SUMMA_WORKER_KEYS": KEYS_IN_REPLICA if self.config.keys_dir else ""}
        raw = definition.get("environment") or {}
        pairs = raw.items() if isinstance(raw, dict) else (item.split("=", 1) for item in raw)
        env = [f"{key}={substitute(str(value), environ)}" for key, value in pairs]
        if os.environ.get("SUMMA_KERNEL"):    # the daemon's kernel choice reaches its workers
            env.append(f"SUMMA_KERNEL={os.environ['SUMMA_KERNEL']}")
        return env

    def _take_ports(self):
        """This job's block of ports: the lowest one no other running job of this daemon holds."""
        self.block = _take_block(self.owner)
        self.port = self.base_port + self.block * MAX_EXECUTORS
        if self.port + MAX_EXECUTORS > 65535:
            raise SpawnError(f"no port block left for another job: {self.block} jobs hold "
                             f"cloud_port {self.base_port} + {MAX_EXECUTORS} each")

    def _deploy(self, count):
        import docker
        from docker.types import Mount, Resources, RestartPolicy, ServiceMode
        definition = self._definition()
        deploy = definition.get("deploy") or {}
        restart = deploy.get("restart_policy") or {}
        placement = deploy.get("placement") or {}
        job = self.job_id or secrets.token_hex(4)
        self.name = f"{self.stack}_{self.service_key}-{job}"
        if len(self.name) > 63:
            raise SpawnError(f"service name {self.name!r} is longer than Swarm's 63 characters: "
                             f"shorten cloud_stack or cloud_service")
        labels = {LABEL: "worker", OWNER: self.owner, JOB: job}
        memory = worker_memory_bytes(self.config)
        options = dict(
            image=self.image, env=self._environment(definition),
            mode=ServiceMode("replicated", replicas=count), networks=["host"],
            restart_policy=RestartPolicy(condition=restart.get("condition", "on-failure"),
                                         max_attempts=restart.get("max_attempts", 0)),
            constraints=placement.get("constraints") or [],
            labels={"com.docker.stack.namespace": self.stack, **labels}, container_labels=labels,
            user=f"{WORKER_UID}:{WORKER_GID}", cap_drop=["ALL"], read_only=True,
            mounts=[Mount("/tmp", None, type="tmpfs", tmpfs_size=TMP_BYTES)],
            stop_grace_period=STOP_GRACE_NS)
        if memory:
            options["resources"] = Resources(mem_limit=memory)
        if placement.get("max_replicas_per_node"):
            options["maxreplicas"] = placement["max_replicas_per_node"]
        client = docker_client()
        if self.config.keys_dir:
            options["secrets"] = self._key_secrets(client)
        try:
            self.service = client.services.create(name=self.name, **options)
        except docker.errors.DockerException as error:
            raise SpawnError(f"cannot deploy service {self.name}: {str(error).splitlines()[0]}") from None
        self._wait_running(count)

    def _key_secrets(self, client):
        """WORKER_FILES (the directory the daemon wrote for its workers) as Docker secrets,
        under /run/secrets/summa-keys in every replica, owned by the replica's user, mode 0400.

        Secrets are named after their content, so a later job reuses them."""
        from docker.types import SecretReference
        directory = self.config.worker_keys_dir()
        references = []
        for target in WORKER_FILES:
            try:
                with open(os.path.join(directory, target), "rb") as handle:
                    data = handle.read()
            except OSError as error:
                raise SpawnError(f"{os.path.join(directory, target)}: cannot read the workers' "
                                 f"keys ({error.strerror})") from None
            name = f"summa-key-{hashlib.sha256(data).hexdigest()[:24]}"
            found = [s for s in client.secrets.list(filters={"name": name}) if s.name == name]
            secret = found[0] if found else client.secrets.create(name=name, data=data,
                                                                  labels={LABEL: "key"})
            references.append(SecretReference(secret.id, name, filename=f"summa-keys/{target}",
                                              uid=str(WORKER_UID), gid=str(WORKER_GID),
                                              mode=SECRET_MODE))
        return references

    def _wait_running(self, count):
        deadline, tasks = time.monotonic() + READY_SECONDS, []
        while time.monotonic() < deadline:
            tasks = self.service.tasks()
            if sum(t["Status"]["State"] == "running" and t["DesiredState"] == "running"
                   for t in tasks) >= count:
                return
            time.sleep(0.2)
        errors = [t["Status"].get("Err") for t in tasks if t["Status"].get("Err")]
        raise SpawnError(f"service {self.name}: {count} replicas not running within {READY_SECONDS} s"
                         + (f" (last task error: {errors[-1]})" if errors else ""))

    # ---- executors --------------------------------------------------------------------------

    def spawn_executors(self, count):
        if self.compose_file and self.service is None:     # deployed once per job
            if self.block is None:
                self._take_ports()
            self._deploy(count)
        candidates = [f"tcp://{host}:{self.port + slot}" for slot in range(1, count + 1)
                      for host in self.hosts]
        ready, deadline = [], time.monotonic() + READY_SECONDS
        while len(ready) < count and time.monotonic() < deadline:
            for endpoint in candidates:
                if endpoint not in ready and wait_until_answering(endpoint, self.context, 0.3,
                                                                  curve=self.config.worker_curve()):
                    ready.append(endpoint)
        if len(ready) < count:
            raise SpawnError(f"only {len(ready)} of {count} replicas answer on {', '.join(candidates)}")
        return [Executor(endpoint, f"replica {endpoint}") for endpoint in ready[:count]]

    def spawn_executor(self):
        return self.spawn_executors(1)[0]

    def terminate_executors(self):
        """Retire the job's service (with a compose file); replicas it did not start stay."""
        if self.service is not None:
            retire(self.service)
            self.service = None
        if self.block is not None:          # its ports are free again: no task of it runs
            _give_block(self.owner, self.block)
            self.block = None

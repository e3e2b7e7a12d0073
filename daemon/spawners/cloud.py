"""CloudSpawner: workers as replicas of a Docker Swarm service; Swarm does the scheduling.

With a compose file, it creates (or updates) the service STACK_SERVICE from the file's
service definition through the Docker SDK, as `docker stack deploy` would, scales it to the
job's executor count, waits for the replicas to run, and removes the service afterwards if it
created it. Without one, it only connects to workers already running (a stack deployed by
hand). Either way the executors connect to the replica endpoints: every host of cloud_hosts,
port cloud_port + N for replica N (the worker adds its task slot to its port).
"""
import glob
import os
import re
import time

import zmq

from ..executor import Executor, wait_until_answering
from .base import ExecutorSpawner, SpawnError
from .local import LABEL, OWNER, docker_client, owner_of

READY_SECONDS = 120
KEYS_IN_REPLICA = "/run/secrets/summa-keys"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def substitute(text, environ):
    """Compose-style ${NAME}, ${NAME:-default} and ${NAME-default}."""
    return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), text)


def _loopback(host):
    return host == "localhost" or host.startswith("127.")


class CloudSpawner(ExecutorSpawner):
    def __init__(self, config, cancel_endpoint=None, compose_file=None, hosts=None, port=None,
                 stack=None, service=None, image=None):
        super().__init__(config, cancel_endpoint)
        self.compose_file = config.cloud_compose_file if compose_file is None else compose_file
        self.hosts = hosts or config.cloud_hosts
        self.port = port or config.cloud_port
        self.name = f"{stack or config.cloud_stack}_{service or config.cloud_service}"
        self.service_key = service or config.cloud_service
        self.image = image or config.worker_image
        self.context = zmq.Context.instance()
        self.service, self.created = None, False

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

    def _deploy(self, count):
        import docker
        from docker.types import RestartPolicy, ServiceMode
        definition = self._definition()
        deploy = definition.get("deploy") or {}
        restart = deploy.get("restart_policy") or {}
        placement = deploy.get("placement") or {}
        options = dict(
            image=self.image, env=self._environment(definition),
            mode=ServiceMode("replicated", replicas=count), networks=["host"],
            restart_policy=RestartPolicy(condition=restart.get("condition", "on-failure"),
                                         max_attempts=restart.get("max_attempts", 0)),
            constraints=placement.get("constraints") or [],
            labels={"com.docker.stack.namespace": self.name.split("_")[0], LABEL: "worker",
                    OWNER: owner_of(self.config)})
        if placement.get("max_replicas_per_node"):
            options["maxreplicas"] = placement["max_replicas_per_node"]
        client = docker_client()
        if self.config.keys_dir:
            options["secrets"] = self._key_secrets(client)
        existing = [s for s in client.services.list(filters={"name": self.name}) if s.name == self.name]
        try:
            if existing:
                self.service = existing[0]
                self.service.update(**options)
            else:
                self.service = client.services.create(name=self.name, **options)
                self.created = True
        except docker.errors.DockerException as error:
            raise SpawnError(f"cannot deploy service {self.name}: {str(error).splitlines()[0]}") from None
        self._wait_running(count)

    def _key_secrets(self, client):
        """The workers' keys as Docker secrets (as docker-compose.secrets.yml lays them out).

        Secrets are named after their content, so a later job reuses them; Swarm mounts them
        read-only under /run/secrets/summa-keys in every replica."""
        import hashlib
        from docker.types import SecretReference
        files = {"worker.key_secret": "worker.key_secret", "daemon.key": "daemon.key"}
        for path in sorted(glob.glob(os.path.join(self.config.keys_dir, "authorized", "*.key"))):
            files[f"authorized/{os.path.basename(path)}"] = os.path.relpath(path, self.config.keys_dir)
        references = []
        for target, relative in files.items():
            with open(os.path.join(self.config.keys_dir, relative), "rb") as handle:
                data = handle.read()
            name = f"summa-key-{hashlib.sha256(data).hexdigest()[:24]}"
            found = client.secrets.list(filters={"name": name})
            secret = found[0] if found else client.secrets.create(name=name, data=data,
                                                                  labels={LABEL: "key"})
            references.append(SecretReference(secret.id, name, filename=f"summa-keys/{target}"))
        return references

    def _wait_running(self, count):
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            tasks = self.service.tasks(filters={"desired-state": "running"})
            if sum(t["Status"]["State"] == "running" for t in tasks) >= count:
                return
            time.sleep(0.2)
        raise SpawnError(f"service {self.name}: {count} replicas not running within {READY_SECONDS} s")

    # ---- executors --------------------------------------------------------------------------

    def spawn_executors(self, count):
        if self.compose_file:
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
        """Remove the service if this spawner created it; replicas it did not start stay."""
        if self.created and self.service is not None:
            import docker
            try:
                self.service.remove()
            except docker.errors.NotFound:
                pass
            self.created, self.service = False, None

"""The daemon's settings: defaults, then the TOML file, then command-line flags."""
import os
from dataclasses import dataclass, field, fields

from ..mst.shape import MAX_SET_UNIT_DEPTH as MAX_UNIT_DEPTH
from ..wire import MAX_EXECUTORS

try:
    import tomllib
except ImportError:            # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass
class DaemonConfig:
    control: str = "tcp://127.0.0.1:5555"   # ROUTER socket for summa-submit clients
    cancel: str = "tcp://127.0.0.1:*"       # PUB socket broadcasting cancellations
    cancel_public: str = ""                 # what workers connect to, if not `cancel`'s address
    data_dir: str = "/var/lib/summa-aggregation"
    input_dirs: list = field(default_factory=lambda: ["inputs"])   # the only places CSVs are read from (relative: under data_dir)
    max_upload_mb: int = 16384              # what all uploads may hold on disk at once (0: no uploads)
    max_uploads: int = 8                    # uploads in progress (begun, not finished) at once
    upload_timeout: float = 300.0           # seconds an upload may wait for its next chunk, or for its SUBMIT
    max_parallel_jobs: int = 1
    heartbeat_interval: float = 1.0         # seconds between PINGs to a busy worker
    heartbeat_liveness: int = 3             # missed intervals before a worker counts as dead
    max_retries: int = 3                    # attempts of one batch elsewhere before the job fails
    default_executors: int = 2
    default_spawner: str = "mock"
    worker_threads: int = 1
    log_level: str = "INFO"
    worker_image: str = "summa-aggregation"   # image of Docker workers (local and cloud)
    worker_memory_mb: int = 0               # memory limit of each Docker worker (0: the README's rule; -1: none)
    cloud_compose_file: str = ""            # the stack file the cloud spawner deploys; "": none
    cloud_stack: str = "summa_aggregation"  # stack name: a job's service is STACK_SERVICE-JOB
    cloud_service: str = "mini-tree"        # the worker service in the compose file
    cloud_hosts: list = field(default_factory=lambda: ["127.0.0.1"])   # where replicas run
    cloud_port: int = 4000                  # replica N on cloud_port + N (+ 1024 x the job's port block)
    verify_leaves: int = 8                  # leaves of each returned mini-tree checked (0: none)
    verify_full: bool = False               # rebuild every mini-tree here and compare it all
    resume: bool = True                     # an interrupted job resumes at the next start (False: it fails)
    keep_results: int = 0                   # finished jobs kept, the newest (0: no limit); older ones are deleted
    keep_days: float = 0.0                  # finished jobs are deleted this many days after they finished (0: never)
    unit_size: int = 0                      # entries per work unit, a power of two (0: the README's rule)
    sort_memory_mb: int = 256               # a sorted job's entries sorted in memory at once; beyond it, runs on disk
    proof_cache_mb: int = 128               # verified node cache of each result proofs are served from
    max_memory_mb: int = 0                  # heap budget; over it, control clients are dropped (0: 3/4 of RAM)
    keys_dir: str = ""                      # CURVE key directory (summa-keys)
    insecure: bool = False                  # plaintext sockets; only when asked for, with a warning

    def keys(self):
        """The KeyDir of keys_dir, or None in (explicitly configured) plaintext mode."""
        from ..wire.keys import KeyDir
        return KeyDir(self.keys_dir) if self.keys_dir else None

    def worker_keys_dir(self):
        """What workers on this host get instead of keys_dir: their pair and the daemon's
        public key only (wire.keys.write_worker_keys; the daemon writes it at start)."""
        return os.path.join(self.data_dir, "worker-keys") if self.keys_dir else ""

    def input_paths(self):
        """input_dirs as absolute paths, a relative one under data_dir (as written: the daemon
        resolves their links when it starts)."""
        return [os.path.abspath(os.path.join(self.data_dir, os.path.expanduser(d)))
                for d in self.input_dirs]

    def worker_curve(self):
        """How this daemon's sockets connect to workers: its own pair, the workers' public key."""
        keys = self.keys()
        return keys.curve("daemon").for_server(keys.public("worker")) if keys else None

    def check(self, where="configuration"):
        from .spawners import available   # spawners import nothing from here
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"{where}: log_level must be DEBUG, INFO, WARNING, ERROR or "
                              f"CRITICAL, got {self.log_level!r}")
        if self.default_spawner not in available():
            raise ConfigError(f"{where}: default_spawner {self.default_spawner!r} is not available "
                              f"here (available: {', '.join(available())})")
        if self.default_executors > MAX_EXECUTORS:
            raise ConfigError(f"{where}: default_executors must be at most {MAX_EXECUTORS}")
        for name, low in (("max_parallel_jobs", 1), ("heartbeat_liveness", 1), ("max_retries", 0),
                          ("verify_leaves", 0), ("max_memory_mb", 0), ("proof_cache_mb", 0),
                          ("default_executors", 1), ("worker_threads", 1), ("keep_results", 0),
                          ("sort_memory_mb", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{where}: {name} must be at least {low}")
        if not self.keys_dir and not self.insecure:
            raise ConfigError(f"{where}: no keys_dir: make keys with `summa-keys DIR` and set "
                              f"keys_dir (or set insecure = true to run in plaintext)")
        if not 0 < self.cloud_port < 65536 or not self.cloud_hosts:
            raise ConfigError(f"{where}: cloud_port must be a port and cloud_hosts not empty")
        if self.cloud_compose_file and self.cloud_port + self.max_parallel_jobs * MAX_EXECUTORS > 65535:
            raise ConfigError(f"{where}: cloud_port must leave a block of {MAX_EXECUTORS} ports for each of "
                              f"max_parallel_jobs: at most {65535 - self.max_parallel_jobs * MAX_EXECUTORS}")
        if self.worker_memory_mb < -1:
            raise ConfigError(f"{where}: worker_memory_mb must be -1 (no limit), 0 (the default rule) or MiB")
        if not 0 <= self.keep_days < float("inf"):
            raise ConfigError(f"{where}: keep_days must be 0 (keep forever) or a number of days")
        if self.heartbeat_interval <= 0:
            raise ConfigError(f"{where}: heartbeat_interval must be positive")
        if self.upload_timeout <= 0:
            raise ConfigError(f"{where}: upload_timeout must be positive")
        if self.max_upload_mb < 0 or self.max_uploads < 1:
            raise ConfigError(f"{where}: max_upload_mb must be at least 0 and max_uploads at least 1")
        if not isinstance(self.input_dirs, list) or not all(
                isinstance(d, str) and d and "\0" not in d for d in self.input_dirs):
            raise ConfigError(f"{where}: input_dirs must be a list of directories")
        if self.unit_size and (self.unit_size < 0 or self.unit_size & (self.unit_size - 1)
                               or self.unit_size > 1 << MAX_UNIT_DEPTH):
            raise ConfigError(f"{where}: unit_size must be 0 or a power of two up to 2^{MAX_UNIT_DEPTH}")
        return self


def load(path=None, **overrides):
    """Defaults <- the TOML file at `path` <- overrides that are not None."""
    values = {}
    if path:
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
    known = {f.name: f.type for f in fields(DaemonConfig)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(known)})")
        kind = known[key]
        if (isinstance(value, bool) != (kind is bool)) \
                or not isinstance(value, (int, float) if kind is float else kind) \
                or (kind is list and not all(isinstance(item, str) and item for item in value)):
            raise ConfigError(f"{path}: {key} must be a {'list of strings' if kind is list else kind.__name__}, "
                              f"got {value!r}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = DaemonConfig(**values)
    config.data_dir = os.path.abspath(os.path.expanduser(config.data_dir))
    return config.check(path or "configuration")

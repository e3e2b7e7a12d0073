"""The ExecutorSpawner interface; user code can plug in its own subclass."""
import abc


class SpawnError(RuntimeError):
    """Workers could not be started; the message says why in one line."""


class ExecutorSpawner(abc.ABC):
    """Creates workers and hands out one Executor per worker.

    The daemon makes one spawner per job, calls spawn_executors(n) once, replace() for each
    worker that dies, and terminate_executors() exactly once when the job ends, however it ends.
    """

    def __init__(self, config, cancel_endpoint=None):
        self.config, self.cancel_endpoint = config, cancel_endpoint
        self.worker_threads = config.worker_threads

    @abc.abstractmethod
    def spawn_executor(self):
        """Start (or find) one worker; return its Executor."""

    @abc.abstractmethod
    def terminate_executors(self):
        """Stop every worker this spawner started. Must be safe to call more than once."""

    def spawn_executors(self, count):
        return [self.spawn_executor() for _ in range(count)]

    def replace(self, executor, now):
        """An executor to take over from a dead one, or None when this spawner cannot.

        The default keeps the same worker address and reconnects after a back-off: right
        for workers this spawner does not own. Spawners that own workers start a new one."""
        return executor.successor(now)

    def quarantine(self, executor):
        """A worker returned a wrong mini-tree: stop it if it is ours, and return a fresh
        executor if this spawner can start a new worker, else None. Its address is never
        reconnected: whatever answers there cannot be trusted."""
        return None

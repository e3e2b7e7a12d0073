"""The runner thread of one job: its steps in order, each done by a part with one job.

    loader.py    reads and checks the CSVs (its own thread), while the workers start
    spawners/    start the job's workers, and replace the ones that die
    dispatch.py  distribution, retries and heartbeats (a loop that never runs heavy work)
    checker.py   checks every returned mini-tree (its own thread)
    results.py   joins the mini-trees and writes the result directory atomically

Whatever happens, the job's workers are terminated before the job counts as finished; a job
that did not end done has its cancellation published, so every worker stops work on it.
"""
import logging
import threading
import time

import zmq

from .. import wire
from .dispatch import Dispatcher
from .job import CANCELLED, DONE, FAILED, LOADING, JobEnded
from .loader import Loader
from .results import write_result
from .spawners import SPAWNERS, SpawnError

log = logging.getLogger("summa.daemon")


class JobRunner(threading.Thread):
    def __init__(self, job, config, context, events_address, cancel_endpoint, jobs_dir, results_dir,
                 spawner_options=None):
        super().__init__(name=f"job-{job.id}", daemon=True)
        self.job, self.config, self.context = job, config, context
        self.events_address, self.cancel_endpoint = events_address, cancel_endpoint
        self.jobs_dir, self.results_dir = jobs_dir, results_dir
        self.spawner_options = spawner_options or {}
        self.spawner, self.dispatcher = None, None

    def run(self):
        job = self.job
        # the daemon's loop owns the PUB socket; this asks it to publish our cancellation
        self.events = wire.new_socket(self.context, zmq.PUSH)
        self.events.connect(self.events_address)
        stop_loading = threading.Event()
        outcome = (FAILED, "internal error: the job ended without an outcome", None)
        try:
            job.update(self.jobs_dir, state=LOADING, started=time.time())
            loader = Loader(job.spec, stop_loading)
            loader.start()
            executors = self._spawn(self._executor_count())     # while the loader reads
            self.dispatcher = Dispatcher(job, self.config, self.context, self.spawner, executors,
                                         loader, self.jobs_dir)
            batches, depth, nodes = self.dispatcher.run()
            outcome = (DONE, None, write_result(job, batches, depth, nodes, self.results_dir,
                                                before_saving=self._check_cancel))
        except JobEnded as ended:
            outcome = (ended.state, ended.reason, None)
        except Exception as error:   # a bug: the job fails, the daemon keeps serving
            log.exception("job %s failed unexpectedly", job.id)
            outcome = (FAILED, f"internal error: {type(error).__name__}: {error}", None)
        finally:
            if outcome[0] != DONE:
                self.events.send(job.id.encode())   # every worker of the job stops work on it
            stop_loading.set()
            self._release()
            # only now, with its workers gone, does the job count as finished
            state, reason, root = outcome
            log.info("job %s %s%s", job.id, state, f": {reason}" if reason else "")
            job.update(self.jobs_dir, state=state, root=root, error=reason if state == FAILED else None)

    def _check_cancel(self):
        if self.job.cancel_requested.is_set():
            raise JobEnded(CANCELLED, "cancelled")

    def _executor_count(self):
        spec = self.job.spec
        return spec.executors if spec.batch_size else min(spec.executors, len(spec.csvs))

    def _spawn(self, count):
        self.spawner = SPAWNERS[self.job.spec.spawner](self.config, self.cancel_endpoint,
                                                       **self.spawner_options)
        try:
            return self.spawner.spawn_executors(count)
        except (SpawnError, OSError) as error:
            raise JobEnded(FAILED, f"could not start workers: {error}") from None

    def _release(self):
        self.events.close(linger=1000)   # let the cancellation request reach the loop
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.spawner is not None:
            try:
                self.spawner.terminate_executors()
            except Exception:
                log.exception("job %s: terminating its workers failed", self.job.id)

"""The runner thread of one job: its steps in order, each done by a part with one job.

    loader.py    reads and checks the CSVs, stores the entries, cuts work units (its own thread)
    spawners/    start the job's workers, and replace the ones that die
    dispatch.py  distribution, retries and heartbeats (a loop that never runs heavy work)
    checker.py   checks and stores every returned subtree (its own thread)
    results.py   joins the unit roots and publishes the result directory atomically

Whatever happens, the job's workers are terminated before the job counts as finished; a job
that did not end done has its cancellation published, so every worker stops work on it.
"""
import logging
import os
import threading
import time

import zmq

from .. import wire
from .dispatch import Dispatcher
from .job import CANCELLED, DONE, FAILED, LOADING, RUNNING, JobEnded
from .loader import Loader
from ..mst.store_v1 import StoreError
from ..mst.store_writer import ResultWriter
from .results import write_result
from .spawners import SPAWNERS, SpawnError

log = logging.getLogger("summa.daemon")


class JobRunner(threading.Thread):
    def __init__(self, job, config, context, events_address, cancel_endpoint, jobs_dir, results_dir,
                 spawner_options=None, inputs=None):
        """inputs: the daemon's InputPolicy, which opens the CSVs (None: any regular file)."""
        super().__init__(name=f"job-{job.id}", daemon=True)
        self.inputs = inputs
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
        writer = loader = None
        try:
            resumed = job.attempt > 1
            job.update(self.jobs_dir, state=LOADING, started=job.record.get("started") or time.time())
            writer = self._writer(resumed)
            loader = Loader(job.spec, writer, stop_loading, self.config.unit_size, self._opener(),
                            pinned=job.record.get("pins") if resumed else None,
                            sort_memory_bytes=self.config.sort_memory_mb << 20)
            if loader.open_error:        # before any worker starts
                raise JobEnded(FAILED, loader.open_error)
            # what a later attempt must find: where the units are stored, and the inputs as
            # they are now (an attempt that resumes keeps the pins it was checked against)
            job.update(self.jobs_dir, partial=os.path.basename(writer.directory),
                       progress={"entries_estimate": loader.estimate},
                       **({} if resumed else {"pins": loader.pins}))
            if resumed:
                # workers still busy with the last attempt stop
                self.events.send(job.wire_id_of(job.attempt - 1).encode())
            loader.start()
            executors = self._spawn(self._executor_count(loader))     # while the loader reads
            self.dispatcher = Dispatcher(job, self.config, self.context, self.spawner, executors,
                                         loader, writer, self.jobs_dir)
            shape, roots = self.dispatcher.run()
            outcome = (DONE, None, write_result(job, shape, roots, writer, loader.currencies,
                                                before_saving=self._check_cancel))
        except JobEnded as ended:
            outcome = (ended.state, ended.reason, None)
        except Exception as error:   # a bug: the job fails, the daemon keeps serving
            log.exception("job %s failed unexpectedly", job.id)
            outcome = (FAILED, f"internal error: {type(error).__name__}: {error}", None)
        finally:
            if outcome[0] != DONE:
                self.events.send(job.wire_id.encode())   # every worker of the job stops work on it
            stop_loading.set()
            self._release()
            if loader is not None:
                if loader.ident is not None:
                    loader.join()      # it may be writing: the files go only once it stopped
                loader.close()
            if job.interrupted and outcome[0] == CANCELLED:   # a daemon shutdown: resume later
                if writer is not None:
                    writer.close()     # its journaled units stay for the next attempt
                log.info("job %s interrupted: it resumes at the next start", job.id)
                job.update(self.jobs_dir, state=RUNNING, error=None)
                return
            if writer is not None and outcome[0] != DONE:
                writer.abort()         # a failed job leaves nothing that looks like a result
            # only now, with its workers gone, does the job count as finished
            state, reason, root = outcome
            log.info("job %s %s%s", job.id, state, f": {reason}" if reason else "")
            job.update(self.jobs_dir, state=state, root=root, error=reason if state == FAILED else None)

    def _opener(self):
        """How the loader opens a CSV: through the input policy, which also lets a job read
        its own uploads (they are the job's csvs, under the data directory)."""
        if self.inputs is None:
            return None
        own = tuple(self.job.spec.csvs) if self.job.record.get("uploads") else ()
        return lambda path: self.inputs.open(path, own)

    def _check_cancel(self):
        if self.job.cancel_requested.is_set():
            raise JobEnded(CANCELLED, "cancelled")

    def _writer(self, resumed):
        target = os.path.join(self.results_dir, self.job.id)
        partial = self.job.record.get("partial") if resumed else None
        try:
            return ResultWriter(target, self.job.spec.n_bytes,
                                resume=os.path.join(self.results_dir, partial) if partial else None,
                                username_encoding=self.job.spec.username_encoding)
        except (OSError, StoreError) as error:
            raise JobEnded(FAILED, f"cannot write the result to {target}: "
                           f"{getattr(error, 'strerror', None) or error}") from None

    def _executor_count(self, loader):
        """No more workers than units (a unit is at least 2^MIN_UNIT_DEPTH entries)."""
        spec = self.job.spec
        estimate = loader.estimate or 1
        units = max(-(-estimate // (1 << loader.unit_depth)), len(spec.csvs) if not spec.batch_size else 1)
        return max(1, min(spec.executors, units))

    def _spawn(self, count):
        self.spawner = SPAWNERS[self.job.spec.spawner](self.config, self.cancel_endpoint,
                                                       **self.spawner_options)
        self.spawner.job_id = self.job.id     # what the Docker spawners name and label per job
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

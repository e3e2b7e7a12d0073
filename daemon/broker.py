"""The orchestrator daemon: control socket, job queue, cancel PUB, results.

One thread (serve()) owns the control ROUTER, the cancel PUB and an inproc PULL on which job
runner threads ask for cancellations to be published. Each running job has its own runner
thread (runner.py) with its own executor sockets. PROOF requests go, as they came, to the
proof server's thread (proofs.py), which answers them in batches; this loop forwards its
answers. Job records live in DATA_DIR/jobs/ and results in DATA_DIR/results/; both survive
restarts, and a job that was not finished when the daemon stopped resumes when it comes back
(resume; runner.py reuses its journaled units), or is marked failed (interrupted) without. A
SUBMIT's paths must be inside input_dirs (inputs.py); CSVs sent through this socket (UPLOAD,
CHUNK, FINISH) are written by the upload writer's thread, which answers them through this loop
too (uploads.py), into DATA_DIR/uploads/, until their job ends. A memory guard (wire/memory.py)
watches the heap; over max_memory_mb, the
control socket is closed, freeing what its clients made libzmq hold, and bound afresh.
Only unfinished jobs are held in memory; finished ones are an index entry each, their records
read from disk when asked for (jobs_table.py). DELETE and retention (keep_results, keep_days)
remove finished jobs, crash-safe (retention.py).
"""
import collections
import fcntl
import glob
import json
import logging
import os
import secrets
import shutil
import threading
import time

import zmq

from .. import wire
from ..wire import Code, ProtocolError
from ..wire.keys import SOCKET_ROLES, KeysError, start_authenticator, write_worker_keys
from ..wire.memory import MemoryGuard, default_budget, over_limit_message, rebind
from . import retention, spawners
from .config import ConfigError
from .inputs import InputPolicy
from .job import CANCELLED, DONE, FAILED, FINISHED, QUEUED, Job, check_submit
from .jobs_table import JobTable
from .proofs import ProofServer, proof_cache_bytes, recv_frames, send_frames
from .runner import JobRunner
from .uploads import Uploads

log = logging.getLogger("summa.daemon")

POLL_MS = 100
DRAIN = 64                             # control requests read at once before the loop goes on
PROOFS_WAITING = 100_000               # PROOF requests queued for the proof server, at most
READY_SECONDS = 10                     # for the proof server's thread to connect its sockets
CONTROL_MAX_MESSAGE_BYTES = 16 << 20   # requests are small: paths, ids, names
SUBSCRIPTION_MAX_BYTES = 512           # b"\x01cancel.", and the CURVE handshake (276 bytes)
SUBSCRIPTIONS_QUEUED = 64              # per connection, until the PUB next reads them
RETENTION_SECONDS = 3600               # keep_days is checked this often, besides when jobs end
RETENTION_BATCH = 1000                 # jobs retention deletes at once (then the loop goes on)


class Daemon:
    def __init__(self, config, context=None, spawner_options=None, input_files=()):
        """input_files: single files SUBMIT may name besides what input_dirs holds (the ones
        summa-aggregate was given)."""
        self.config = config.check()
        self.context = context or zmq.Context.instance()
        self.spawner_options = spawner_options or {}
        self.jobs_dir = os.path.join(config.data_dir, "jobs")
        self.results_dir = os.path.join(config.data_dir, "results")
        os.makedirs(self.jobs_dir, exist_ok=True)
        os.makedirs(self.results_dir, exist_ok=True)
        self._lock = self._lock_data_dir(config.data_dir)
        try:
            self.inputs = InputPolicy.of_config(config, input_files)
        except (ValueError, OSError) as error:
            raise ConfigError(str(error) if isinstance(error, ValueError) else
                              f"input_dirs: {error.filename}: {error.strerror}") from None
        self.uploads = Uploads(self.context, config)
        self.uploads.clear()                   # whatever a crash left half-written
        spawners.cleanup_leftovers(config)     # containers of an earlier run that crashed
        self.authenticator, self.curve = self._start_curve(config)
        self.control = self._control_socket()
        self.control.bind(config.control)
        self.control_endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.max_memory_bytes = (config.max_memory_mb << 20) or default_budget()
        self.guard = MemoryGuard(self.context, self.max_memory_bytes, "summa-daemon")
        self.memory_alarm = self.guard.subscribe()
        self.pub = self._cancel_socket()
        self.pub.bind(config.cancel)
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.cancel_endpoint = config.cancel_public or self.pub_endpoint.replace("0.0.0.0", "127.0.0.1")
        self._events_address = f"inproc://summa-daemon-events-{id(self)}"
        self.events = wire.new_socket(self.context, zmq.PULL)
        self.events.bind(self._events_address)
        self._proofs_address = f"inproc://summa-daemon-proofs-{id(self)}"
        self._answers_address = f"inproc://summa-daemon-answers-{id(self)}"
        self.proof_requests = self.context.socket(zmq.PUSH)
        self.proof_requests.linger = 0
        self.proof_requests.sndhwm = PROOFS_WAITING
        self.proof_requests.bind(self._proofs_address)
        self.proof_answers = self.context.socket(zmq.PULL)
        self.proof_answers.linger = 0
        self.proof_answers.rcvhwm = 0
        self.proof_answers.bind(self._answers_address)
        self.proof_server = ProofServer(self.context, self.results_dir, self._proofs_address,
                                        self._answers_address, self.on_proof,
                                        cache_bytes=proof_cache_bytes(config, self.max_memory_bytes))
        self.jobs = JobTable(self.jobs_dir)
        self.queue = collections.deque()
        self.runners = {}
        self.stopping = threading.Event()
        self.trash = retention.Trash()
        trashes, stuck = retention.finish_deletions(self.jobs_dir, self.results_dir)
        self._recover()
        for job_id in stuck:                  # being deleted: never listed again
            self.jobs.forget(job_id)
        for target in trashes:
            self.trash.put(target)
        self.retention_seconds = RETENTION_SECONDS
        self._retain_at = 0.0                 # retention runs at the loop's first turn
        if self.authenticator is None:   # said once the daemon is up, not before a start error
            log.warning("insecure: the daemon's sockets are neither encrypted nor authenticated "
                        "(plaintext, as configured; summa-keys DIR makes keys)")

    # ---- start-up ---------------------------------------------------------------------------

    def _start_curve(self, config):
        """CURVE server keys for the control and cancel sockets, each admitting one role, and
        the key directory this host's workers get."""
        try:
            keys = config.keys()
            if keys is None:
                return None, None
            curve = keys.curve("daemon")
            keys.public("worker")                     # needed to reach workers: fail early
            write_worker_keys(config.keys_dir, config.worker_keys_dir())
            return start_authenticator(self.context, keys, "summa-daemon", ("control", "cancel")), curve
        except KeysError as error:
            raise ConfigError(str(error)) from None
        except OSError as error:
            raise ConfigError(f"{config.worker_keys_dir()}: cannot write the workers' keys "
                              f"({error.strerror})") from None

    def _admitting(self, name):
        return self.curve.admitting(SOCKET_ROLES[name]) if self.curve else None

    def _control_socket(self):
        return wire.new_socket(self.context, zmq.ROUTER, CONTROL_MAX_MESSAGE_BYTES,
                               curve=self._admitting("control"))

    def _cancel_socket(self):
        sock = wire.new_socket(self.context, zmq.PUB, SUBSCRIPTION_MAX_BYTES, curve=self._admitting("cancel"))
        sock.rcvhwm = SUBSCRIPTIONS_QUEUED
        return sock

    @staticmethod
    def _lock_data_dir(data_dir):
        """One daemon per data directory: a second would fail the first one's running jobs."""
        handle = open(os.path.join(data_dir, "lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(f"{data_dir}: another summa-daemon uses this data directory") from None
        return handle

    def _recover(self):
        """Reload job records. With `resume`, a job that was not finished is queued again,
        ahead of new ones, as its next attempt (runner.py reuses its journaled units), unless
        a cancel had been asked for (it ends cancelled), its uploads are gone (they do not
        outlive the daemon), or its result was published already (it ends done). Without,
        it is failed (interrupted). Partial results no resumed job owns are removed."""
        keep = set()
        for path in sorted(glob.glob(os.path.join(self.jobs_dir, "*.json"))):
            try:
                with open(path, encoding="utf-8") as handle:
                    record = json.load(handle)
                spec = check_submit(record["spec"], spawners.available() + (record["spec"]["spawner"],))
                job = Job(record["job"], spec, record)
            except (OSError, ValueError, KeyError, TypeError, ProtocolError) as error:
                log.warning("ignoring unreadable job record %s: %s", path, error)
                continue
            if job.state not in FINISHED:
                self._recover_unfinished(job, keep)
            self.jobs[job.id] = job
        for partial in glob.glob(os.path.join(self.results_dir, ".*.partial-*")):
            if os.path.basename(partial) not in keep:
                shutil.rmtree(partial, ignore_errors=True)   # a result write cut short

    def _recover_unfinished(self, job, keep):
        published = os.path.join(self.results_dir, job.id, "manifest.json")
        if os.path.exists(published):            # the daemon died between the rename and the record
            with open(published, encoding="utf-8") as handle:
                root = json.load(handle)["root"]
            job.update(self.jobs_dir, state=DONE, root=root, error=None)
        elif job.record.get("cancelling") or job.record.get("uploads"):
            why = None if job.record.get("cancelling") else \
                "interrupted: the daemon stopped, and its uploaded CSVs do not outlive it (upload them again)"
            job.update(self.jobs_dir, state=CANCELLED if why is None else FAILED, error=why)
        elif not self.config.resume:
            job.update(self.jobs_dir, state=FAILED,
                       error="interrupted: the daemon stopped before the job finished")
        else:
            keep.add(job.record.get("partial"))
            job.update(self.jobs_dir, state=QUEUED, attempt=job.attempt + 1,
                       resumed=job.record.get("resumed", 0) + 1, error=None)
            self.queue.append(job.id)
            log.info("job %s: resumed (attempt %d)", job.id, job.attempt)

    # ---- the loop ---------------------------------------------------------------------------

    def serve(self):
        self.poller = zmq.Poller()
        for sock in (self.control, self.events, self.memory_alarm, self.proof_answers, self.uploads.wake):
            self.poller.register(sock, zmq.POLLIN)
        self.proof_server.start()
        self.uploads.start()
        # until its PULL is connected, the inproc PUSH has no peer and every PROOF would be
        # refused as if 100,000 were waiting
        if not self.proof_server.ready.wait(READY_SECONDS):
            log.error("the proof server did not start within %s s; PROOFs are refused", READY_SECONDS)
        try:
            while not self.stopping.is_set():
                for sock, _ in self.poller.poll(POLL_MS):
                    if sock is self.control:
                        self._drain_requests()
                    elif sock is self.proof_answers:
                        self._forward_answers()
                    elif sock is self.memory_alarm:
                        self._on_memory_alarm()
                    elif sock is self.events:
                        self._publish_cancel(self.events.recv().decode())
                    elif sock is self.uploads.wake:
                        for identity, frames in self.uploads.answers():
                            self.control.send_multipart([identity, *frames])
                    # else: the control socket an alarm just replaced
                self.uploads.expire(time.monotonic())
                self._reap_runners()
                self._start_queued()
                if time.monotonic() >= self._retain_at:
                    self._retain()
        finally:
            self._shut_down()

    def stop(self):
        self.stopping.set()

    def _drain_requests(self):
        """Every request waiting on the control socket, up to DRAIN, each answered in turn; a
        PROOF (identity, header, command, body) goes to the proof server as it came."""
        control = self.control
        for _ in range(DRAIN):
            try:
                parts = recv_frames(control, zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) == 4 and parts[2].bytes == wire.PROOF:
                try:
                    send_frames(self.proof_requests, parts, zmq.NOBLOCK)
                except zmq.Again:
                    self._refuse(parts[0].bytes, ProtocolError(
                        Code.INTERNAL, f"the proof server has {PROOFS_WAITING} requests waiting; "
                        f"try again later"))
                continue
            self._on_request(parts)
            if self.control is not control:
                return

    def _forward_answers(self):
        """The proof server's answers (one message per batch: identity, header, command, body,
        identity, ...), to their clients; one whose connection is gone, or was dropped by the
        memory guard, loses it, as any answer."""
        for _ in range(DRAIN):
            try:
                frames = recv_frames(self.proof_answers, zmq.NOBLOCK)
            except zmq.Again:
                return
            for start in range(0, len(frames), 4):
                send_frames(self.control, frames[start:start + 4])

    def _start_queued(self):
        while self.queue and len(self.runners) < self.config.max_parallel_jobs:
            job = self.jobs[self.queue.popleft()]
            runner = JobRunner(job, self.config, self.context, self._events_address,
                               self.cancel_endpoint, self.jobs_dir, self.results_dir,
                               self.spawner_options, inputs=self.inputs)
            self.runners[job.id] = runner
            runner.start()

    def _reap_runners(self):
        for job_id, runner in list(self.runners.items()):
            if not runner.is_alive():
                runner.join()
                del self.runners[job_id]
                self.uploads.release(job_id)     # its entries are in the result store now
                self._settle(job_id)
                # libzmq tears down a PUB's dead connections only when the socket processes its
                # commands, which it does when it sends or is asked for its events: without
                # this, each exited worker's subscription kept 32 KB until the next cancellation
                self.pub.getsockopt(zmq.EVENTS)

    def _on_memory_alarm(self):
        log.warning(over_limit_message(self.memory_alarm, self.max_memory_bytes,
                                       f"dropping every client of {self.control_endpoint}"))
        self.poller.unregister(self.control)
        self.control = rebind(self.control, self._control_socket, self.control_endpoint)
        self.poller.register(self.control, zmq.POLLIN)

    def _publish_cancel(self, job_id):
        self.pub.send_multipart([wire.cancel_topic(job_id)])

    def _resumable(self, job):
        return self.config.resume and not job.record.get("uploads")   # uploads go with the daemon

    def _shut_down(self):
        """Running jobs are stopped, and with `resume` they (and queued ones) resume at the next
        start, as after a crash; else, or with uploads, they are cancelled."""
        unfinished = [j for j in self.runners if self.jobs[j].state not in FINISHED]
        log.info("stopping: %d running job(s)", len(unfinished))
        for job_id in list(self.queue):
            if not self._resumable(self.jobs[job_id]):
                self.jobs[job_id].update(self.jobs_dir, state=CANCELLED, error=None)
                self.uploads.release(job_id)
        self.queue.clear()
        for job_id, runner in self.runners.items():
            job = self.jobs[job_id]
            job.interrupted = self._resumable(job)
            if job.request_cancel():      # else it is publishing: let it finish
                self._publish_cancel(job.wire_id)
        for runner in self.runners.values():
            runner.join()     # each runner terminates its own workers, with bounded waits
        self.proof_server.stop()
        if self.proof_server.is_alive():
            self.proof_server.join()
        self.uploads.stop()
        self.uploads.clear()
        self.trash.stop()
        for sock in (self.control, self.pub, self.events, self.memory_alarm, self.proof_requests,
                     self.proof_answers):
            sock.close(linger=0)
        self.guard.stop()
        if self.authenticator is not None:
            self.authenticator.stop()
        self._lock.close()

    # ---- requests ---------------------------------------------------------------------------

    def _on_request(self, parts):
        identity, body = parts[0].bytes, {}
        try:
            command, body = wire.parse(parts[1:], CONTROL_MAX_MESSAGE_BYTES)
            handler = self.HANDLERS.get(command)
            upload = Uploads.HANDLERS.get(command)
            if handler is None and upload is None:
                raise ProtocolError(Code.UNKNOWN_COMMAND, f"the daemon does not take "
                                    f"{wire.COMMAND_NAMES[command]}")
            if command == wire.PROOF:                 # (_drain_requests forwards them first)
                send_frames(self.proof_requests, parts, zmq.NOBLOCK)
                return
            if upload is not None:                    # the upload writer answers, once on disk
                upload(self.uploads, identity, body)
                return
            reply = handler(self, body)
            self.control.send_multipart([identity, *wire.frames(wire.REPLY, reply)])
        except ProtocolError as error:
            job = body.get("job") if isinstance(body, dict) else None
            self.control.send_multipart([identity, *wire.frames(wire.ERROR, wire.error_body(
                error.code, error.message, job if isinstance(job, str) else None))])
        except Exception as error:     # a bug must not take the daemon down
            log.exception("request failed")
            self.control.send_multipart([identity, *wire.frames(wire.ERROR, wire.error_body(
                Code.INTERNAL, f"{type(error).__name__}: {error}"))])

    def _refuse(self, identity, error):
        self.control.send_multipart([identity, *wire.frames(wire.ERROR, wire.error_body(
            error.code, error.message))])

    def _job(self, body):
        job_id = wire.check_job(body)
        job = self.jobs.get(job_id)
        if job is None:
            raise ProtocolError(Code.NO_SUCH_JOB, f"no job {job_id}")
        return job

    def on_submit(self, body):
        if self.stopping.is_set():
            raise ProtocolError(Code.SHUTTING_DOWN, "the daemon is stopping")
        body = {**body}   # the daemon's defaults fill what the client left open
        if body.get("executors") is None:
            body["executors"] = self.config.default_executors
        if body.get("spawner") is None:
            body["spawner"] = self.config.default_spawner
        spec = check_submit(body, spawners.available())
        for path in spec.csvs:
            self.inputs.submitted(path)     # only inside input_dirs; nothing read or told about others
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        uploads = spec.uploads
        if uploads:                          # the job's own files, removed when it ends
            spec.csvs, spec.uploads = self.uploads.claim(uploads, job_id), None
        job = Job(job_id, spec)
        if uploads:
            job.record["uploads"] = list(uploads)
        job.update(self.jobs_dir)
        self.jobs[job_id] = job
        self.queue.append(job_id)
        log.info("job %s queued: %d CSV(s), %d executor(s)", job_id, len(spec.csvs), spec.executors)
        return {"job": job_id}

    def on_status(self, body):
        return self.jobs.record(self._job(body))

    def on_list(self, body):
        request = wire.read_list(body)
        jobs, cursor = self.jobs.page(request.limit, request.since, request.after)
        return {"jobs": jobs, "next": cursor}

    def on_cancel(self, body):
        job = self._job(body)
        if job.state == QUEUED:
            self.queue.remove(job.id)
            job.update(self.jobs_dir, state=CANCELLED)
            self.uploads.release(job.id)
            self._settle(job.id)
        elif job.state not in FINISHED:
            if not job.request_cancel():
                return {"job": job.id, "state": job.state,
                        "cancel": "too late: its result is being published"}
            job.update(self.jobs_dir, cancelling=True)     # a restart must not resume it
            self._publish_cancel(job.wire_id)
            return {"job": job.id, "state": "cancelling"}
        return {"job": job.id, "state": job.state}

    def on_proof(self, body):
        """The checks of a PROOF body: (job id, username), which the proof server answers (it
        calls this in its thread: it only reads the job table)."""
        job = self._job(body)
        username = body.get("username")
        if not isinstance(username, str):
            raise ProtocolError(Code.BAD_FIELD, "field 'username': expected a string")
        if job.state != "done":
            raise ProtocolError(Code.NOT_READY, f"job {job.id} is {job.state}: it has no tree")
        return job.id, username

    def on_delete(self, body):
        """A finished job's record and result go (retention.py: crash-safe); a queued or
        running one is refused: cancel it first."""
        job_id = wire.check_job(body)
        self._reap_runners()                   # a job that has just ended counts as finished
        job = self._job(body)
        if job.state not in FINISHED or job_id in self.runners:
            raise ProtocolError(Code.NOT_FINISHED, f"job {job_id} is {job.state}: cancel it first "
                                f"(summa-submit cancel {job_id}), then delete it")
        errors = self._delete([job_id])
        if errors:
            raise ProtocolError(Code.INTERNAL, f"job {job_id}: not deleted: {errors[job_id]}")
        log.info("job %s deleted", job_id)
        return {"job": job_id, "deleted": True}

    def on_shutdown(self, body):
        self.stop()
        return {"stopping": True}

    HANDLERS = {wire.SUBMIT: on_submit, wire.STATUS: on_status, wire.LIST: on_list,
                wire.CANCEL: on_cancel, wire.PROOF: on_proof, wire.SHUTDOWN: on_shutdown,
                wire.DELETE: on_delete}

    # ---- finished jobs: the index, deletion, retention ----------------------------------------

    def _settle(self, job_id):
        """A job that has just finished: its record leaves memory, and retention runs."""
        if self.jobs.settle(job_id) and (self.config.keep_results or self.config.keep_days):
            self._retain_at = 0.0

    def _delete(self, job_ids):
        """Delete finished jobs: their files (retention.delete_files), their table entries and
        loaded results; the trash thread removes the files. Returns {job id: why not} for
        those that could not be deleted (they stay, whole)."""
        try:
            deleted, trashes, errors = retention.delete_files(self.jobs_dir, self.results_dir, job_ids)
        except OSError as error:      # an fsync failed: the next start finishes what was begun
            log.error("deleting %d job(s) failed: %s", len(job_ids), error)
            return {job_id: f"{error.strerror or error}" for job_id in job_ids}
        for job_id in deleted:
            self.jobs.forget(job_id)
            self.proof_server.forget(job_id)
        for target in trashes:
            self.trash.put(target)
        for job_id, why in errors.items():
            log.error("job %s: not deleted: %s", job_id, why)
        return errors

    def _retain(self):
        """keep_results and keep_days: delete the finished jobs beyond them, at most
        RETENTION_BATCH at a time (the loop comes back at once for the rest)."""
        config = self.config
        self._retain_at = time.monotonic() + self.retention_seconds
        if not (config.keep_results or config.keep_days):
            return
        expired = self.jobs.expired(config.keep_results, config.keep_days, time.time())
        if not expired:
            return
        batch = expired[:RETENTION_BATCH]
        errors = self._delete(batch)
        log.info("retention (keep_results %d, keep_days %g): deleted %d finished job(s)",
                 config.keep_results, config.keep_days, len(batch) - len(errors))
        if len(expired) > len(batch) and not errors:
            self._retain_at = 0.0



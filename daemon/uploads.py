"""Uploads: CSVs sent through the control socket (UPLOAD, CHUNK, FINISH), for a client that
shares no file system with the daemon (wire/control_messages.py has the messages).

The control loop keeps the table of uploads and checks every request against it at once: the
offset, the chunk's size, the declared size, the window, the limits. A writer thread does all
of their file I/O, in order, and answers the requests it carried out (a chunk once written, a
FINISH once the file is synced and renamed): a slow disk never holds up the control loop, and
a client, which sends a chunk only when at most WINDOW - 1 of its earlier ones are unanswered,
goes at the disk's pace. The writer's outcomes come back to the loop through `outbox` and a
wake-up on an inproc socket (`wake`, which the loop polls), and the loop sends the answers.

Files: DATA_DIR/uploads/ID/NAME, ID 32 random hex digits (secrets.token_hex: an upload cannot be
named by guessing), NAME the client's plain file name (read_upload refuses paths, '..', control
characters); written as .NAME.partial, fdatasynced every FLUSH_BYTES (so the last fsync is
short), fsynced, renamed to NAME once whole and its SHA-256 is the one the client computed.

Limits: max_upload_mb for the bytes every upload on disk may hold at once (each reserves its
declared size at UPLOAD; it is given back when the upload is removed), max_uploads begun and not
finished at once, WAITING_MAX finished ones waiting for their SUBMIT, and the free disk space.
An upload is removed when one of its chunks or its FINISH is refused (the client starts
again), when it waited upload_timeout seconds for its next chunk or, finished, for its SUBMIT,
when the job it went to ends (its entries are in the result store by then), when the daemon
stops, and at start (whatever a crash left).
"""
import errno
import hashlib
import logging
import os
import queue
import secrets
import shutil
import threading
import time

import zmq

from .. import wire
from ..wire import Code, ProtocolError

log = logging.getLogger("summa.daemon")

CHUNK_BYTES = 1 << 20      # what one CHUNK may carry (the control socket takes 16 MiB)
WINDOW = 4                 # chunks a client may have unanswered
FLUSH_BYTES = 64 << 20     # written bytes between two fdatasyncs
WAITING_MAX = 1024         # finished uploads waiting for a SUBMIT (one SUBMIT names at most 1024)
OPEN_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0))

RECEIVING, FINISHING, READY, CLAIMED = "receiving", "finishing", "ready", "claimed"


class Upload:
    def __init__(self, upload_id, name, size, directory):
        self.id, self.name, self.size = upload_id, name, size
        self.directory = directory
        self.path = os.path.join(directory, name)
        self.partial = os.path.join(directory, f".{name}.partial")
        # the control loop's
        self.state, self.accepted, self.pending, self.job = RECEIVING, 0, 0, None
        self.seen = time.monotonic()
        self.discarded = False
        # the writer's
        self.fd, self.written, self.unflushed = None, 0, 0
        self.digest = hashlib.sha256()


def _reply(body):
    return wire.frames(wire.REPLY, body)


def _error(code, message):
    return wire.frames(wire.ERROR, wire.error_body(code, message))


class Uploads:
    def __init__(self, context, config):
        self.root = os.path.join(os.path.abspath(config.data_dir), "uploads")
        self.limit = config.max_upload_mb << 20
        self.max_uploads = config.max_uploads
        self.timeout = config.upload_timeout
        self.table = {}
        self.reserved = 0                 # declared bytes of every upload in the table
        self._next_expiry = 0.0
        self.tasks = queue.Queue()        # (operation, upload, identity, argument): the writer's
        self.outbox = queue.Queue()       # (upload, outcome, identity, frames): the loop's
        self._address = f"inproc://summa-daemon-uploads-{id(self)}"
        self.wake = context.socket(zmq.PULL)
        self.wake.linger = 0
        self.wake.bind(self._address)
        self.writer = threading.Thread(target=self._write_loop, args=(context,), name="upload-writer",
                                       daemon=True)

    def clear(self):
        """Remove every upload on disk (at start: a crash's leftovers; at the end)."""
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root, mode=0o750, exist_ok=True)

    def start(self):
        self.writer.start()

    def stop(self):
        if self.writer.is_alive():
            self.tasks.put(None)
            self.writer.join()
        self.wake.close(linger=0)

    # ---- requests (the control loop's thread) ---------------------------------------------------

    def _get(self, upload_id):
        upload = self.table.get(upload_id)
        if upload is None:
            raise ProtocolError(Code.NO_SUCH_UPLOAD, f"no upload {upload_id} (unknown, refused, "
                                f"expired, or its job has ended)")
        return upload

    def on_upload(self, identity, body):
        request = wire.read_upload(body)
        if not self.limit:
            raise ProtocolError(Code.OVER_LIMIT, "this daemon takes no uploads (max_upload_mb = 0)")
        uploads = self.table.values()
        if sum(u.state in (RECEIVING, FINISHING) for u in uploads) >= self.max_uploads:
            raise ProtocolError(Code.OVER_LIMIT, f"{self.max_uploads} uploads are in progress, the "
                                f"daemon's max_uploads; try again once one has finished")
        if sum(u.state == READY for u in uploads) >= WAITING_MAX:
            raise ProtocolError(Code.OVER_LIMIT, f"{WAITING_MAX} finished uploads are waiting for "
                                f"their SUBMIT; try again later")
        if self.reserved + request.size > self.limit:
            raise ProtocolError(Code.OVER_LIMIT, f"an upload of {request.size} bytes would take the "
                                f"uploads beyond max_upload_mb ({self.limit >> 20} MiB; "
                                f"{self.reserved} bytes are held now)")
        try:
            disk = os.statvfs(self.root)
            free = disk.f_bavail * disk.f_frsize
        except OSError:
            free = None
        if free is not None and request.size > free:
            raise ProtocolError(Code.OVER_LIMIT, f"an upload of {request.size} bytes does not fit "
                                f"on the daemon's disk ({free} bytes free)")
        upload_id = secrets.token_hex(16)
        upload = Upload(upload_id, request.name, request.size, os.path.join(self.root, upload_id))
        self.table[upload_id] = upload
        self.reserved += upload.size
        self.tasks.put(("open", upload, identity, None))

    def on_chunk(self, identity, body):
        upload_id, offset, data = wire.read_chunk(body)
        upload = self._get(upload_id)
        if upload.state != RECEIVING:
            raise ProtocolError(Code.BAD_FIELD, f"upload {upload_id} is {upload.state}: it takes "
                                f"no more chunks")
        problem = None
        if offset != upload.accepted:
            problem = f"at offset {offset}, where {upload.accepted} was next (chunks go in order)"
        elif not data or len(data) > CHUNK_BYTES:
            problem = f"of {len(data)} bytes (1 to {CHUNK_BYTES})"
        elif offset + len(data) > upload.size:
            problem = f"past the {upload.size} bytes the upload declared"
        elif upload.pending >= WINDOW:
            problem = f"beyond the window: {WINDOW} chunks were unanswered"
        if problem:
            self.discard(upload)
            raise ProtocolError(Code.BAD_FIELD, f"upload {upload_id}: a chunk {problem}; the upload "
                                f"is discarded")
        upload.accepted += len(data)
        upload.pending += 1
        upload.seen = time.monotonic()
        self.tasks.put(("write", upload, identity, data))

    def on_finish(self, identity, body):
        upload_id, digest = wire.read_finish(body)
        upload = self._get(upload_id)
        if upload.state != RECEIVING:
            raise ProtocolError(Code.BAD_FIELD, f"upload {upload_id} is {upload.state} already")
        if upload.accepted != upload.size:
            self.discard(upload)
            raise ProtocolError(Code.BAD_FIELD, f"upload {upload_id}: FINISH after {upload.accepted} "
                                f"of the {upload.size} bytes it declared; the upload is discarded")
        upload.state = FINISHING
        upload.seen = time.monotonic()
        self.tasks.put(("finish", upload, identity, digest))

    HANDLERS = {wire.UPLOAD: on_upload, wire.CHUNK: on_chunk, wire.FINISH: on_finish}

    def claim(self, upload_ids, job_id):
        """The files of finished uploads, now the job's (removed when it ends)."""
        uploads = []
        for upload_id in upload_ids:
            upload = self.table.get(upload_id)
            if upload is None or upload.state == CLAIMED:
                raise ProtocolError(Code.NO_SUCH_UPLOAD, f"field 'uploads': no upload {upload_id} "
                                    f"waiting for a job (unknown, refused, expired, or another "
                                    f"job's)")
            if upload.state != READY:
                raise ProtocolError(Code.NOT_READY, f"field 'uploads': upload {upload_id} is "
                                    f"{upload.state}, not finished")
            uploads.append(upload)
        for upload in uploads:
            upload.state, upload.job = CLAIMED, job_id
        return [upload.path for upload in uploads]

    def release(self, job_id):
        """The job ended: its uploads go."""
        for upload in [u for u in self.table.values() if u.job == job_id]:
            self.discard(upload)

    def discard(self, upload):
        if self.table.get(upload.id) is upload:
            del self.table[upload.id]
            self.reserved -= upload.size
        upload.discarded = True
        self.tasks.put(("delete", upload, None, None))

    def expire(self, now):
        """Remove the uploads that waited more than upload_timeout for their next chunk or, once
        finished, for their SUBMIT (looked at every second or so)."""
        if now < self._next_expiry:
            return
        self._next_expiry = now + min(1.0, self.timeout / 4)
        for upload in list(self.table.values()):
            if upload.state in (RECEIVING, READY) and not upload.pending \
                    and now - upload.seen > self.timeout:
                log.info("upload %s (%s) removed: no %s for %g s", upload.id, upload.name,
                         "chunk" if upload.state == RECEIVING else "SUBMIT", self.timeout)
                self.discard(upload)

    def answers(self):
        """The writer's outcomes applied to the table; returns the (identity, frames) to send."""
        while True:
            try:
                self.wake.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        out = []
        while True:
            try:
                upload, outcome, identity, frames = self.outbox.get_nowait()
            except queue.Empty:
                return out
            if outcome == "written":
                upload.pending -= 1
                upload.seen = time.monotonic()
            elif outcome == "ready" and not upload.discarded:
                upload.state = READY
                upload.seen = time.monotonic()
            elif outcome == "failed" and self.table.get(upload.id) is upload:
                del self.table[upload.id]           # the writer has removed its files
                self.reserved -= upload.size
                upload.discarded = True
            if identity is not None:
                out.append((identity, frames))

    # ---- the writer's thread --------------------------------------------------------------------

    def _write_loop(self, context):
        push = context.socket(zmq.PUSH)
        push.linger = 0
        push.connect(self._address)
        try:
            while True:
                task = self.tasks.get()
                if task is None:
                    return
                operation, upload, identity, argument = task
                try:
                    outcome, frames = getattr(self, "_" + operation)(upload, argument)
                except OSError as error:
                    self._remove(upload)
                    code = Code.OVER_LIMIT if error.errno in (errno.ENOSPC, errno.EDQUOT) else Code.INTERNAL
                    message = (f"upload {upload.id}: cannot write {upload.partial}: "
                               f"{error.strerror or error}; the upload is discarded")
                    log.warning("%s", message)
                    outcome, frames = "failed", _error(code, message)
                except Exception as error:     # a bug must not end the writer
                    log.exception("upload %s: %s failed", upload.id, operation)
                    self._remove(upload)
                    outcome, frames = "failed", _error(Code.INTERNAL, f"{type(error).__name__}: {error}")
                self.outbox.put((upload, outcome, identity if frames is not None else None, frames))
                try:
                    push.send(b"", zmq.NOBLOCK)
                except zmq.Again:        # the loop has wake-ups waiting already
                    pass
        finally:
            push.close(linger=0)

    def _gone(self, upload):
        return "refused", _error(Code.NO_SUCH_UPLOAD, f"upload {upload.id} was discarded")

    def _open(self, upload, _):
        if upload.discarded:
            return self._gone(upload)
        os.mkdir(upload.directory, 0o750)
        upload.fd = os.open(upload.partial, OPEN_FLAGS, 0o640)
        return "opened", _reply({"upload": upload.id, "chunk_bytes": CHUNK_BYTES, "window": WINDOW})

    def _write(self, upload, data):
        if upload.discarded or upload.fd is None:
            return self._gone(upload)
        view = memoryview(data)
        while view:
            view = view[os.write(upload.fd, view):]
        upload.digest.update(data)
        upload.written += len(data)
        upload.unflushed += len(data)
        if upload.unflushed >= FLUSH_BYTES:
            os.fdatasync(upload.fd)
            upload.unflushed = 0
        return "written", _reply({"upload": upload.id, "received": upload.written})

    def _finish(self, upload, digest):
        if upload.discarded or upload.fd is None:
            return self._gone(upload)
        os.fsync(upload.fd)
        os.close(upload.fd)
        upload.fd = None
        received = upload.digest.hexdigest()
        if received != digest:
            self._remove(upload)
            return "failed", _error(Code.BAD_FIELD, f"upload {upload.id}: field 'sha256': the "
                                    f"daemon received {upload.written} bytes whose SHA-256 is "
                                    f"{received}, not {digest}; the upload is discarded")
        os.rename(upload.partial, upload.path)
        directory = os.open(upload.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        log.info("upload %s (%s): %d bytes received", upload.id, upload.name, upload.written)
        return "ready", _reply({"upload": upload.id, "size": upload.written, "sha256": received})

    def _delete(self, upload, _):
        self._remove(upload)
        return "deleted", None

    @staticmethod
    def _remove(upload):
        if upload.fd is not None:
            try:
                os.close(upload.fd)
            except OSError:
                pass
            upload.fd = None
        shutil.rmtree(upload.directory, ignore_errors=True)

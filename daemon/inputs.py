"""Where the daemon may read CSVs, and how it opens one.

A SUBMIT names paths, and whoever holds a client key chooses them, so the daemon reads a path
only when it lies inside one of its `input_dirs`: as written (a normalized absolute path, so
'..' cannot walk out lexically) and again once every symbolic link is followed
(os.path.realpath), against the directories as configured and as resolved at start. A path
that is not inside one as written is refused without the file system being asked anything
about it, so the refusal is the same whether it exists or not. Inside an input dir, the
daemon's own files (its data_dir and keys_dir: job records, results, uploads, keys) stay out of
reach, but for an input dir placed under them (the default DATA_DIR/inputs). summa-aggregate
allows exactly the files of its command line instead (`files`).

The loader opens each file through open(), which checks the policy again on the resolved path
(the file may have changed since the SUBMIT), refuses anything but a regular file before
opening it (lstat), opens with O_NONBLOCK|O_NOFOLLOW (a FIFO swapped in meanwhile does not
block the open), checks with fstat that the descriptor is that same regular file, and checks
where the descriptor really is (/proc/self/fd) against the policy once more. Errors name the
path, never a byte of the file.
"""
import os
import stat

from ..wire import Code, ProtocolError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0))


class InputError(ValueError):
    """A path the daemon does not read; one line naming it, never its contents."""


def inside(path, directory):
    """`path` is `directory` or below it (not /data/inputs-evil for /data/inputs)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _kind(mode):
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def open_regular(path, real=None):
    """A read-only, blocking descriptor on the regular file at `real` (default `path`; errors
    name `path`), opened without blocking on, or even opening, anything else."""
    real = real or path
    try:
        before = os.lstat(real)
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    if not stat.S_ISREG(before.st_mode):
        raise InputError(f"{path}: {_kind(before.st_mode)}, not a regular file (the daemon "
                         f"reads CSVs from regular files only)")
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise InputError(f"{path}: changed while the daemon opened it (submit it again once "
                             f"it stays put)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def where_open(fd):
    """The path the kernel has for a descriptor (Linux), or None where it cannot tell."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class InputPolicy:
    def __init__(self, dirs, private=(), files=()):
        """dirs: the input directories (absolute); private: directories whose files are never
        inputs (data_dir, keys_dir), but in an input dir below them; files: single files
        allowed besides (summa-aggregate's own arguments)."""
        self.shown = list(dirs)
        self.dirs = self._forms(dirs)
        self.real_dirs = [os.path.realpath(d) for d in dirs]
        self.private = [os.path.realpath(d) for d in private if d]
        self.files = self._forms(files)
        self.real_files = {os.path.realpath(f) for f in files}

    @staticmethod
    def _forms(paths):
        """Each path as written (normalized) and resolved."""
        return sorted({os.path.normpath(p) for p in paths} | {os.path.realpath(p) for p in paths})

    @classmethod
    def of_config(cls, config, files=()):
        """The policy of a DaemonConfig: its input_dirs, the relative ones under data_dir
        created if missing (mode 0750); a configured directory that is not one is a
        ConfigError (raised as ValueError here, with the config's words)."""
        dirs = config.input_paths()
        data = os.path.realpath(config.data_dir)
        for directory in dirs:
            real = os.path.realpath(directory)
            if real == data or any(inside(real, os.path.join(data, own)) for own in
                                   ("jobs", "results", "uploads", "worker-keys")):
                raise ValueError(f"input_dirs: {directory} would open the daemon's own files "
                                 f"(job records, results, uploads) to clients; use a directory "
                                 f"of its own, like {os.path.join(config.data_dir, 'inputs')}")
        for written, directory in zip(config.input_dirs, dirs):
            if not os.path.isabs(os.path.expanduser(written)) and not os.path.lexists(directory):
                os.makedirs(directory, mode=0o750, exist_ok=True)    # under data_dir: ours to make
            if not os.path.isdir(directory):
                raise ValueError(f"input_dirs: {directory} is not a directory")
        return cls(dirs, private=(config.data_dir, config.keys_dir), files=files)

    def describe(self):
        if self.shown:
            return ", ".join(self.shown)
        return "none: only the files it was started for" if self.real_files else "none: uploads only"

    def check(self, path, also=()):
        """The resolved path to open for `path`, or InputError; `also`: exact paths allowed
        besides (a job's own uploads)."""
        if "\0" in path or any(ord(c) < 0x20 or c == "\x7f" for c in path):
            raise InputError(f"{path!r}: a path with control characters")
        if not os.path.isabs(path):
            raise InputError(f"{path!r} is not an absolute path (the daemon does not know the "
                             f"client's directory)")
        if os.path.normpath(path) != path or path.startswith("//"):
            raise InputError(f"{path}: not a normalized absolute path (no '.', '..' or '//'; "
                             f"summa-submit sends them so)")
        also = set(also)
        if path in also:
            return self._verdict(path, os.path.realpath(path), also)
        if not any(inside(path, d) for d in self.dirs) and path not in self.files:
            # decided on the words alone: nothing about the file is looked at, or told
            raise InputError(f"{path}: not inside the daemon's input_dirs ({self.describe()})")
        return self._verdict(path, os.path.realpath(path), also)

    def _verdict(self, path, real, also=()):
        if real in self.real_files or real in {os.path.realpath(p) for p in also}:
            return real
        roots = [(len(d), True) for d in self.real_dirs if inside(real, d)]
        roots += [(len(d) + 0.5, False) for d in self.private if inside(real, d)]
        if not roots:
            raise InputError(f"{path}: not inside the daemon's input_dirs once symbolic links "
                             f"are followed ({self.describe()})")
        if not max(roots)[1]:    # the deepest directory holding it is one of the daemon's own
            raise InputError(f"{path}: one of the daemon's own files (its data_dir or keys_dir), "
                             f"never an input")
        return real

    def submitted(self, path):
        """check() for a SUBMIT: the refusal as a ProtocolError on field 'csvs'."""
        try:
            return self.check(path)
        except InputError as error:
            raise ProtocolError(Code.BAD_FIELD, f"field 'csvs': {error}") from None

    def open(self, path, also=()):
        """A descriptor on `path` for the loader (open_regular of the resolved path), with
        every check made again on what was really opened."""
        real = self.check(path, also)
        fd = open_regular(path, real)
        try:
            where = where_open(fd)
            if where is not None and where != real:
                self._verdict(path, where, also)
        except BaseException:
            os.close(fd)
            raise
        return fd

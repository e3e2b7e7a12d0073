"""The loader thread: reads and checks a job's CSVs while its workers start and build."""
import logging
import queue
import threading

from ..mst.csv_reader import CsvError, read_csvs, stream_csvs

log = logging.getLogger("summa.daemon")


class _Stop(Exception):
    """Stops the reader of a job that has ended."""


class Loader(threading.Thread):
    """Its queue gets ("batch", b)..., then ("end", None) or ("error", why).

    With a batch size, batches stream out while reading goes on; with one mini-tree per CSV,
    they come out once every file is read (the depth needs every file's count)."""

    def __init__(self, spec, stop):
        super().__init__(name="csv-loader", daemon=True)
        self.spec, self.stop, self.out = spec, stop, queue.Queue()

    def _emit(self, batch):
        if self.stop.is_set():
            raise _Stop()
        self.out.put(("batch", batch))

    def run(self):
        spec = self.spec
        try:
            if spec.batch_size:
                stream_csvs(spec.csvs, spec.batch_size, self._emit, spec.n_bytes)
            else:   # one mini-tree per CSV: the depth needs every file's count first
                for batch in read_csvs(spec.csvs, spec.n_bytes):
                    self._emit(batch)
            self.out.put(("end", None))
        except _Stop:
            pass
        except CsvError as error:
            self.out.put(("error", str(error)))
        except Exception as error:
            log.exception("reading the CSVs failed")
            self.out.put(("error", f"internal error while reading: {type(error).__name__}: {error}"))

    def drain(self):
        """What the loader has produced since the last call, without waiting."""
        while True:
            try:
                yield self.out.get_nowait()
            except queue.Empty:
                return

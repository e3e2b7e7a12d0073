"""summa-submit --wait's and summa-aggregate's progress line (daemon/submit.py Progress), fed job
records with a clock the test moves, written to a StringIO: no daemon, no terminal, no sleeping."""
import io

import pytest

from summa_aggregation.daemon.submit import Progress, _duration, follow

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def record(state, done, entries=None, estimate=None, batches_done=0, batches=None):
    progress = {"entries_done": done, "entries": entries, "batches_done": batches_done,
                "batches": batches, "worker_seconds": 0.0, "retries": 0, "replacements": 0}
    if estimate is not None:
        progress["entries_estimate"] = estimate
    return {"job": "j1", "state": state, "progress": progress}


def progress_with_clock():
    clock = Clock()
    return Progress(stream=io.StringIO(), enabled=True, clock=clock), clock


def test_the_total_is_the_estimate_until_the_csvs_are_read_then_the_exact_count():
    progress, clock = progress_with_clock()
    first = progress.line(record("loading", 0, estimate=1_000_000))
    assert "[                    ]" in first
    assert "0/~1,000,000 entries" in first and "0%" in first
    assert "- entries/s" in first and "ETA ?" in first     # no time has passed yet
    clock.now += 1
    line = progress.line(record("running", 250_000, estimate=1_000_000, batches_done=1, batches=4))
    assert line.startswith("running ")
    assert "[#####               ]" in line
    assert "250,000/~1,000,000 entries" in line and " 25%" in line
    assert "250,000 entries/s" in line and "ETA 3 s" in line and "1/4 mini-trees" in line
    clock.now += 1
    exact = progress.line(record("running", 500_000, entries=1_048_576, estimate=1_000_000,
                                 batches_done=2, batches=4))
    assert "500,000/1,048,576 entries" in exact and "~" not in exact    # exact: no ~
    assert " 48%" in exact and "250,000 entries/s" in exact
    assert "ETA 2 s" in exact        # 548,576 left at 250,000/s


def test_the_rate_is_over_the_last_five_seconds_not_since_the_start():
    progress, clock = progress_with_clock()
    total = 100_000_000
    for second in range(11):          # 1,000 entries/s for 10 s
        progress.line(record("running", 1_000 * second, entries=total))
        clock.now += 1
    done = 10_000
    for _ in range(6):                # then 100,000 entries/s: after 5 s the window holds only that
        done += 100_000
        line = progress.line(record("running", done, entries=total))
        clock.now += 1
    assert "100,000 entries/s" in line
    # since the start it would be 610,000 entries in 16 s, about 38,000/s
    assert "ETA 0:16:34" in line      # 99,390,000 left at 100,000/s


def test_the_window_drops_old_samples():
    progress, clock = progress_with_clock()
    for second in range(100):
        progress.line(record("running", second * 10, entries=10_000))
        clock.now += 0.2
    span = progress.samples[-1][0] - progress.samples[0][0]
    assert 5.0 <= span < 5.0 + 0.2 + 1e-9
    assert len(progress.samples) <= 27


def test_an_eta_of_hours_is_h_mm_ss():
    progress, clock = progress_with_clock()
    progress.line(record("running", 0, entries=1 << 28))
    clock.now += 5
    line = progress.line(record("running", 5_000, entries=1 << 28))     # 1,000 entries/s
    assert "1,000 entries/s" in line
    assert "ETA 74:33:50" in line     # 268,430,456 entries left at 1,000/s


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (42, "42 s"), (59.4, "59 s"), (60, "0:01:00"),
                                           (307, "0:05:07"), (3723, "1:02:03")])
def test_durations(seconds, text):
    assert _duration(seconds) == text


def test_an_unknown_total_shows_counts_without_a_bar_percent_or_eta():
    progress, clock = progress_with_clock()
    progress.line(record("loading", 0))          # an old record: no entries_estimate
    clock.now += 2
    line = progress.line(record("loading", 65_536, batches_done=1))
    assert "[" not in line and "%" not in line and "ETA" not in line
    assert "65,536 entries" in line and "32,768 entries/s" in line and "1/? mini-trees" in line


def test_no_progress_means_no_eta_and_a_late_estimate_does_not_go_past_100_percent():
    progress, clock = progress_with_clock()
    progress.line(record("running", 0, estimate=1_000))
    clock.now += 1
    stalled = progress.line(record("running", 0, estimate=1_000))
    assert "0 entries/s" in stalled and "ETA ?" in stalled
    clock.now += 1
    over = progress.line(record("running", 1_500, estimate=1_000))     # the estimate was low
    assert "[####################]" in over and "100%" in over and "ETA ?" in over
    clock.now += 1
    built = progress.line(record("running", 1_500, entries=1_500))     # the store is being written
    assert "1,500/1,500 entries" in built and "100%" in built and "ETA" not in built


def test_a_finished_job_shows_no_eta():
    progress, clock = progress_with_clock()
    progress.line(record("running", 0, entries=1_024))
    clock.now += 1
    line = progress.line(record("done", 1_024, entries=1_024, batches_done=1, batches=1))
    assert line.startswith("done ") and "1,024/1,024 entries" in line and "100%" in line
    assert "ETA" not in line and "1/1 mini-trees" in line


def test_one_line_redrawn_with_carriage_returns_and_cleared_when_shorter():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream=stream, enabled=True, clock=clock)
    progress.show(record("running", 0, entries=1 << 20, batches=16))
    clock.now += 1
    progress.show(record("running", 1 << 19, entries=1 << 20, batches_done=8, batches=16))
    clock.now += 1
    progress.show(record("done", 1 << 20, entries=1 << 20, batches_done=16, batches=16))
    progress.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    drawn = text.rstrip("\n").split("\r")[1:]
    assert len(drawn[2]) >= len(drawn[1])        # padded over the longer line before it
    assert drawn[2].rstrip().startswith("done")


def test_disabled_progress_writes_nothing_and_a_non_terminal_disables_it():
    stream = io.StringIO()
    progress = Progress(stream=stream)           # a StringIO is not a terminal
    assert not progress.enabled
    progress.show(record("running", 5, entries=10))
    progress.close()
    assert stream.getvalue() == ""


def test_follow_shows_every_record_and_closes_the_line_once():
    records = iter([record("loading", 0, estimate=4_096), record("running", 2_048, entries=4_096),
                    record("done", 4_096, entries=4_096, batches_done=1, batches=1)])

    class Client:
        def status(self, job_id):
            return next(records)

    stream, clock = io.StringIO(), Clock()
    last = follow(Client(), "j1", Progress(stream=stream, enabled=True, clock=clock), interval=0)
    assert last["state"] == "done"
    assert stream.getvalue().count("\r") == 3 and stream.getvalue().endswith("\n")

"""The best-effort shadow runner: a failing shadow is counted, never raised; a full queue drops
and counts without blocking; a closed runner refuses new shadows."""

from __future__ import annotations

import threading

from shared.router import ShadowRunner


def test_a_failing_shadow_is_counted_never_raised():
    runner = ShadowRunner(workers=1, max_pending=4)
    done = []
    assert runner.submit(lambda: 1 / 0) is True
    assert runner.submit(done.append, "ok") is True
    runner.close()
    assert done == ["ok"]
    assert (runner.stats.submitted, runner.stats.failed, runner.stats.completed,
            runner.stats.dropped) == (2, 1, 1, 0)


def test_a_full_queue_drops_and_counts_without_blocking():
    runner = ShadowRunner(workers=1, max_pending=2)
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)

    assert runner.submit(slow)
    assert started.wait(5)  # the one thread is busy; now only the queue takes tasks
    # Submitted from another thread: a submit that waited for room would still be waiting
    # (the busy task holds until ``release``), and the join would time out.
    results: list[bool] = []
    submitter = threading.Thread(target=lambda: results.extend(runner.submit(slow) for _ in range(50)))
    submitter.start()
    submitter.join(10)
    assert not submitter.is_alive()  # never waited for room
    assert results[:2] == [True, True] and not any(results[2:])
    assert runner.stats.dropped == 48 and runner.pending == 2
    release.set()
    runner.close()
    assert (runner.stats.submitted, runner.stats.completed) == (3, 3)


def test_a_closed_runner_refuses_new_shadows():
    runner = ShadowRunner()
    runner.close()
    assert runner.submit(print) is False
    assert runner.stats.dropped == 1

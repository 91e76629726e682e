"""BLAS threads (numpyvae/threads.py): fixed counts are set and given back; "auto" follows the load.

No test here is timed: the load is simulated by feeding "auto" the CPU counters it reads.
The speed under a real competing load is measured in benchmarks/results/busy_load.md.
"""
import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

from numpyvae import threads as threads_module          # noqa: E402
from numpyvae.threads import Threads, parse_threads, threads_for   # noqa: E402


def blas_threads():
    return max(info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas")


@pytest.fixture
def blas():
    if not any(info["user_api"] == "blas" for info in threadpoolctl.threadpool_info()):
        pytest.skip("threadpoolctl finds no BLAS library in this NumPy")
    before = blas_threads()
    yield before
    assert blas_threads() == before          # every test leaves BLAS as it found it


@pytest.mark.parametrize("cpus, others, expected", [
    (2, 0.0, 2), (2, 0.29, 2), (2, 0.31, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 5.0, 1),
    (8, 0.0, 8), (8, 3.0, 5), (8, 3.5, 4), (1, 0.0, 1),
])
def test_one_thread_per_core_the_others_leave_free(cpus, others, expected):
    assert threads_for(cpus, others) == expected


def test_parse_threads():
    assert parse_threads("auto") == "auto" and parse_threads("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError):
            parse_threads(bad)


def test_a_fixed_count_is_set_and_given_back(blas):
    with Threads(1) as threads:
        assert threads.count == 1 and blas_threads() == 1
    assert blas_threads() == blas


def test_none_leaves_blas_alone(blas):
    with Threads(None) as threads:
        threads.tick()
        assert threads.count is None and blas_threads() == blas


def test_never_more_threads_than_usable_cpus(blas, monkeypatch):
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    with Threads(64) as threads:
        assert threads.count == 1 and blas_threads() == 1
    with Threads("auto") as threads:
        assert threads.most == 1


class FakeMachine:
    """The counters "auto" reads: wall clock, every process's CPU time, and ours (and a quiet load average)."""

    def __init__(self, monkeypatch, loadavg=0.0):
        self.wall = self.busy = self.own = 0.0
        monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (loadavg, loadavg, loadavg))
        monkeypatch.setattr(threads_module, "perf_counter", lambda: self.wall)
        monkeypatch.setattr(threads_module, "busy_seconds", lambda cpus: self.busy)
        monkeypatch.setattr(threads_module, "own_seconds", lambda: self.own)

    def run(self, seconds, ours, others):
        """`seconds` pass while we use `ours` cores and the other processes `others`."""
        self.wall += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds


def test_auto_drops_to_one_thread_while_another_process_takes_a_core_and_comes_back(blas, monkeypatch):
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    machine = FakeMachine(monkeypatch)
    with Threads("auto") as threads:
        if threads.most < 2:
            pytest.skip("this BLAS runs one thread: nothing to drop")
        for _ in range(10):                          # quiet: both threads stay
            machine.run(0.05, ours=2, others=0.05)
            threads.tick()
        assert threads.count == 2 and blas_threads() == 2
        for _ in range(10):                          # a busy loop starts beside us
            machine.run(0.05, ours=1, others=1.0)
            threads.tick()
        assert threads.count == 1 and blas_threads() == 1
        for _ in range(10):                          # and stops
            machine.run(0.05, ours=1, others=0.0)
            threads.tick()
        assert threads.count == 2 and blas_threads() == 2
        assert [count for _, count in threads.history] == [2, 1, 2]
    assert blas_threads() == blas


def test_auto_looks_only_every_check_interval(blas, monkeypatch):
    machine = FakeMachine(monkeypatch)
    with Threads("auto") as threads:
        machine.run(threads_module.CHECK_SECONDS / 2, ours=1, others=2.0)
        threads.tick()
        assert threads.count == threads.most          # too soon to judge
        machine.run(threads_module.CHECK_SECONDS, ours=1, others=2.0)
        threads.tick()
        assert threads.count == 1


def test_without_proc_stat_auto_keeps_its_threads(blas, monkeypatch):
    machine = FakeMachine(monkeypatch)
    monkeypatch.setattr(threads_module, "busy_seconds", lambda cpus: None)
    with Threads("auto") as threads:
        for _ in range(10):
            machine.run(0.1, ours=1, others=2.0)
            threads.tick()
        assert threads.count == threads.most


def test_busy_seconds_reads_only_the_given_cpus():
    every = threads_module.busy_seconds(set(range(4096)))
    if every is None:
        pytest.skip("no /proc/stat here")
    assert threads_module.busy_seconds(set()) == 0
    assert 0 <= threads_module.busy_seconds({0}) <= every


# -- what holds for results: exact per thread count, close across them ---------------------------

@pytest.mark.parametrize("count", [1, 2])
def test_resume_is_bit_exact_for_a_fixed_thread_count(tiny_config, tmp_path, count, blas):
    from numpyvae import checkpoint, train
    config = tiny_config(epochs=2, hidden_dim=400, latent_dim=20, batch_size=16)
    quiet = dict(log=lambda line: None, progress=False, threads=count)
    straight = train.train(config, tmp_path / "straight", **quiet)

    def stop_in_epoch_2(epoch, step):
        if (epoch, step) == (2, 2):
            raise KeyboardInterrupt
    with pytest.raises(train.Interrupted):
        train.train(config, tmp_path / "resumed", on_step=stop_in_epoch_2, **quiet)
    train.train(config, tmp_path / "resumed", resume=True, **quiet)
    resumed = checkpoint.load(tmp_path / "resumed" / checkpoint.FILENAME)
    assert np.array_equal(resumed.params, straight.model.flat_params)


def test_thread_counts_change_results_only_in_the_last_digits(tiny_config, tmp_path, blas):
    from numpyvae import train
    config = tiny_config(epochs=2, hidden_dim=400, latent_dim=20, batch_size=16)
    runs = [train.train(config, tmp_path / str(count), log=lambda line: None, progress=False, threads=count)
            for count in (1, 2)]
    one, two = (run.metrics[-1]["test_loss"] for run in runs)
    assert abs(one - two) <= 1e-4 * abs(one)


def test_without_threadpoolctl_a_warning_and_blas_left_alone(blas, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)          # import threadpoolctl now fails
    with pytest.warns(UserWarning, match="threadpoolctl is not installed"):
        with Threads(1) as threads:
            threads.tick()
            assert threads.count is None


def test_auto_starts_from_the_load_average_and_its_first_look_corrects_it(blas, monkeypatch):
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    machine = FakeMachine(monkeypatch, loadavg=3.0)       # a crowded machine: start at one thread
    with Threads("auto") as threads:
        if threads.most < 2:
            pytest.skip("this BLAS runs one thread")
        assert threads.count == 1 and blas_threads() == 1
        machine.run(threads_module.CHECK_SECONDS, ours=1, others=0.0)   # it was our own load: quiet now
        threads.tick()
        assert threads.count == 2 and [count for _, count in threads.history] == [1, 2]
    assert blas_threads() == blas

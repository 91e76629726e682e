"""The chunk pool: every chunk exactly once, the same chunks every call, errors and Ctrl-C reach the caller."""
import os
import signal
import threading
import time
import tracemalloc

import numpy as np
import pytest

from numpyvae import VAE, Adam
from numpyvae.parallel import ChunkPool, default_pool, usable_cpus


@pytest.fixture
def pool():
    pool = ChunkPool(3)
    yield pool
    pool.close()


def record_chunks(pool, n, grain):
    seen, lock = [], threading.Lock()

    def fn(worker, start, end):
        with lock:
            seen.append((start, end, worker))
    pool.run(fn, n, grain)
    return seen


@pytest.mark.parametrize("n, grain", [(10, 3), (9, 3), (1, 5), (1000, 7)])
def test_every_chunk_runs_once_and_the_chunks_never_change(pool, n, grain):
    expected = [(start, min(start + grain, n)) for start in range(0, n, grain)]
    for _ in range(5):
        seen = record_chunks(pool, n, grain)
        assert sorted((start, end) for start, end, _ in seen) == expected
        assert {worker for _, _, worker in seen} <= {0, 1, 2}


def test_one_chunk_or_one_worker_runs_inline_without_threads():
    before = threading.active_count()
    assert {w for _, _, w in record_chunks(ChunkPool(4), 10, 10)} == {0}       # one chunk
    assert {w for _, _, w in record_chunks(ChunkPool(1), 100, 3)} == {0}       # one worker
    assert threading.active_count() == before


def test_an_error_in_a_chunk_reaches_the_caller_and_the_pool_still_works(pool):
    def fn(worker, start, end):
        if start == 40:
            raise ZeroDivisionError(f"chunk {start}")
    with pytest.raises(ZeroDivisionError, match="chunk 40"):
        pool.run(fn, 100, 10)
    assert len(record_chunks(pool, 100, 10)) == 10


def test_a_call_from_inside_a_chunk_runs_inline_instead_of_deadlocking(pool):
    inner = []
    pool.run(lambda worker, start, end: inner.extend(record_chunks(pool, 4, 1)), 2, 1)
    assert len(inner) == 8 and {w for _, _, w in inner} == {0}


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill (POSIX)")
def test_ctrl_c_while_waiting_for_a_helper_raises_at_once():
    pool = ChunkPool(2)
    helper_busy = threading.Event()

    main = threading.main_thread().ident

    def fn(worker, start, end):
        if worker == 0:
            helper_busy.wait(5)          # make sure the helper holds the other chunk
        else:
            helper_busy.set()            # Ctrl-C in 0.2 s, while the caller waits for this chunk
            threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()
            time.sleep(2.0)              # a long chunk the caller would otherwise wait for
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        pool.run(fn, 2, 1)
    assert time.perf_counter() - started < 1.5
    time.sleep(2.0)                      # let the helper finish its chunk, then the pool works as before
    assert len(record_chunks(pool, 6, 1)) == 6
    pool.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_helpers(pool):
    record_chunks(pool, 10, 1)           # the parent's helpers are running
    child = os.fork()
    if child == 0:                       # the child has no helper threads until run() starts them
        os._exit(0 if len(record_chunks(pool, 10, 1)) == 10 else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_number_of_threads_follows_the_environment(monkeypatch):
    monkeypatch.setenv("NUMPYVAE_NUM_THREADS", "1")
    assert usable_cpus() == 1
    monkeypatch.delenv("NUMPYVAE_NUM_THREADS")
    assert usable_cpus() >= 1 and default_pool().workers >= 1
    with pytest.raises(ValueError, match="at least one worker"):
        ChunkPool(0)


def test_adam_is_bit_identical_on_any_number_of_threads():
    """Elementwise work: which thread updates which chunk cannot change a single bit."""
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(VAE().num_params).astype(np.float32) * 10.0 ** -k for k in range(4)]
    results = []
    for workers in (1, 2, 3):
        model = VAE(seed=0)                                   # 652,824 parameters: 10 chunks
        optimizer = Adam(model, pool=ChunkPool(workers))
        for g in grads:
            model.flat_grads[:] = g
            optimizer.step()
        results.append((model.flat_params.copy(), optimizer.m.copy(), optimizer.v.copy()))
        optimizer._pool.close()
    for params, m, v in results[1:]:
        assert np.array_equal(params, results[0][0]) and np.array_equal(m, results[0][1])
        assert np.array_equal(v, results[0][2])


def test_a_threaded_adam_step_allocates_nothing_that_stays():
    model = VAE(seed=0)
    pool = ChunkPool(2)
    optimizer = Adam(model, pool=pool)
    model.flat_grads[:] = 1e-3
    for _ in range(3):
        optimizer.step()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(50):
            optimizer.step()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pool.close()
    assert peak - before < 16 * 1024          # a task tuple, a reply queue, a counter: freed every step
    assert after - before < 2 * 1024


def test_adam_is_serial_unless_given_a_pool_and_always_on_the_fake_gpu():
    assert Adam(VAE(6, 5, 3))._pool.workers == 1
    assert Adam(VAE(6, 5, 3), pool=ChunkPool(2))._pool.workers == 2
    optimizer = Adam(VAE(6, 5, 3, backend="fakegpu"), pool=ChunkPool(2))
    assert optimizer._pool.workers == 1
    optimizer.step()

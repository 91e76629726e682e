"""The backend shim: explicit choice, a clear error for CuPy where it cannot run, an honest fake GPU."""
import numpy as np
import pytest

from numpyvae.backend import BackendError, cuda_unavailable_reason, get_backend


def test_numpy_backend_is_numpy():
    backend = get_backend("numpy")
    assert backend.xp is np and not backend.is_device


def test_auto_falls_back_to_numpy_without_a_gpu():
    if cuda_unavailable_reason() is None:
        pytest.skip("a CUDA device is usable here, so auto picks CuPy")
    assert get_backend("auto").name == "numpy"


def test_cupy_where_it_cannot_run_raises_one_clear_error():
    reason = cuda_unavailable_reason()
    if reason is None:
        pytest.skip("a CUDA device is usable here")
    with pytest.raises(BackendError) as error:
        get_backend("cupy")
    message = str(error.value)
    assert reason in message and "--backend numpy" in message and "\n" not in message
    # numpyvae is on no package index: the advice must be what works from a checkout
    assert "pip install -e '.[cuda]'" in message and "'numpyvae[cuda]'" not in message


def test_unknown_backend_name():
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        get_backend("tpu")


def test_fake_gpu_refuses_host_arrays_and_implicit_conversion():
    backend = get_backend("fakegpu")
    xp = backend.xp
    a = backend.to_device(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="fake GPU"):
        a + np.ones((2, 3), np.float32)              # forgot to_device
    with pytest.raises(TypeError, match="fake GPU"):
        xp.matmul(a, np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="fake GPU"):
        np.asarray(a)                                # forgot to_host
    out = xp.empty((2, 3), dtype=xp.float32)
    xp.add(a, 1.0, out=out)                          # scalars mix, as on CuPy
    assert np.array_equal(backend.to_host(out), np.full((2, 3), 2.0, np.float32))


def test_fake_gpu_counts_transfers_and_sync_reads():
    backend = get_backend("fakegpu")
    counters = backend.xp.counters
    before = counters.copy()
    a = backend.to_device(np.arange(4.0))
    total = a.sum()                                  # stays on the device
    assert counters - before == {"to_device": 1}
    float(total)
    backend.to_host(a)
    assert counters - before == {"to_device": 1, "sync": 1, "to_host": 1}


def test_device_copy_is_separate_memory():
    backend = get_backend("fakegpu")
    host = np.zeros(3)
    device = backend.to_device(host)
    host[0] = 7.0
    assert backend.to_host(device)[0] == 0.0


@pytest.mark.parametrize("name", ["numpy", "fakegpu"])
def test_rng_is_reproducible_per_seed(name):
    backend = get_backend(name)
    draws = []
    for seed in [(1, 2), (1, 2), (1, 3)]:
        out = backend.xp.empty((3, 4), dtype=backend.xp.float32)
        draws.append(backend.to_host(backend.standard_normal(backend.rng(seed), out)))
        uniform = backend.uniform(backend.rng(seed), backend.xp.empty((50,), dtype=backend.xp.float32))
        assert 0 <= uniform.min() and uniform.max() < 1 and backend.to_host(uniform).dtype == np.float32
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])
    assert draws[0].dtype == np.float32


def test_a_gpu_whose_libraries_cannot_load_is_reported_unusable(monkeypatch):
    """A driver and a device, but no cuBLAS: CuPy's device count says yes; numpyvae's probe says why not."""
    import sys
    import types

    class FailingCupy(types.SimpleNamespace):
        pass
    fake = FailingCupy(float32="float32")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))

    def missing_library(*args, **kwargs):
        raise RuntimeError("CuPy failed to load libcublas.so.12")
    fake.arange = missing_library
    monkeypatch.setitem(sys.modules, "cupy", fake)
    reason = cuda_unavailable_reason()
    assert reason is not None and "cannot run on it" in reason and "libcublas" in reason
    assert get_backend("auto").name == "numpy"
    with pytest.raises(BackendError, match="libcublas"):
        get_backend("cupy")

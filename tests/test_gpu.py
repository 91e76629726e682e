"""The device path: no transfers or syncs inside a step, no allocation on NumPy, and CuPy against NumPy.

The fake GPU (numpyvae.fakegpu) counts every host<->device copy and every read of a
device number, so the first tests run everywhere. Tests marked `gpu` need a real CUDA
device and skip, saying why, where there is none.
"""
import tracemalloc

import numpy as np
import pytest

from numpyvae import VAE, Adam, get_backend
from numpyvae.backend import cuda_unavailable_reason
from numpyvae.batches import DeviceDataset
from numpyvae.losses import LIKELIHOODS

CUDA_MISSING = cuda_unavailable_reason()   # None where CuPy can run


@pytest.fixture
def cupy():
    """The cupy module, or a skip that says why CuPy cannot run here."""
    if CUDA_MISSING is not None:
        pytest.skip(f"needs a CUDA device: {CUDA_MISSING}")
    import cupy
    return cupy


def fake_images(n=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("settings", [{"hidden_dims": (16,)}, {"arch": "conv", "hidden_dims": (4, 8)}],
                         ids=["dense", "conv"])
def test_fakegpu_training_step_makes_no_transfers_and_no_sync_reads(settings):
    backend = get_backend("fakegpu")
    counters = backend.xp.counters
    data = DeviceDataset(fake_images(), backend)                     # the one upload of the images
    model = VAE(latent_dim=2, backend=backend, seed=0, **settings)
    optimizer = Adam(model)
    total = backend.xp.zeros((), dtype=np.float64)                  # the epoch's loss, kept on the device
    batches = data.batches(16, shuffle=True, seed=(0, 1))           # the order crosses once, here
    for x in [next(batches) for _ in range(2)]:                     # warm-up: buffers allocated
        total += model.loss_and_grads(x)[0]
        optimizer.step()
    counters.clear()
    for x in batches:
        loss, _, _ = model.loss_and_grads(x)
        optimizer.step()
        total += loss
    assert dict(counters) == {}, "a training step moved data across or waited for the device"
    assert np.isfinite(backend.scalar(total))                       # read once, at the end of the epoch
    assert counters["sync"] + counters["to_host"] >= 1


@pytest.mark.parametrize("settings", [{}, {"num_classes": 10}] + [{"likelihood": name} for name in LIKELIHOODS]
                         + [{"arch": "conv"}, {"arch": "conv", "num_classes": 10}],
                         ids=lambda settings: ",".join(f"{k}={v}" for k, v in settings.items()) or "default")
def test_numpy_training_step_allocates_nothing_after_warmup(settings):
    model = VAE(seed=0, **settings)                                  # 784-400-20, float32
    optimizer = Adam(model)
    x = np.random.default_rng(0).uniform(0, 1, (128, 784)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 128) if model.conditional else None
    for _ in range(3):
        model.loss_and_grads(x, y=y)
        optimizer.step()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(20):
            model.loss_and_grads(x, y=y)
            optimizer.step()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What remains is NumPy's 32 KB iterator scratch for a broadcast operand (the bias add), freed
    # within the call, and small Python objects (views, 0-d loss sums). A fresh (B, H) activation
    # would be 200 KB, a (B, D) one 400 KB, an Adam-sized one 2.6 MB.
    assert peak - before < 64 * 1024
    assert after - before < 4 * 1024, "something kept growing from step to step"


def test_fused_kernels_are_used_on_cupy_only(monkeypatch):
    from numpyvae import losses
    model = VAE(6, 5, 3, backend="fakegpu")
    assert Adam(model)._fused is None
    assert not losses.is_cupy(model.xp)                   # so the likelihoods run their plain ufunc code

    def refuse(xp):
        raise AssertionError("a CuPy kernel was asked for off CuPy")
    for name in ("_fused_gaussian_grad",):
        monkeypatch.setattr(losses, name, refuse)
    for likelihood in losses.LIKELIHOODS:
        VAE(6, 5, 3, likelihood, backend="fakegpu").loss_and_grads(np.full((2, 6), 0.5))


def test_fused_kernels_build_without_a_device():
    """Constructing the kernels parses their signatures (no GPU needed); compiling them needs one."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    from numpyvae import losses, optim
    for kernel in (optim._fused_adam(cupy), losses._fused_gaussian_grad(cupy)):
        assert isinstance(kernel, cupy.ElementwiseKernel)


# -- on a real GPU -----------------------------------------------------------------------------

def _step(model, optimizer, x, eps):
    losses = model.loss_and_grads(x, eps=eps)
    grads = model.backend.to_host(model.flat_grads).copy()
    optimizer.step()
    return [model.backend.scalar(v) for v in losses], grads, model.backend.to_host(model.flat_params).copy()


@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_cupy_steps_match_numpy_steps(cupy, likelihood, dtype, rtol):
    rng = np.random.default_rng(0)
    models = [VAE(likelihood=likelihood, backend=name, dtype=dtype, seed=1) for name in ("numpy", "cupy")]
    optimizers = [Adam(model) for model in models]
    for _ in range(3):
        x, eps = rng.uniform(0, 1, (64, 784)), rng.standard_normal((64, 20))
        (l_np, g_np, p_np), (l_cp, g_cp, p_cp) = (_step(m, o, x, eps) for m, o in zip(models, optimizers))
        np.testing.assert_allclose(l_cp, l_np, rtol=rtol)
        np.testing.assert_allclose(g_cp, g_np, rtol=rtol, atol=rtol * np.abs(g_np).max())
        np.testing.assert_allclose(p_cp, p_np, rtol=rtol, atol=rtol * np.abs(p_np).max())



@pytest.mark.gpu
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_fused_adam_matches_the_plain_update(cupy, dtype, rtol):
    models = [VAE(40, 16, 4, backend="cupy", dtype=dtype, seed=3) for _ in range(2)]
    fused, plain = Adam(models[0], lr=1e-2), Adam(models[1], lr=1e-2)
    plain._fused = None                                   # the chunked ufunc code, run on CuPy arrays
    rng = np.random.default_rng(0)
    for _ in range(5):
        g = cupy.asarray(rng.standard_normal(models[0].num_params) * 10 ** rng.uniform(-4, 0))
        for model, optimizer in zip(models, (fused, plain)):
            model.flat_grads[...] = g
            optimizer.step()
    for a, b in ((fused.m, plain.m), (fused.v, plain.v), (models[0].flat_params, models[1].flat_params)):
        np.testing.assert_allclose(cupy.asnumpy(a), cupy.asnumpy(b), rtol=rtol, atol=rtol * float(abs(b).max()))



@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", [name for name, term in LIKELIHOODS.items() if hasattr(term, "plain_backward")])
def test_fused_loss_gradient_matches_the_plain_code(cupy, likelihood):
    term = LIKELIHOODS[likelihood]
    rng = np.random.default_rng(0)
    logits = cupy.asarray(8 * rng.standard_normal((32, 50)), dtype=cupy.float32)
    x = cupy.asarray(rng.uniform(0, 1, (32, 50)), dtype=cupy.float32)
    _, cache = term.forward(cupy, logits, x)
    fused, plain = term.backward(cupy, cache), term.plain_backward(cupy, cache)
    np.testing.assert_allclose(cupy.asnumpy(fused), cupy.asnumpy(plain), rtol=1e-5, atol=1e-6)

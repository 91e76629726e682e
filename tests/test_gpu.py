"""The device path: no transfers or syncs inside a step, no allocation on NumPy, and CuPy against NumPy.

The fake GPU (numpyvae.fakegpu) counts every host<->device copy and every read of a
device number, so the first tests run everywhere. Tests marked `gpu` need a real CUDA
device and skip, saying why, where there is none.
"""
import ast
import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from numpyvae import VAE, Adam, fakegpu, get_backend
from numpyvae.backend import Backend, cuda_unavailable_reason
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
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(20):
            model.loss_and_grads(x, y=y)
            optimizer.step()
        _, peak = tracemalloc.get_traced_memory()
        gc.collect()                # cyclic garbage (NumPy's as_strided leaves some each step) is no growth
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What remains is NumPy's 32 KB iterator scratch for a broadcast operand (the bias add), freed
    # within the call, and small Python objects (views, 0-d loss sums, the conv layers' caches and
    # the garbage of their strided views): 65 KB at most, measured, for the conv model. A fresh (B, Z)
    # code would be 10 KB more, a (B, H) activation 200 KB, a (B, D) one 400 KB, an Adam-sized one 2.6 MB.
    assert peak - before < 72 * 1024
    assert after - before < 4 * 1024, "something kept growing from step to step"


@pytest.mark.parametrize("draw", ["standard_normal", "uniform"])
def test_cupy_random_draws_fill_their_buffer_in_place(draw):
    """The backend's CuPy draws, run on the fake device standing in for the cupy module: the noise
    goes straight into the step's buffer (a captured CUDA graph can allocate nothing), and a draw
    that made an array and copied it in, or drew on the host, fails here."""
    backend = Backend("cupy", fakegpu.namespace, is_device=True)
    out = backend.xp.zeros((128, 20), dtype=np.float32)
    rng = backend.rng((0, 1, 1))
    fakegpu.namespace.counters.clear()
    assert getattr(backend, draw)(rng, out) is out
    assert dict(fakegpu.namespace.counters) == {}, "the draw allocated, or crossed between host and device"
    values = backend.to_host(out)
    assert values.dtype == np.float32 and np.unique(values).size > 2000


def test_fake_device_counts_allocations_but_not_views():
    xp = fakegpu.namespace
    a = xp.zeros((4, 5), dtype=np.float32)
    xp.counters.clear()
    a[1:], a.T, a.reshape(20), a.sum(), xp.add(a, 1, out=a)            # views, a 0-d sum, in place
    assert xp.counters["alloc"] == 0
    a + 1, a.copy(), xp.random.default_rng(0).standard_normal((3,), dtype=np.float32)
    assert xp.counters["alloc"] == 3


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


def xp_names_used_by_the_package():
    """Every NAME in `xp.NAME` (or `self.xp.NAME`) in numpyvae's modules, but the fake device's own."""
    names = set()
    for path in (Path(__file__).resolve().parents[1] / "numpyvae").glob("*.py"):
        if path.name == "fakegpu.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (
                    (isinstance(node.value, ast.Name) and node.value.id == "xp")
                    or (isinstance(node.value, ast.Attribute) and node.value.attr == "xp")):
                names.add(node.attr)
    return names


def test_every_array_function_the_package_calls_exists_in_cupy():
    """The fake device forwards any NumPy function; CuPy raises AttributeError for one it lacks (GPU-NOTES).
    Importing CuPy needs no GPU, so this runs wherever CuPy is installed."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    names = xp_names_used_by_the_package()
    assert {"matmul", "take", "copyto", "vdot", "cuda"} <= names          # the scan sees the package's calls
    assert sorted(name for name in names if not hasattr(cupy, name)) == []


def test_fused_kernels_build_without_a_device():
    """Constructing the kernels parses their signatures (no GPU needed); compiling them needs one."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    from numpyvae import losses, optim
    for kernel in (optim._fused_adam(cupy), losses._fused_gaussian_grad(cupy)):
        assert isinstance(kernel, cupy.ElementwiseKernel)


# -- on a real GPU -----------------------------------------------------------------------------

# One step on a device backend against the same step on NumPy, from the same weights, Adam
# state, batch and eps. Float32 tolerances, from the float32 step's own error: against a
# float64 step from the same state (2026-12-01, NumPy, 20 batches per likelihood) it measured at
# most 3.4e-6 relative in the loss and 6.2e-7 of a tensor's largest entry in any gradient entry.
# Two float32 implementations that sum in different orders (cuBLAS, CuPy's tree reductions) may
# each be that far off, so 1e-5 of the gradients' scale leaves ~10x room, while TF32 matrix
# products (10-bit mantissas, errors ~1e-4) or a wrong kernel fail it. The loss is a sum of B x D
# per-pixel terms of order 1 that can cancel (the continuous Bernoulli's ~1e2 is left of terms
# summing to ~3e4), so its bound is 1e-5 relative or 1e-7 nats per term (5e-3 nats for a batch
# of 64; the continuous Bernoulli's float32 error measured 3.7e-4). Adam's update is not compared
# entry by entry with a tolerance: its first steps move each weight by about +-lr whatever
# |g|, so an entry whose gradient is zero within rounding may rightly step differently on
# the two backends (by up to 2 lr). Such entries are allowed, but only where the gradient is
# within TOLERANCES' gradient bound of 0, and only 1 in 10,000; every other weight must land
# within 1% of a step of NumPy's.
TOLERANCES = {np.dtype(np.float64): {"loss": 1e-10, "loss_per_term": 1e-15, "grad": 1e-10},
              np.dtype(np.float32): {"loss": 1e-5, "loss_per_term": 1e-7, "grad": 1e-5}}


def compare_step_with_numpy(device, dtype, likelihood, steps=3, batch=64, lr=1e-3, samples=None, **settings):
    """Take `steps` steps on `device` and on NumPy, each from NumPy's weights and Adam state; assert they agree.

    samples=K steps on the IWAE bound with K samples per image; settings: more of the model's (a prior, say)."""
    rng = np.random.default_rng(0)
    tolerance = TOLERANCES[np.dtype(dtype)]
    reference, model = (VAE(likelihood=likelihood, backend=name, dtype=dtype, seed=1, **settings)
                        for name in ("numpy", device))
    objective = {} if samples is None else {"objective": "iwae"}
    noise = (batch, 20) if samples is None else (samples, batch, 20)
    reference_adam, adam = Adam(reference, lr=lr), Adam(model, lr=lr)
    to_host, to_device = model.backend.to_host, model.backend.to_device
    for _ in range(steps):
        model.flat_params[...] = to_device(reference.flat_params)       # the same weights and Adam state
        adam.m[...], adam.v[...], adam.t = to_device(reference_adam.m), to_device(reference_adam.v), reference_adam.t
        before = reference.flat_params.copy()
        x, eps = rng.uniform(0, 1, (batch, 784)), rng.standard_normal(noise)
        expected = [float(v) for v in reference.loss_and_grads(x, eps=eps, **objective)]
        got = [model.backend.scalar(v) for v in model.loss_and_grads(x, eps=eps, **objective)]
        np.testing.assert_allclose(got, expected, rtol=tolerance["loss"], atol=tolerance["loss_per_term"] * x.size)
        grads = to_host(model.flat_grads)
        for name, (start, stop) in _slices(reference).items():
            scale = np.abs(reference.flat_grads[start:stop]).max()
            np.testing.assert_allclose(grads[start:stop], reference.flat_grads[start:stop], rtol=0,
                                       atol=tolerance["grad"] * scale, err_msg=f"gradient of {name}")
        reference_adam.step()
        adam.step()
        step, reference_step = to_host(model.flat_params) - before, reference.flat_params - before
        off = np.abs(step - reference_step) > 0.01 * lr
        near_zero = np.zeros_like(off)
        for start, stop in _slices(reference).values():
            g = reference.flat_grads[start:stop]
            near_zero[start:stop] = np.abs(g) <= tolerance["grad"] * np.abs(g).max()
        assert off.mean() <= 1e-4, f"{off.sum()} of {off.size} weights stepped differently from NumPy's"
        assert near_zero[off].all(), "a weight with a clearly nonzero gradient stepped differently from NumPy's"


def _slices(model):
    """Parameter name -> (start, stop) in the flat buffers."""
    offsets, start = {}, 0
    for name, shape in model.shapes.items():
        offsets[name] = (start, start + int(np.prod(shape)))
        start += int(np.prod(shape))
    return offsets


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fakegpu_steps_match_numpy_steps(dtype):
    """The comparison below, rehearsed where there is no GPU (the fake device computes with NumPy)."""
    compare_step_with_numpy("fakegpu", dtype, "bernoulli", steps=2)


@pytest.mark.parametrize("samples", [None, 3], ids=["elbo", "iwae"])
def test_fakegpu_vampprior_steps_match_numpy_steps(samples):
    compare_step_with_numpy("fakegpu", np.float32, "bernoulli", steps=2, samples=samples, prior="vamp",
                            pseudo_inputs=50)


def test_the_step_comparison_catches_tf32_matrix_products(monkeypatch):
    """The float32 bounds are not vacuous: matrix products with TF32's 10-bit mantissas (what an
    Ampere or Hopper GPU does when TF32 is switched on) fail them."""
    def tf32_matmul(a, b, out=None):
        rounded = [np.asarray(v._data, np.float32).view(np.uint32) & np.uint32(0xFFFFE000) for v in (a, b)]
        result = np.matmul(*(r.view(np.float32) for r in rounded))
        if out is None:
            return fakegpu.FakeDeviceArray(result)
        out._data[...] = result
        return out
    monkeypatch.setattr(fakegpu.namespace, "matmul", tf32_matmul, raising=False)
    with pytest.raises(AssertionError):
        compare_step_with_numpy("fakegpu", np.float32, "bernoulli", steps=1)


@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cupy_steps_match_numpy_steps(cupy, likelihood, dtype):
    compare_step_with_numpy("cupy", dtype, likelihood)


@pytest.mark.gpu
@pytest.mark.parametrize("samples", [None, 3], ids=["elbo", "iwae"])
@pytest.mark.parametrize("sigma", ["learned", "optimal"])
def test_cupy_calibrated_gaussian_steps_match_numpy_steps(cupy, sigma, samples):
    """The calibrated Gaussian's step (its sigma learned, or solved from the batch) on the GPU, float32."""
    compare_step_with_numpy("cupy", np.float32, "gaussian", samples=samples, sigma=sigma)


@pytest.mark.parametrize("sigma", ["learned", "optimal"])
def test_fakegpu_calibrated_gaussian_steps_match_numpy_steps(sigma):
    compare_step_with_numpy("fakegpu", np.float32, "gaussian", steps=2, samples=3, sigma=sigma)


@pytest.mark.gpu
@pytest.mark.parametrize("samples", [None, 3], ids=["elbo", "iwae"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cupy_vampprior_steps_match_numpy_steps(cupy, samples, dtype):
    """The VampPrior's step (the encoder run twice, the mixture's matrix products) on the GPU."""
    compare_step_with_numpy("cupy", dtype, "bernoulli", samples=samples, prior="vamp", pseudo_inputs=50)


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


@pytest.mark.gpu
def test_auto_picks_cupy_where_a_gpu_is_usable(cupy):
    assert get_backend("auto").name == "cupy"


@pytest.mark.gpu
def test_cupy_noise_is_seeded_and_drawn_into_its_buffer_without_allocating(cupy):
    """What exact resume rests on (the same seed, the same numbers, in any process) and what a captured
    CUDA graph needs (no allocation), on CuPy's own generator."""
    backend = get_backend("cupy")
    a, b, c = (cupy.empty((256, 20), dtype=cupy.float32) for _ in range(3))
    first, again, other = backend.rng((0, 1, 1)), backend.rng((0, 1, 1)), backend.rng((0, 2, 1))
    pool, sizes = cupy.get_default_memory_pool(), []

    def counting_malloc(size):
        sizes.append(size)
        return pool.malloc(size)
    with cupy.cuda.using_allocator(counting_malloc):
        assert backend.standard_normal(first, a) is a
    assert sizes == [], f"drawing the noise allocated {sizes} bytes"
    backend.standard_normal(again, b)
    backend.standard_normal(other, c)
    assert bool((a == b).all()) and not bool((a == c).all())
    values = cupy.asnumpy(a)
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05
    u = cupy.asnumpy(backend.uniform(backend.rng(3), cupy.empty((64, 784), dtype=cupy.float32)))
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert np.unique(u).size > 40000, "the uniform draw repeated numbers (CuPy's random() without a size)"

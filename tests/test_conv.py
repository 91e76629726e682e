"""Conv2d and ConvTranspose2d: PyTorch parity, finite differences, caught mutations, devices, no allocation."""
import json
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from numpyvae import conv, fakegpu, gradcheck, im2col, layers
from numpyvae.gradcheck import numerical_vjp, rel_error
from numpyvae.conv import Conv2d, ConvTranspose2d
from numpyvae.layers import ReLU, Workspace
from numpyvae.vae import init_params

# (batch, in channels, out channels, kernel, stride, padding, output_padding, height, width):
# every stride 1..3, padding 0..k-1, output_padding 0..s-1, kernels 1..5, odd and non-square images,
# windows that do not tile the image exactly (the last rows and columns are never read), batch 1
CASES = [
    (1, 1, 1, 1, 1, 0, 0, 5, 5),
    (2, 3, 4, 3, 1, 1, 0, 7, 9),
    (1, 2, 3, 3, 2, 1, 1, 9, 7),
    (3, 1, 5, 2, 2, 0, 1, 8, 11),
    (2, 4, 2, 5, 3, 2, 2, 13, 10),
    (1, 3, 3, 4, 3, 0, 1, 11, 6),
    (2, 2, 3, 3, 2, 2, 0, 5, 6),
    (4, 32, 16, 3, 2, 1, 1, 14, 14),       # the conv VAE's own layer shape, smaller
]


def run_layer(kind, x, W, b, stride, padding, output_padding, dy, xp=np):
    """(y, dx, dW, db) from numpyvae's forward and backward."""
    dW, db = xp.empty(W.shape, dtype=W.dtype), xp.empty(b.shape, dtype=b.dtype)
    if kind == "conv":
        y, cache = conv.conv2d_forward(xp, x, W, b, stride, padding)
        dx = conv.conv2d_backward(xp, dy, cache, W, dW, db)
    else:
        y, cache = conv.conv_transpose2d_forward(xp, x, W, b, stride, padding, output_padding)
        dx = conv.conv_transpose2d_backward(xp, dy, cache, W, dW, db)
    return y, dx, dW, db


def torch_layer(kind, x, W, b, stride, padding, output_padding, dy):
    """The same through torch.nn.functional and autograd, float64."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tx, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    if kind == "conv":
        ty = F.conv2d(tx, tW, tb, stride=stride, padding=padding)
    else:
        ty = F.conv_transpose2d(tx, tW, tb, stride=stride, padding=padding, output_padding=output_padding)
    if dy is None:
        return ty.detach().numpy(), None, None, None
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy(), tW.grad.numpy(), tb.grad.numpy()


def random_problem(kind, case, seed=0):
    batch, c_in, c_out, k, stride, padding, output_padding, H, W = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c_in, H, W))
    w_shape = (c_out, c_in, k, k) if kind == "conv" else (c_in, c_out, k, k)
    weights, bias = rng.standard_normal(w_shape), rng.standard_normal(c_out)
    if kind == "conv":
        out = (c_out, im2col.conv_output_size(H, k, stride, padding),
               im2col.conv_output_size(W, k, stride, padding))
    else:
        out = (c_out, conv.conv_transpose_output_size(H, k, stride, padding, output_padding),
               conv.conv_transpose_output_size(W, k, stride, padding, output_padding))
    dy = rng.standard_normal((batch,) + out)
    return x, weights, bias, stride, padding, output_padding, dy


@pytest.fixture(params=["layout by rule", "channels-first patches", "batch-last patches"])
def patch_layout(request, monkeypatch):
    """Run a test with im2col's layout as patches_batch_last chooses it, and forced either way."""
    forced = {"channels-first patches": False, "batch-last patches": True}.get(request.param)
    if forced is not None:
        monkeypatch.setattr(conv, "patches_batch_last", lambda rows, out_channels: forced)
    return request.param


@pytest.mark.parametrize("kind", ["conv", "transpose"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}c{}o{}k{}s{}p{}op{}_{}x{}".format(*c))
def test_forward_and_every_gradient_equal_pytorch(kind, case, patch_layout):
    problem = random_problem(kind, case)
    ours = run_layer(kind, *problem)
    theirs = torch_layer(kind, *problem)
    for label, a, t in zip(("y", "dx", "dW", "db"), ours, theirs):
        assert a.shape == t.shape, label
        assert rel_error(a, t) < 1e-9, label


def test_random_shapes_equal_pytorch():
    """Forty more shapes drawn at random, every size legal for the layer."""
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 40:
        k, s = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        batch, c_in, c_out = (int(n) for n in rng.integers(1, [4, 5, 5]))
        padding, output_padding, H, W = (int(n) for n in rng.integers([0, 0, k, k], [k, s, 16, 16]))
        case = (batch, c_in, c_out, k, s, padding, output_padding, H, W)
        for kind in ("conv", "transpose"):
            try:
                problem = random_problem(kind, case, seed=checked)
            except ValueError:          # padding too large for this image: no such layer
                continue
            for label, a, t in zip("y dx dW db".split(), run_layer(kind, *problem), torch_layer(kind, *problem)):
                assert rel_error(a, t) < 1e-9, (kind, case, label)
            checked += 1


# -- finite differences --------------------------------------------------------------------------

def finite_difference_errors(kind, case, seed=0):
    x, W, b, stride, padding, output_padding, dy = random_problem(kind, case, seed)
    _, dx, dW, db = run_layer(kind, x, W, b, stride, padding, output_padding, dy)
    forward = lambda: run_layer(kind, x, W, b, stride, padding, output_padding, dy)[0]
    return {label: rel_error(analytic, numerical_vjp(forward, wrt, dy))
            for label, analytic, wrt in (("dx", dx, x), ("dW", dW, W), ("db", db, b))}


@pytest.mark.parametrize("kind", ["conv", "transpose"])
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[4], CASES[6]],
                         ids=["s1p1", "s2p1op1", "k5s3p2op2", "s2p2"])
def test_gradients_match_finite_differences(kind, case):
    errors = finite_difference_errors(kind, case)
    assert max(errors.values()) < gradcheck.TOLERANCE[np.dtype(np.float64)], errors


def conv_layer_rows(seed=0):
    """gradcheck.check_layer's rows for a Conv2d and a ConvTranspose2d at stride 2 with padding and odd sizes:
    every kernel offset, the padding and output_padding are exercised."""
    return (gradcheck.check_layer(Conv2d("conv", 3, 4, 3, stride=2, padding=1), (3, 7, 6), seed=seed)
            + gradcheck.check_layer(ConvTranspose2d("deconv", 4, 3, 3, stride=2, padding=1, output_padding=1),
                                    (4, 4, 3), seed=seed))


def test_gradcheck_table_has_conv_rows_that_pass():
    rows = {r.name: r for r in conv_layer_rows()}
    for name in ("conv", "deconv"):
        for label in (" dx", ".W", ".b"):
            row = rows[f"{name}{label}"]
            assert row.passed and row.checked == math.prod(row.shape)


# -- the checks catch wrong gradients ------------------------------------------------------------

def flipped_kernel_input_grad(xp, dy_bl, W, input_shape, stride, padding, out=None, bias=None, ws=None,
                              name="conv2d"):
    """The classic slip: the input gradient as a convolution with the kernel turned by 180 degrees,
    on top of reading the patches in place (the flip belongs to one formulation or the other)."""
    return ORIGINAL_INPUT_GRAD(xp, dy_bl, W[:, :, ::-1, ::-1], input_shape, stride, padding, out, bias, ws, name)


def wrong_stride_col2im(xp, cols, image_size, stride, padding, out=None):
    """col2im adding back at stride 1 whatever the forward's stride was."""
    return ORIGINAL_COL2IM(xp, cols, image_size, 1, padding, out)


ORIGINAL_INPUT_GRAD, ORIGINAL_COL2IM = conv.conv2d_input_grad, im2col.col2im
MUTATION_CASE = (2, 3, 4, 3, 2, 1, 1, 9, 7)


@pytest.mark.parametrize("mutant", ["conv2d_input_grad", "col2im"])
def test_a_broken_input_gradient_is_caught(monkeypatch, mutant):
    broken = {"conv2d_input_grad": flipped_kernel_input_grad, "col2im": wrong_stride_col2im}[mutant]
    tolerance = gradcheck.TOLERANCE[np.dtype(np.float64)]
    assert finite_difference_errors("conv", MUTATION_CASE)["dx"] < tolerance      # correct before
    monkeypatch.setattr(conv, mutant, broken)   # conv.py looks both up by name
    # the conv's dx and the transposed conv's forward (which is the same routine) both go wrong:
    assert finite_difference_errors("conv", MUTATION_CASE)["dx"] > 1e-2
    rows = {r.name: r for r in conv_layer_rows()}
    assert not rows["conv dx"].passed
    assert rows["conv.W"].passed             # the mutation touches the input gradient only
    problem = random_problem("transpose", MUTATION_CASE)
    assert rel_error(run_layer("transpose", *problem)[0], torch_layer("transpose", *problem)[0]) > 1e-2


def test_a_flipped_kernel_in_the_forward_is_caught(monkeypatch):
    original = conv.conv2d_product
    monkeypatch.setattr(conv, "conv2d_product",
                        lambda xp, cols, W, out=None: original(xp, cols, W[:, :, ::-1, ::-1], out))
    for kind in ("conv", "transpose"):        # the transposed conv's dx is the conv's forward
        problem = random_problem(kind, MUTATION_CASE)
        ours, theirs = run_layer(kind, *problem), torch_layer(kind, *problem)
        assert rel_error(ours[0 if kind == "conv" else 1], theirs[0 if kind == "conv" else 1]) > 1e-2


# -- layer entries ---------------------------------------------------------------------------------

def test_entries_shapes_and_fan_in_match_pytorch():
    torch = pytest.importorskip("torch")
    conv, deconv = Conv2d("c", 3, 5, 3, stride=2, padding=1), ConvTranspose2d("t", 5, 3, 3, 2, 1, 1)
    assert conv.parameters() == {"c.W": (5, 3, 3, 3), "c.b": (5,)}
    assert deconv.parameters() == {"t.W": (5, 3, 3, 3), "t.b": (3,)}
    fan_in = torch.nn.init._calculate_fan_in_and_fan_out
    assert conv.fan_in == fan_in(torch.nn.Conv2d(3, 5, 3).weight)[0] == 27
    assert deconv.fan_in == fan_in(torch.nn.ConvTranspose2d(5, 3, 3).weight)[0] == 27 // 3 * 3
    assert ConvTranspose2d("t", 7, 2, 3).fan_in == fan_in(torch.nn.ConvTranspose2d(7, 2, 3).weight)[0] == 18
    # output_shape agrees with what forward makes and with PyTorch, on the conv VAE's path 28 -> 14 -> 7 -> 14 -> 28
    # and on an odd width (29 -> 15 -> 8 -> 16 -> 32: output_padding cannot give an odd size back)
    path = [(Conv2d("e1", 1, 32, 3, 2, 1), torch.nn.Conv2d(1, 32, 3, 2, 1)),
            (Conv2d("e2", 32, 64, 3, 2, 1), torch.nn.Conv2d(32, 64, 3, 2, 1)),
            (ConvTranspose2d("d1", 64, 32, 3, 2, 1, 1), torch.nn.ConvTranspose2d(64, 32, 3, 2, 1, 1)),
            (ConvTranspose2d("d2", 32, 1, 3, 2, 1, 1), torch.nn.ConvTranspose2d(32, 1, 3, 2, 1, 1))]
    for start, end in (((1, 28, 28), (1, 28, 28)), ((1, 28, 29), (1, 28, 32))):
        shape = start
        for layer, torch_layer in path:
            params = {n: np.zeros(s) for n, s in layer.parameters().items()}
            y, _ = layer.forward(np, params, np.zeros((1,) + shape))
            expected = tuple(torch_layer(torch.zeros((1,) + shape)).shape[1:])
            assert y.shape[1:] == layer.output_shape(shape) == expected
            shape = layer.output_shape(shape)
        assert shape == end


@pytest.mark.parametrize("layer_type", ["Conv2d", "ConvTranspose2d"])
def test_init_bound_matches_pytorch(layer_type):
    """init_params draws W and b uniform in +-1/sqrt(fan_in), the bound PyTorch's layers use."""
    torch = pytest.importorskip("torch")
    ours = getattr(conv, layer_type)("l", 40, 6, 3)
    theirs = getattr(torch.nn, layer_type)(40, 6, 3)
    bound = 1 / math.sqrt(ours.fan_in)
    flat = init_params([ours], seed=0)
    W, b = flat[:40 * 6 * 9], flat[40 * 6 * 9:]
    for values, torch_values in ((W, theirs.weight), (b, theirs.bias)):
        torch_values = torch_values.detach().numpy()
        assert np.abs(values).max() <= bound and np.abs(torch_values).max() <= bound
        if values.size > 100:        # enough draws to come near the edge
            assert np.abs(values).max() > 0.97 * bound and np.abs(torch_values).max() > 0.97 * bound


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="output_padding must be less than the stride"):
        ConvTranspose2d("t", 2, 2, 3, stride=2, output_padding=2)
    for settings in ((0, 2, 3, 1, 0), (2, 2, 0, 1, 0), (2, 2, 3, 0, 0), (2, 2, 3, 1, -1), (2, 2, 2.5, 1, 0)):
        with pytest.raises(ValueError, match="must be a whole number"):
            Conv2d("c", *settings)
        with pytest.raises(ValueError, match="must be a whole number"):
            ConvTranspose2d("t", *settings)
    with pytest.raises(ValueError, match="stride must be"):
        conv.conv2d_forward(np, np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1), stride=0)
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d_forward(np, np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 5, 5)), np.zeros(1))
    with pytest.raises(ValueError, match="expects input"):
        conv.conv2d_forward(np, np.zeros((1, 2, 8, 8)), np.zeros((1, 3, 3, 3)), np.zeros(1))


# -- devices and buffers -----------------------------------------------------------------------------

def test_fake_device_gives_the_same_numbers_and_catches_host_arrays(patch_layout):
    xp = fakegpu.namespace
    for kind in ("conv", "transpose"):
        problem = random_problem(kind, MUTATION_CASE)
        x, W, b, s, p, op, dy = problem
        expected = run_layer(kind, *problem)
        on_device = [xp.asarray(a) for a in (x, W, b)] + [s, p, op, xp.asarray(dy)]
        xp.counters.clear()
        got = run_layer(kind, *on_device, xp=xp)
        # without a workspace the layer allocates its outputs ("alloc"); it must never move or wait
        assert not {k: n for k, n in xp.counters.items() if k != "alloc"}, "a transfer or a sync inside a conv layer"
        for a, e in zip(got, expected):
            assert isinstance(a, fakegpu.FakeDeviceArray)
            np.testing.assert_array_equal(a.get(), e)
        with pytest.raises(TypeError, match="host numpy.ndarray"):    # forgotten transfer of the input
            run_layer(kind, x, *on_device[1:], xp=xp)
        with pytest.raises(TypeError, match="host numpy.ndarray"):    # or of the weights
            run_layer(kind, on_device[0], W, *on_device[2:], xp=xp)


def conv_stack():
    """A small encoder-decoder of conv entries, with its parameters and gradients as views of flat buffers."""
    stack = [Conv2d("e1", 2, 8, 3, 2, 1), ReLU("r1"), Conv2d("e2", 8, 16, 3, 2, 1), ReLU("r2"),
             ConvTranspose2d("d1", 16, 8, 3, 2, 1, 1), ReLU("r3"), ConvTranspose2d("d2", 8, 2, 3, 2, 1, 1)]
    shapes = {n: s for layer in stack for n, s in layer.parameters().items()}
    flat = init_params(stack, seed=0).astype(np.float32)
    flat_grads = np.zeros_like(flat)
    params, grads, offset = {}, {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        params[name] = flat[offset:offset + size].reshape(shape)
        grads[name] = flat_grads[offset:offset + size].reshape(shape)
        offset += size
    return stack, params, grads


def test_training_steps_allocate_nothing_after_the_first(patch_layout):
    stack, params, grads = conv_stack()
    ws = Workspace(np, np.float32)
    x = np.random.default_rng(0).standard_normal((32, 2, 28, 28)).astype(np.float32)

    def step():
        y, caches = layers.sequence_forward(np, stack, params, x, ws)
        assert y.shape == x.shape
        layers.sequence_backward(np, stack, params, grads, y, caches, ws, need_dx=False)
    step()                                               # the first step allocates the buffers
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(5):
            step()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What remains is NumPy's ufunc iterator scratch, freed within each call: up to 8192 elements
    # (32 KB in float32) per operand that is not one contiguous block, whatever the batch size;
    # col2im's strided add has three such operands. The smallest activation here, 32 x 8 x 14 x 14
    # x 4 bytes, is 200 KB, the patches of e2 577 KB: a fresh one of either would show.
    assert peak - before < 128 * 1024
    assert after - before < 4 * 1024, "something kept growing from step to step"


def test_without_a_workspace_each_call_gets_fresh_arrays():
    problem = random_problem("conv", MUTATION_CASE)
    first, second = run_layer("conv", *problem), run_layer("conv", *problem)
    assert all(not np.shares_memory(a, b) for a, b in zip(first, second))


def test_layer_benchmark_runs_and_writes_its_report(tmp_path):
    """benchmarks/bench_conv_layers.py --quick: a smoke test of the script, not a timing."""
    pytest.importorskip("torch")
    pytest.importorskip("threadpoolctl")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_conv_layers.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "conv_layers.json").read_text())
    rows = report["runs"][0]["rows"]
    assert [row["layer"] for row in rows] == ["conv 1->32, 28->14", "conv 32->64, 14->7",
                                              "convT 64->32, 7->14", "convT 32->1, 14->28"]
    assert all(row["numpyvae_forward_ms"] > 0 and row["torch_backward_ms"] > 0 for row in rows)
    assert all(row["numpyvae_pieces_ms"]["products (BLAS)"] > 0 for row in rows)
    assert "| all four, forward + backward |" in (tmp_path / "conv_layers.md").read_text()


# -- PyTorch's defaults -------------------------------------------------------------------------------

def test_functional_defaults_are_pytorchs():
    """conv2d_forward and conv_transpose2d_forward given only x, W, b equal PyTorch's functions given the same."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    x, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal(4)
    W, Wt = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((3, 4, 3, 3))
    y, _ = conv.conv2d_forward(np, x, W, b)
    expected = F.conv2d(*map(torch.tensor, (x, W, b))).numpy()
    assert y.shape == expected.shape == (2, 4, 5, 4)
    assert rel_error(y, expected) < 1e-10
    y, _ = conv.conv_transpose2d_forward(np, x, Wt, b)
    expected = F.conv_transpose2d(*map(torch.tensor, (x, Wt, b))).numpy()
    assert y.shape == expected.shape == (2, 4, 9, 8)
    assert rel_error(y, expected) < 1e-10


@pytest.mark.parametrize("layer_type, output_shape", [("Conv2d", (3, 6, 6)), ("ConvTranspose2d", (3, 10, 10))])
def test_entry_defaults_are_pytorchs(layer_type, output_shape):
    """Conv2d("c", 2, 3, 3) and ConvTranspose2d("c", 2, 3, 3) shape and compute as torch.nn's with defaults do."""
    torch = pytest.importorskip("torch")
    ours, theirs = getattr(conv, layer_type)("c", 2, 3, 3), getattr(torch.nn, layer_type)(2, 3, 3).double()
    x = np.random.default_rng(12).standard_normal((2, 2, 8, 8))
    expected = theirs(torch.tensor(x)).detach().numpy()
    assert ours.output_shape((2, 8, 8)) == expected.shape[1:] == output_shape
    params = {"c.W": theirs.weight.detach().numpy(), "c.b": theirs.bias.detach().numpy()}
    y, _ = ours.forward(np, params, x)
    assert y.shape == expected.shape
    assert rel_error(y, expected) < 1e-10


ENTRIES = [(ReLU("r"), (2, 3, 5, 5)), (layers.Reshape("s", (3, 25)), (2, 3, 5, 5)),
           (Conv2d("c", 3, 4, 3, 2, 1), (2, 3, 5, 5)), (ConvTranspose2d("t", 3, 4, 3, 2, 1, 1), (2, 3, 5, 5))]


@pytest.mark.parametrize("layer, input_shape", ENTRIES, ids=["ReLU", "Reshape", "Conv2d", "ConvTranspose2d"])
def test_backward_returns_dx_by_default(layer, input_shape):
    """An entry's backward called without need_dx returns dx, the same as with need_dx=True (as Linear's does)."""
    rng = np.random.default_rng(13)
    params = {name: rng.standard_normal(shape) for name, shape in layer.parameters().items()}
    grads = {name: np.empty(shape) for name, shape in layer.parameters().items()}
    x = rng.standard_normal(input_shape)
    y, cache = layer.forward(np, params, x)
    dy = rng.standard_normal(y.shape)
    by_default = layer.backward(np, params, grads, dy, cache)
    assert by_default is not None and by_default.shape == x.shape
    np.testing.assert_array_equal(by_default, layer.backward(np, params, grads, dy, cache, need_dx=True))


# -- the building blocks called alone (the layers always pass buffers; readers may not) ---------------

def test_pad_by_default_is_np_pad_in_a_fresh_nchw_array():
    """pad(np, x, p) is np.pad's zero border, a new C-contiguous (B, C, H + 2p, W + 2p) array."""
    x = np.random.default_rng(14).standard_normal((2, 3, 5, 4))
    expected = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    padded = im2col.pad(np, x, 2)
    assert padded.shape == (2, 3, 9, 8) and padded.flags.c_contiguous
    np.testing.assert_array_equal(padded, expected)


def test_pad_batch_last_is_np_pad_stored_batch_last():
    """pad(np, x, p, batch_last=True) holds the same padded images, in a fresh (C, H + 2p, W + 2p, B) array."""
    x = np.random.default_rng(15).standard_normal((2, 3, 5, 4))
    padded = im2col.pad(np, x, 2, batch_last=True)                  # p = 2, so that 2 p and 2 differ
    assert padded.shape == (2, 3, 9, 8)
    assert padded.transpose(1, 2, 3, 0).flags.c_contiguous            # the storage is (C, H + 2p, W + 2p, B)
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))))


def test_padding_wider_than_the_image_zeroes_the_whole_border():
    """A 1 x 1 image padded by 2 (PyTorch allows it): every border pixel of a reused, dirty buffer becomes 0."""
    x = np.full((1, 1, 1, 1), 7.0)
    dirty = np.full((1, 1, 5, 5), np.nan)                 # a workspace buffer holds the last step's numbers
    np.testing.assert_array_equal(im2col.pad(np, x, 2, out=dirty), np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))))


def test_relu_backward_leaves_dy_alone():
    """relu_backward without a buffer returns a new array: the caller's dy is not overwritten with dx."""
    x = np.array([[-1.0, 2.0, -3.0, 4.0]])
    _, cache = layers.relu_forward(np, x)
    dy = np.array([[1.0, 1.0, 1.0, 1.0]])
    dx = layers.relu_backward(np, dy, cache)
    np.testing.assert_array_equal(dx, [[0.0, 1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(dy, [[1.0, 1.0, 1.0, 1.0]])


@pytest.mark.parametrize("batch_last", [False, True], ids=["channels first", "batch last"])
def test_the_padded_copy_is_the_whole_padded_image(batch_last):
    """The workspace's `{name}.padded` holds x padded whole, (B, C, H + 2p, W + 2p) or batch-last: a buffer a
    column short would still fill, and the windows would read past its end (as_strided checks nothing)."""
    x = np.random.default_rng(16).standard_normal((2, 1, 5, 4))
    ws = Workspace(np, np.float64)
    cols = conv._patches(np, x, 3, 1, 2, batch_last, ws, "c")
    B, C, H, W = x.shape
    padded = ws.get("c.padded", (C, H + 4, W + 4, B) if batch_last else (B, C, H + 4, W + 4), x.dtype)
    image = padded.transpose(3, 0, 1, 2) if batch_last else padded
    np.testing.assert_array_equal(image, np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))))
    expected = patches_by_indexing(x, 3, 1, 2)                       # (C, k, k, B, Ho, Wo)
    np.testing.assert_array_equal(cols, expected.transpose(0, 1, 2, 4, 5, 3) if batch_last else expected)


def patches_by_indexing(x, k, s, p):
    """cols[c, u, v, b, i, j] = x_padded[b, c, s i + u, s j + v], by fancy indexing: a reference for im2col."""
    xp_ = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    Ho, Wo = (x.shape[2] + 2 * p - k) // s + 1, (x.shape[3] + 2 * p - k) // s + 1
    rows = np.arange(k)[:, None] + s * np.arange(Ho)[None, :]            # (k, Ho): row s i + u
    columns = np.arange(k)[:, None] + s * np.arange(Wo)[None, :]         # (k, Wo): column s j + v
    windows = xp_[:, :, rows[:, None, :, None], columns[None, :, None, :]]  # (B, C, k, k, Ho, Wo)
    return windows.transpose(1, 2, 3, 0, 4, 5)                        # (C, k, k, B, Ho, Wo)


def test_im2col_by_default_lays_patches_out_channels_first():
    """im2col(np, x, k, s, p) gives (C, k, k, B, Ho, Wo) patches; batch_last=True the same as (C, k, k, Ho, Wo, B)."""
    x = np.random.default_rng(16).standard_normal((2, 3, 7, 6))
    expected = patches_by_indexing(x, 3, 2, 1)                        # (3, 3, 3, 2, 4, 3)
    cols = im2col.im2col(np, x, 3, 2, 1)
    assert cols.shape == expected.shape
    np.testing.assert_array_equal(cols, expected)
    np.testing.assert_array_equal(im2col.im2col(np, x, 3, 2, 1, batch_last=True), expected.transpose(0, 1, 2, 4, 5, 3))


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (2, 2)])
def test_col2im_is_the_adjoint_of_im2col(stride, padding):
    """col2im with no buffer is im2col's adjoint: sum(im2col(x) * c) == sum(x * col2im(c)), all batch-last."""
    rng = np.random.default_rng(17)
    B, C, H, W, k = 2, 3, 7, 6, 3
    x = rng.standard_normal((B, C, H, W))
    cols = im2col.im2col(np, x, k, stride, padding, batch_last=True)   # (C, k, k, Ho, Wo, B)
    c = rng.standard_normal(cols.shape)
    sums = im2col.col2im(np, c, (H, W), stride, padding)              # (C, H, W, B)
    assert sums.shape == (C, H, W, B)
    assert np.sum(x.transpose(1, 2, 3, 0) * sums) == pytest.approx(np.sum(cols * c), rel=1e-12)


@pytest.mark.parametrize("batch_last", [False, True])
def test_conv2d_product_alone_is_the_sum_over_each_patch(batch_last):
    """conv2d_product with no buffer: y[o, ...] = sum over c, u, v of W[o, c, u, v] cols[c, u, v, ...] (einsum)."""
    rng = np.random.default_rng(18)
    W = rng.standard_normal((4, 3, 3, 3))
    cols = im2col.im2col(np, rng.standard_normal((2, 3, 7, 6)), 3, 2, 1, batch_last=batch_last)
    expected = np.einsum("ocuv,cuv...->o...", W, cols)                 # (4, 2, 4, 3), batch-last (4, 4, 3, 2)
    y = conv.conv2d_product(np, cols, W)
    assert y.shape == expected.shape
    assert rel_error(y, expected) < 1e-12


def test_conv2d_patch_grad_alone_is_wm_transposed_times_dy():
    """conv2d_patch_grad with no buffer: dcols[c, u, v, i, j, b] = sum over o of W[o, c, u, v] dy[o, i, j, b]."""
    rng = np.random.default_rng(19)
    W, dy_bl = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((4, 5, 3, 2))
    expected = np.einsum("ocuv,oijb->cuvijb", W, dy_bl)                # (3, 3, 3, 5, 3, 2)
    dcols = conv.conv2d_patch_grad(np, dy_bl, W)
    assert dcols.shape == expected.shape
    assert rel_error(dcols, expected) < 1e-12


def test_output_size_helpers_refuse_bad_settings():
    """conv_output_size and conv_transpose_output_size refuse a stride of 0, padding < 0, output_padding >= stride."""
    with pytest.raises(ValueError, match="stride must be"):
        im2col.conv_output_size(8, 3, 0, 1)
    with pytest.raises(ValueError, match="padding must be"):
        im2col.conv_output_size(8, 3, 1, -1)
    with pytest.raises(ValueError, match="stride must be"):
        conv.conv_transpose_output_size(8, 3, 0, 1, 0)
    with pytest.raises(ValueError, match="output_padding must be less than the stride"):
        conv.conv_transpose_output_size(8, 3, 2, 1, 2)
    with pytest.raises(ValueError, match="padding must be"):
        conv.conv_transpose_output_size(8, 3, 1, -1, 0)

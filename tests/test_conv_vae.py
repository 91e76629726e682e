"""The convolutional VAE (arch="conv"): PyTorch parity, gradient checks that catch wrong conv gradients,
and the whole command line (train, exact resume, evaluate, figures, generate, gradcheck) on it."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from numpyvae import VAE, Adam, cli, conv, gradcheck, im2col, losses
from numpyvae.gradcheck import check_batch, check_model, rel_error
from numpyvae.rundir import load_run

try:
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from torch_reference import TorchVAE     # the one PyTorch builder, shared with the benchmark
except ImportError:     # only the parity tests need it; they skip, saying why
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs torch==2.13.0)")

SMALL_CONV = {"arch": "conv", "input_shape": (1, 7, 7), "hidden_dims": (2, 3), "latent_dim": 3}


def batch(model, n, seed):
    rng = np.random.default_rng(seed)
    x, eps = rng.uniform(0, 1, (n, model.input_dim)), rng.standard_normal((n, model.latent_dim))
    return x, eps, (rng.integers(0, model.num_classes, n) if model.conditional else None)


def torch_loss(model, x, eps, y):
    reference = TorchVAE(model)
    theirs = reference(torch.from_numpy(x), torch.from_numpy(eps), None if y is None else torch.from_numpy(y))
    theirs[0].backward()
    return [t.item() for t in theirs], reference.grads()


@needs_torch
@pytest.mark.parametrize("num_classes", [0, 10], ids=["plain", "conditional"])
@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
def test_the_whole_conv_model_matches_autograd_in_float64(likelihood, num_classes):
    model = VAE(arch="conv", likelihood=likelihood, num_classes=num_classes, dtype=np.float64, seed=0)
    assert model.num_params == 228_905 + num_classes * (2 * 20 + 3136)    # the labels' columns of mu, logvar, dec
    x, eps, y = batch(model, 8, seed=1)
    ours = model.loss_and_grads(x, eps=eps, y=y)
    theirs, torch_grads = torch_loss(model, x, eps, y)
    for a, b in zip(ours, theirs):
        assert rel_error(float(a), b) < 1e-12
    assert list(torch_grads) == list(model.params)
    for name in model.params:
        assert rel_error(model.grads[name], torch_grads[name]) < 1e-9, name


@needs_torch
def test_adam_on_the_conv_model_matches_torch_optim_adam():
    model = VAE(**SMALL_CONV, num_classes=4, dtype=np.float64, seed=3)
    reference = TorchVAE(model)
    opt, torch_opt = Adam(model, lr=1e-2), torch.optim.Adam(reference.parameters(), lr=1e-2)
    for step in range(4):
        x, eps, y = batch(model, 6, seed=10 + step)
        model.loss_and_grads(x, eps=eps, y=y)
        opt.step()
        torch_opt.zero_grad()
        reference(torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(y))[0].backward()
        torch_opt.step()
        for name, value in reference.params().items():
            assert rel_error(model.params[name], value) < 1e-9, (step, name)


def test_the_labels_join_after_the_flatten_and_beside_z():
    model = VAE(arch="conv", num_classes=10, seed=0)
    assert model.shapes["enc.conv1.W"] == (32, 1, 3, 3)          # the image alone goes through the convolutions
    assert model.shapes["mu.W"] == model.shapes["logvar.W"] == (3136 + 10, 20)
    assert model.shapes["dec.W"] == (20 + 10, 3136)
    x, eps, y = batch(model, 3, seed=0)
    other = (y + 1) % 10
    assert not np.allclose(model.encode(x, y)[0], model.encode(x, other)[0])
    assert not np.allclose(model.decode(eps, y), model.decode(eps, other))


def flipped_kernel_patch_grad(xp, dy_bl, W, out=None):
    """The convolution's input gradient (and the transposed convolution's forward) with W not flipped back."""
    return ORIGINAL_PATCH_GRAD(xp, dy_bl, W[:, :, ::-1, ::-1], out)


def wrong_stride_col2im(xp, cols, image_size, stride, padding, out=None):
    """col2im adding back at stride 1 whatever the forward's stride was."""
    return ORIGINAL_COL2IM(xp, cols, image_size, 1, padding, out)


ORIGINAL_PATCH_GRAD, ORIGINAL_COL2IM = conv.conv2d_patch_grad, im2col.col2im


@pytest.mark.parametrize("mutant, name", [(flipped_kernel_patch_grad, "conv2d_patch_grad"),
                                          (wrong_stride_col2im, "col2im")], ids=["flipped kernel", "col2im stride"])
def test_a_wrong_conv_gradient_is_caught_in_the_whole_model(monkeypatch, mutant, name):
    model = VAE(**SMALL_CONV, dtype=np.float64, seed=1)
    x, eps = check_batch(model, seed=1)
    assert all(r.passed for r in check_model(model, x, eps))                 # right before
    monkeypatch.setattr(conv, name, mutant)
    rows = {r.name: r for r in check_model(model, x, eps)}
    # the first convolution's weights only see the mistake through the second's input gradient
    assert not rows["enc.conv1.W"].passed, gradcheck.format_table([("", list(rows.values()))])
    if torch is not None:
        model.loss_and_grads(x, eps=eps)
        _, torch_grads = torch_loss(model, x, eps, None)
        assert rel_error(model.grads["enc.conv1.W"], torch_grads["enc.conv1.W"]) > 1e-3


# -- the command line ---------------------------------------------------------------------------

CONV = ["--arch", "conv", "--hidden-dims", "4,8", "--latent-dim", "2", "--batch-size", "16"]


def run_main(capsys, *args):
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_conv_runs_train_resume_exactly_evaluate_draw_and_generate(small_data, capsys, tmp_path):
    base = ["--data-dir", small_data.data_dir, "--no-figures"]
    status, out, err = run_main(capsys, "train", *CONV, "--epochs", 1, "--run-dir", tmp_path / "run", *base)
    assert status == 0, err
    assert "conv 1x28x28-4-8-2 VAE" in out
    status, out, err = run_main(capsys, "train", "--epochs", 2, "--run-dir", tmp_path / "run", "--resume", *base)
    assert status == 0 and "resuming" in out, err
    status, _, err = run_main(capsys, "train", *CONV, "--epochs", 2, "--run-dir", tmp_path / "straight", *base)
    assert status == 0, err
    config, resumed, _ = load_run(tmp_path / "run")
    assert (config.arch, config.hidden_dims, config.input_shape) == ("conv", (4, 8), (1, 28, 28))
    np.testing.assert_array_equal(resumed.flat_params, load_run(tmp_path / "straight")[1].flat_params)

    status, out, err = run_main(capsys, "evaluate", tmp_path / "run", "--samples", 2, "--iw-samples", 10, "--json")
    assert status == 0, err
    results = json.loads(out)
    assert np.isfinite(results["iwae_nll"]) and results["iwae_nll"] <= results["test_loss"] + 1.0
    status, out, err = run_main(capsys, "figures", tmp_path / "run", "--out", tmp_path / "pictures")
    assert status == 0, err
    assert len(list((tmp_path / "pictures").glob("*.png"))) == len(out.split())
    status, _, err = run_main(capsys, "generate", tmp_path / "run", "-n", 5, "--out", tmp_path / "new.npy")
    assert status == 0, err
    images = np.load(tmp_path / "new.npy")
    assert images.shape == (5, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_a_conditional_conv_run_generates_the_class_asked_for(small_data, capsys, tmp_path):
    base = ["--data-dir", small_data.data_dir, "--no-figures", "--run-dir", tmp_path / "run"]
    assert run_main(capsys, "train", *CONV, "--conditional", "--epochs", 1, *base)[0] == 0
    status, _, err = run_main(capsys, "generate", tmp_path / "run", "-n", 3, "--class", "sneaker",
                              "--out", tmp_path / "sneakers.npy")
    assert status == 0, err
    _, model, _ = load_run(tmp_path / "run")
    z = np.random.default_rng(0).standard_normal((3, 2))
    assert np.load(tmp_path / "sneakers.npy").shape == (3, 28, 28)
    assert not np.allclose(model.decode(z, np.full(3, 7)), model.decode(z, np.full(3, 0)))


def test_gradcheck_takes_trains_model_flags_or_a_run_and_fails_with_exit_1(small_data, capsys, tmp_path, monkeypatch):
    status, out, err = run_main(capsys, "gradcheck", "--arch", "conv", "--quick")
    assert status == 0, out
    assert "small conv 1x7x7-2-3-3 VAE, bernoulli, every entry (float64, numpy)" in out
    assert run_main(capsys, "train", *CONV, "--epochs", 1, "--data-dir", small_data.data_dir,
                    "--run-dir", tmp_path / "run", "--no-figures")[0] == 0
    status, out, _ = run_main(capsys, "gradcheck", tmp_path / "run", "--entries", 3)
    assert status == 0 and "conv 1x28x28-4-8-2 VAE, bernoulli, 3 sampled entries per tensor" in out
    assert "dec.deconv2.W" in out and "enc.conv1.W" in out
    status, _, err = run_main(capsys, "gradcheck", tmp_path / "run", "--arch", "conv")
    assert status == 1 and "give a run directory or model flags, not both" in err
    monkeypatch.setattr(conv, "col2im", wrong_stride_col2im)
    status, out, _ = run_main(capsys, "gradcheck", "--arch", "conv", "--quick")
    assert status == 1 and "FAIL" in out


def test_a_setting_that_means_nothing_for_conv_is_refused_in_one_line(capsys, tmp_path):
    status, _, err = run_main(capsys, "train", "--arch", "conv", "--hidden-dim", 400, "--run-dir", tmp_path / "run")
    assert status == 1
    assert err.count("\n") == 1 and "hidden_dim is the dense model's one hidden width and means nothing" in err
    assert not (tmp_path / "run").exists()

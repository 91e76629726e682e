"""The conditional VAE: [x, onehot(y)] into the encoder, [z, onehot(y)] into the decoder.

Its gradients against finite differences and PyTorch autograd, proof that those checks fail when
the gradient through a concatenation is wrong, and a conditional step that allocates nothing and
moves nothing between host and device.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from numpyvae import VAE, Adam, get_backend, layers, losses
from numpyvae.batches import DeviceDataset
from numpyvae.gradcheck import check_batch, check_model, rel_error


def batch(model, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, model.input_dim)), rng.standard_normal((n, model.latent_dim)),
            rng.integers(0, model.num_classes, n))


def test_the_label_widens_the_first_layer_of_each_half():
    model = VAE(784, 400, 20, num_classes=10)
    assert model.params["enc.W"].shape == (794, 400) and model.params["dec.W"].shape == (30, 400)
    assert model.params["out.W"].shape == (400, 784) and model.params["mu.W"].shape == (400, 20)
    assert model.config["num_classes"] == 10 and VAE(**model.config).num_params == model.num_params


@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
def test_every_gradient_against_finite_differences(likelihood):
    model = VAE(6, 5, 3, likelihood, num_classes=4, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1))
    assert len(rows) == 10 and all(r.checked == np.prod(r.shape) and r.kinks == 0 for r in rows)
    failed = [r for r in rows if not r.passed]
    assert not failed, failed


def test_the_label_rows_of_the_weights_get_their_gradient():
    """dL/dW for the one-hot rows of enc.W and dec.W: x^T dy restricted to those rows, nonzero only
    for the classes present in the batch."""
    model = VAE(6, 5, 3, num_classes=4, dtype=np.float64, seed=2)
    x, eps, _ = batch(model, 8, seed=2)
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])                  # classes 2 and 3 absent
    model.loss_and_grads(x, eps=eps, y=y)
    for name, first in (("enc.W", 6), ("dec.W", 3)):
        label_rows = model.grads[name][first:]
        assert np.abs(label_rows[:2]).max() > 0 and not label_rows[2:].any()


def test_the_checks_fail_when_the_concatenation_passes_back_the_wrong_columns(monkeypatch):
    """dL/dz is the FIRST Z columns of the decoder's input gradient; taking the last Z is a bug."""
    def broken(xp, dout, cache):
        width = dout.shape[1] - cache.split
        return dout[:, width:], dout[:, :width]
    monkeypatch.setattr(layers, "concat_backward", broken)
    model = VAE(6, 5, 3, num_classes=4, dtype=np.float64, seed=1)
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    assert rows["mu.W"].max_rel_error > 100 * rows["mu.W"].tolerance
    assert rows["out.W"].passed                              # the decoder's own weights do not see dz


try:
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from torch_reference import TorchVAE     # the one PyTorch builder, shared with the benchmark
except ImportError:     # only the parity tests need it; they skip, saying why
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs torch==2.13.0)")


@needs_torch
@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
def test_losses_and_every_gradient_match_autograd(likelihood):
    model = VAE(784, 64, 8, likelihood, num_classes=10, dtype=np.float64, seed=0)
    reference = TorchVAE(model)
    x, eps, y = batch(model, 32, seed=1)
    ours = model.loss_and_grads(x, eps=eps, y=y)
    theirs = reference(torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(y))
    theirs[0].backward()
    for a, b in zip(ours, theirs):
        assert rel_error(float(a), b.item()) < 1e-12
    torch_grads = reference.grads()
    assert list(torch_grads) == list(model.params)
    for name in model.params:
        assert rel_error(model.grads[name], torch_grads[name]) < 1e-9, name


@needs_torch
def test_parity_notices_a_decoder_that_ignores_the_label(monkeypatch):
    """The label must reach the decoder: a wrong label, or a decoder that reads [z, 0], breaks parity."""
    model = VAE(20, 8, 3, num_classes=4, dtype=np.float64, seed=0)
    x, eps, y = batch(model, 8, seed=2)
    theirs = TorchVAE(model)(torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(y))[0].item()
    assert rel_error(float(model.loss(x, eps=eps, y=y)[0]), theirs) < 1e-12
    assert rel_error(float(model.loss(x, eps=eps, y=(y + 1) % 4)[0]), theirs) > 1e-6
    original = layers.concat_forward

    def label_dropped_in_the_decoder(xp, a, b, out=None):
        result, cache = original(xp, a, b, out=out)
        if a.shape[1] == model.latent_dim:
            result[:, model.latent_dim:] = 0
        return result, cache
    monkeypatch.setattr(layers, "concat_forward", label_dropped_in_the_decoder)
    assert rel_error(float(model.loss(x, eps=eps, y=y)[0]), theirs) > 1e-6


# -- the step stays allocation-free and transfer-free ----------------------------------------------

# (the allocation test of a conditional step is in test_gpu.py, with every other model setting)


def test_a_conditional_fakegpu_step_makes_no_transfers_and_no_sync_reads():
    backend = get_backend("fakegpu")
    counters = backend.xp.counters
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(96, 28, 28), dtype=np.uint8)
    data = DeviceDataset(images, backend, labels=rng.integers(0, 10, 96))   # images and labels cross once
    model = VAE(hidden_dim=16, latent_dim=2, num_classes=10, backend=backend, seed=0)
    optimizer = Adam(model)
    batches = data.labeled_batches(16, shuffle=True, seed=(0, 1))
    for x, y in [next(batches) for _ in range(2)]:
        model.loss_and_grads(x, y=y)
        optimizer.step()
    counters.clear()
    for x, y in batches:
        model.loss_and_grads(x, y=y)
        optimizer.step()
    assert dict(counters) == {}, "a conditional step moved data across or waited for the device"


# -- labels are required where they mean something, and refused where they do not ---------------

def test_labels_are_checked():
    conditional, plain = VAE(6, 5, 3, num_classes=4), VAE(6, 5, 3)
    x = np.full((2, 6), 0.5)
    with pytest.raises(ValueError, match="needs labels y"):
        conditional.loss_and_grads(x)
    with pytest.raises(ValueError, match="not conditional"):
        plain.loss_and_grads(x, y=np.array([0, 1]))
    for bad in (np.array([0, 4]), np.array([0, -1]), np.array([0.0, 1.0]), np.array([0, 1, 2])):
        with pytest.raises(ValueError, match="labels y must be 2 integers in 0..3"):
            conditional.loss_and_grads(x, y=bad)
    with pytest.raises(ValueError, match="num_classes must be 0"):
        VAE(6, 5, 3, num_classes=-1)
    device = VAE(6, 5, 3, num_classes=4, backend="fakegpu")       # host labels, even as a list, are checked
    with pytest.raises(ValueError, match="labels y must be 2 integers in 0..3"):
        device.loss_and_grads(device.backend.to_device(x), y=[0, 7])


def test_decoding_depends_on_the_label():
    model = VAE(6, 5, 3, num_classes=4, seed=0)
    z = np.zeros((4, 3), np.float32)
    images = model.decode(z, np.arange(4))
    assert images.shape == (4, 6) and len({row.tobytes() for row in images}) == 4
    assert model.sample(3, rng=np.random.default_rng(0), y=np.array([1, 1, 1])).shape == (3, 6)

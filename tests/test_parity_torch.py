"""The same model, weights and noise in PyTorch autograd: losses, every gradient and Adam must agree.

torch is a test-only dependency (CI installs torch==2.13.0); the package never imports it.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from numpyvae import VAE, Adam
from numpyvae.gradcheck import rel_error
from numpyvae.losses import LIKELIHOODS

torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI installs torch==2.13.0)")
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from torch_reference import TorchVAE  # noqa: E402  the one PyTorch builder, shared with the benchmark


def data(model, n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, model.input_dim)), rng.standard_normal((n, model.latent_dim))


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_losses_and_every_gradient_match_autograd(likelihood):
    model = VAE(likelihood=likelihood, dtype=np.float64, seed=0)   # the full 784-400-20 model
    reference = TorchVAE(model)
    x, eps = data(model, 32, seed=1)
    ours = model.loss_and_grads(x, eps=eps)
    theirs = reference(torch.from_numpy(x), torch.from_numpy(eps))
    theirs[0].backward()
    for a, b in zip(ours, theirs):
        assert rel_error(float(a), b.item()) < 1e-12
    torch_grads = reference.grads()
    for name in model.params:
        assert rel_error(model.grads[name], torch_grads[name]) < 1e-9, name


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_adam_steps_match_torch_optim_adam(likelihood):
    model = VAE(40, 16, 4, likelihood=likelihood, dtype=np.float64, seed=3)
    reference = TorchVAE(model)
    opt = Adam(model, lr=1e-2)
    torch_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)   # same defaults: betas, eps
    for step in range(5):
        x, eps = data(model, 16, seed=10 + step)
        model.loss_and_grads(x, eps=eps)
        opt.step()
        torch_opt.zero_grad()
        reference(torch.from_numpy(x), torch.from_numpy(eps))[0].backward()
        torch_opt.step()
        for name, value in reference.params().items():
            assert rel_error(model.params[name], value) < 1e-9, (step, name)


def test_parity_would_notice_the_seed_blog_post_bug(monkeypatch):
    """Sampling with std = exp(logvar), as the seed does, must break agreement with the reference."""
    from numpyvae import layers
    original = layers.reparameterize_forward

    def seed_bug(xp, mu, logvar, eps, std=None, z=None):
        return original(xp, mu, 2 * logvar, eps, std, z)   # exp(0.5 * 2 logvar) = exp(logvar)
    monkeypatch.setattr(layers, "reparameterize_forward", seed_bug)
    model = VAE(20, 8, 3, dtype=np.float64, seed=0)
    x, eps = data(model, 8, seed=2)
    ours = model.loss_and_grads(x, eps=eps)[0]
    theirs = TorchVAE(model)(torch.from_numpy(x), torch.from_numpy(eps))[0]
    assert rel_error(float(ours), theirs.item()) > 1e-6

"""The calibrated Gaussian decoder (--sigma learned|optimal, losses.CalibratedGaussian): gradients by hand against
finite differences of the whole loss, the envelope theorem and where it stops, autograd parity, runs and resume."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_interrupted_run_resumes_bit_for_bit, train_quietly

from numpyvae import VAE, Adam, checkpoint, losses
from numpyvae.gradcheck import check_batch, check_model, numerical_gradient, rel_error
from numpyvae.rundir import TrainConfig

SMALL = dict(input_dim=6, hidden_dim=5, latent_dim=3, likelihood="gaussian")
PARAM = losses.CalibratedGaussian.PARAM


def bound(kind, u=0.0):
    """A calibrated Gaussian of `kind` ("learned" or "optimal") bound to its own log-sigma parameter u."""
    term = losses.CALIBRATED[kind]()
    params, grads = {PARAM: np.array([u])}, {PARAM: np.zeros(1)}
    return term.bind(params, grads), params, grads


def problem(seed=0, rows=(3, 4), D=5):
    """(logits (K, B, D), pixels (K, B, D), weights (K, B) summing to 1 over k, as the IWAE bound's do)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(rows[0]), rows[1]).T
    return 2 * rng.standard_normal((*rows, D)), rng.uniform(0, 1, (*rows, D)), weights


def nll_by_definition(x, mean, log_sigma):
    """-log N(x; mean, sigma^2) summed over the last axis, sigma = exp(log_sigma), from the formula."""
    var = math.exp(2 * log_sigma)
    return (0.5 * (x - mean) ** 2 / var + 0.5 * math.log(2 * math.pi * var)).sum(-1)


# -- the likelihood alone -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["learned", "optimal"])
def test_rows_are_the_gaussian_density_with_its_floored_sigma(kind):
    logits, x, _ = problem()
    term, params, _ = bound(kind, u=-1.3)
    rows, _ = term.forward_rows(np, logits, x)
    mean = 1 / (1 + np.exp(-logits))
    u = -1.3 if kind == "learned" else 0.5 * math.log(np.mean((mean - x) ** 2))
    log_sigma = -6 + math.log1p(math.exp(u + 6))              # the reference code's softclip(u, -6)
    np.testing.assert_allclose(rows, nll_by_definition(x, mean, log_sigma), rtol=1e-13)
    np.testing.assert_allclose(-term.log_prob(np, x, logits), rows, rtol=0, atol=0)


@pytest.mark.parametrize("weighted", [False, True], ids=["elbo rows", "iwae weights"])
def test_learned_sigma_gradients_against_finite_differences(weighted):
    logits, x, weights = problem()
    drows = weights if weighted else None
    term, params, grads = bound("learned", u=-0.7)
    loss = lambda: ((weights if weighted else 1) * term.forward_rows(np, logits, x)[0]).sum()   # noqa: E731
    dlogits = term.backward_rows(np, term.forward_rows(np, logits, x)[1], drows)
    assert rel_error(dlogits, numerical_gradient(loss, logits)) < 1e-8
    assert rel_error(grads[PARAM], numerical_gradient(loss, params[PARAM])) < 1e-8


@pytest.mark.parametrize("weighted", [False, True], ids=["elbo rows", "iwae weights"])
def test_optimal_sigma_gradient_is_the_whole_losss_with_sigma_solved_inside(weighted):
    """The finite differences recompute sigma from the perturbed logits, every time."""
    logits, x, weights = problem(seed=1)
    term, params, grads = bound("optimal")
    loss = lambda: ((weights if weighted else 1) * term.forward_rows(np, logits, x)[0]).sum()   # noqa: E731
    dlogits = term.backward_rows(np, term.forward_rows(np, logits, x)[1], weights if weighted else None)
    assert rel_error(dlogits, numerical_gradient(loss, logits)) < 1e-8
    # the step keeps the batch's sigma (before the floor), with no gradient: it is held, not learned
    mean = 1 / (1 + np.exp(-logits))
    assert params[PARAM][0] == pytest.approx(0.5 * math.log(np.mean((mean - x) ** 2)), rel=1e-14)
    assert grads[PARAM][0] == 0


def test_envelope_theorem_the_elbo_gradient_through_the_optimal_sigma_vanishes_the_iwae_one_does_not():
    """Without the floor, sum_r loss_r is flat in sigma at sigma^2 = MSE, so the optimal sigma's gradient is the
    one with sigma held where it is (the learned class at that value); the IWAE bound's weights break this."""
    logits, x, weights = problem(seed=2)
    optimal, params, _ = bound("optimal")
    optimal.MIN_LOG_SIGMA = -700.0                            # the floor out of the way: log sigma = u
    _, cache = optimal.forward_rows(np, logits, x)
    held, held_params, held_grads = bound("learned", u=float(cache.u[0]))
    held.MIN_LOG_SIGMA = -700.0
    for drows, same in [(None, True), (weights, False)]:
        ours = optimal.backward_rows(np, optimal.forward_rows(np, logits, x)[1], drows)
        with_sigma_held = held.backward_rows(np, held.forward_rows(np, logits, x)[1], drows)
        if same:                                              # d loss / d log sigma = 0 at the optimum
            assert abs(held_grads[PARAM][0]) < 1e-12 * x.size
            assert rel_error(ours, with_sigma_held) < 1e-12
        else:
            assert abs(held_grads[PARAM][0]) > 1e-2
            assert rel_error(ours, with_sigma_held) > 1e-3


def test_the_floor_keeps_a_perfect_batch_finite():
    x = np.array([[0.0, 1.0]])
    logits = np.array([[-800.0, 800.0]])                      # sigmoid rounds to exactly 0 and 1: S = 0
    term, params, grads = bound("optimal")
    rows, cache = term.forward_rows(np, logits, x)
    assert np.isfinite(rows).all() and np.isfinite(term.backward(np, cache)).all()
    assert np.exp(term._floor(np, params[PARAM] * 0 + cache.u)) == pytest.approx(math.exp(-6))


# -- the whole model --------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", ["learned", "optimal"])
@pytest.mark.parametrize("objective, K", [("elbo", None), ("iwae", 3)])
@pytest.mark.parametrize("classes", [0, 4], ids=["plain", "conditional"])
def test_every_entry_of_the_model_against_finite_differences(sigma, objective, K, classes):
    model = VAE(**SMALL, num_classes=classes, sigma=sigma, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=0, samples=K), objective=objective)
    assert all(row.passed for row in rows), [row for row in rows if not row.passed]
    names = {row.name for row in rows}
    assert (PARAM in names) == (sigma == "learned")           # the optimal sigma is held: no gradient to check


def planted_check(monkeypatch, sigma, objective, K, method, wrong):
    monkeypatch.setattr(losses.CALIBRATED[sigma], method, wrong)
    model = VAE(**SMALL, sigma=sigma, dtype=np.float64, seed=1)
    return {row.name for row in check_model(model, *check_batch(model, seed=0, samples=K), objective=objective)
            if not row.passed}


@pytest.mark.parametrize("objective, K", [("elbo", None), ("iwae", 3)])
def test_a_learned_sigma_gradient_missing_its_floor_factor_fails(monkeypatch, objective, K):
    def without_floor(self, xp, coef, du, cache, ws=None):     # G instead of G c'(u)
        self.grads[self.PARAM][...] = du / losses.sigmoid(xp, cache.u - self.MIN_LOG_SIGMA)
    assert PARAM in planted_check(monkeypatch, "learned", objective, K, "_through_sigma", without_floor)


def test_a_learned_sigma_gradient_blind_to_the_iwae_weights_fails(monkeypatch):
    right = losses.CalibratedGaussian.backward_rows
    monkeypatch.setattr(losses.CalibratedGaussian, "backward_rows",
                        lambda self, xp, cache, drows=None, ws=None: right(self, xp, cache, None, ws) * (
                            1 if drows is None else drows[..., None]))     # the logits weighed, log sigma not
    model = VAE(**SMALL, sigma="learned", dtype=np.float64, seed=1)
    failed = {row.name for row in check_model(model, *check_batch(model, seed=0, samples=3), objective="iwae")
              if not row.passed}
    assert PARAM in failed


@pytest.mark.parametrize("objective, K", [("elbo", None), ("iwae", 3)])
def test_an_optimal_sigma_treated_as_a_constant_fails(monkeypatch, objective, K):
    """Dropping the G c'(u) / S term: wrong under the IWAE bound, and (the floor moves sigma off the optimum)
    under the ELBO too, where the check must see the 1% it is worth on these pixels."""
    def held_constant(self, xp, coef, du, cache, ws=None):
        self.grads[self.PARAM][...] = 0
        self.params[self.PARAM][...] = cache.u
    assert planted_check(monkeypatch, "optimal", objective, K, "_through_sigma", held_constant)


def test_layout_fixed_sigma_unchanged_likelihood_between_layers_and_prior():
    fixed = VAE(**SMALL, dtype=np.float64, seed=4)
    assert fixed.recon_term is losses.LIKELIHOODS["gaussian"] and PARAM not in fixed.shapes
    learned = VAE(**SMALL, sigma="learned", dtype=np.float64, seed=4)
    assert list(learned.shapes) == list(fixed.shapes) + [PARAM]
    np.testing.assert_array_equal(learned.flat_params[:-1], fixed.flat_params)    # the layers' draws as they were
    assert learned.params[PARAM][0] == 0                                          # sigma = 1, as sigma-VAE starts
    vamp = VAE(**SMALL, sigma="optimal", prior="vamp", pseudo_inputs=2, dtype=np.float64, seed=4)
    assert list(vamp.shapes)[-2:] == [PARAM, "prior.pseudo_logits"]


@pytest.mark.parametrize("settings, message", [
    ({"likelihood": "bernoulli", "sigma": "learned"}, "sigma 'learned' is the Gaussian decoder's"),
    ({"likelihood": "gaussian", "sigma": "tuned"}, "sigma must be one of fixed, learned, optimal"),
])
def test_sigma_is_refused_where_it_means_nothing(settings, message):
    with pytest.raises(ValueError, match=message):
        VAE(784, 16, 2, **settings)


def test_the_optimal_step_keeps_its_sigma_which_adam_leaves_and_evaluation_reads():
    model = VAE(**SMALL, sigma="optimal", dtype=np.float64, seed=2)
    x, eps = check_batch(model, seed=3)
    optimizer = Adam(model, lr=1e-2)
    model.loss_and_grads(x, eps=eps)
    kept = model.params[PARAM].copy()
    optimizer.step()
    assert model.params[PARAM][0] == kept[0] and model.grads[PARAM][0] == 0
    # scored as stored: the held model's loss is the Gaussian at the kept sigma, not one solved from this batch
    other = np.random.default_rng(9).uniform(0, 1, x.shape)
    held = model.held()
    assert held.recon_term.held_parameters() == () and held.flat_params is model.flat_params
    logits = model.decode_logits(model.encode(other)[0])
    log_sigma = -6 + math.log1p(math.exp(kept[0] + 6))
    expected = nll_by_definition(other, 1 / (1 + np.exp(-logits)), log_sigma)
    np.testing.assert_allclose(-held.recon_term.log_prob(np, other, logits), expected, rtol=1e-13)
    assert not np.allclose(-model.recon_term.log_prob(np, other, logits), expected)   # solved: another sigma
    model.loss(other)
    assert model.params[PARAM][0] == kept[0]                 # scoring never moves it; only a step does


# -- against autograd ----------------------------------------------------------------------------------

try:
    import torch
    from benchmarks.torch_reference import TorchVAE   # the one PyTorch builder, shared with the benchmark
except ImportError:     # only the parity test needs it; it skips, saying why
    torch = None


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs torch==2.13.0)")
@pytest.mark.parametrize("sigma", ["learned", "optimal"])
@pytest.mark.parametrize("objective, K, hidden", [("elbo", None, 400), ("iwae", 5, 64)])
def test_losses_and_every_gradient_match_autograd(sigma, objective, K, hidden):
    torch.set_num_threads(1)
    model = VAE(784, hidden, 8, "gaussian", sigma=sigma, dtype=np.float64, seed=0)
    reference = TorchVAE(model)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (16, 784))
    eps = rng.standard_normal((16, 8) if K is None else (K, 16, 8))
    ours = model.loss_and_grads(x, eps=eps, objective=objective)[0]
    theirs = reference.loss(torch.from_numpy(x), torch.from_numpy(eps), objective=objective)
    theirs.backward()
    assert rel_error(float(ours), theirs.item()) < 1e-12
    torch_grads = reference.grads()
    for name in model.params:
        if name in model.recon_term.held_parameters():
            assert not np.any(model.grads[name]) and name not in torch_grads
        else:
            assert rel_error(model.grads[name], torch_grads[name]) < 1e-9, name


# -- runs: train, resume bit for bit, evaluate, generate ------------------------------------------------------

@pytest.mark.parametrize("sigma, objective, samples", [("learned", "elbo", 1), ("learned", "iwae", 3),
                                                       ("optimal", "elbo", 1), ("optimal", "iwae", 3)])
def test_a_run_records_its_sigma_and_resumes_bit_for_bit(tiny_config, tmp_path, sigma, objective, samples):
    config = tiny_config(likelihood="gaussian", sigma=sigma, objective=objective, samples=samples)
    lines = train_quietly(config, tmp_path / "straight")
    assert f"({sigma} sigma)" in lines[0]
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["sigma"] == sigma
    saved = checkpoint.load(tmp_path / "straight" / checkpoint.FILENAME)
    assert saved.params[-1] != 0                              # log sigma moved (learned) or was solved (optimal)
    assert_interrupted_run_resumes_bit_for_bit(config, tmp_path / "straight", tmp_path / "stopped")


def test_a_config_written_before_sigma_reads_as_the_fixed_gaussian():
    values = TrainConfig(likelihood="gaussian").__dict__.copy()
    values.pop("sigma")
    assert TrainConfig.from_dict(json.loads(json.dumps(values, default=list))).sigma == "fixed"


def test_the_command_line_trains_evaluates_and_generates_it(tiny_config, tmp_path):
    data_dir = tiny_config().data_dir
    command = [sys.executable, "-m", "numpyvae"]
    done = subprocess.run(command + ["train", "--likelihood", "bernoulli", "--sigma", "optimal", "--run-dir",
                                     str(tmp_path / "refused"), "--data-dir", data_dir], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.count("\n") == 1 and "has no sigma" in done.stderr
    assert not (tmp_path / "refused").exists()
    done = subprocess.run(command + ["train", "--likelihood", "gaussian", "--sigma", "optimal", "--epochs", "1",
                                     "--hidden-dim", "16", "--latent-dim", "2", "--batch-size", "16", "--no-figures",
                                     "--run-dir", str(tmp_path / "run"), "--data-dir", data_dir],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(command + ["evaluate", str(tmp_path / "run"), "--iw-samples", "5", "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["is_bound"] is False and math.isfinite(result["iwae_nll"])
    out = tmp_path / "new.png"
    done = subprocess.run(command + ["generate", str(tmp_path / "run"), "-n", "4", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

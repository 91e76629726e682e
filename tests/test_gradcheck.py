"""Every hand-written gradient against centered finite differences, and proof the check can fail."""
import numpy as np
import pytest

from numpyvae import gradcheck, layers, losses
from numpyvae.gradcheck import check_batch, check_layers, check_model, numerical_gradient, rel_error
from numpyvae.vae import VAE


def assert_all_pass(rows):
    failed = [r for r in rows if not r.passed]
    assert not failed, gradcheck.format_table([("failed", failed)])


def test_numerical_gradient_of_a_known_function():
    x = np.array([0.3, -1.2, 2.0])
    numeric = numerical_gradient(lambda: np.sum(np.sin(x) * x ** 2), x)
    assert rel_error(numeric, np.cos(x) * x ** 2 + 2 * x * np.sin(x)) < 1e-9


def test_rel_error_is_relative_to_the_tensor_scale():
    assert rel_error([1000.0, 1e-9], [1000.0, 2e-9]) < 1e-11
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 4.2)
    assert rel_error([0.0], [0.0]) == 0.0


def test_layers_and_losses():
    rows = check_layers(seed=0)
    assert {r.name for r in rows} >= {"Linear dx", "Linear dW", "Linear db", "ReLU dx", "Sigmoid dx",
                                      "Reparameterize dmu", "Reparameterize dlogvar",
                                      "GaussianKL dmu", "GaussianKL dlogvar"}
    # one row per registered likelihood: a new one is checked without touching this file
    assert {f"{type(term).__name__} dlogits" for term in losses.LIKELIHOODS.values()} <= {r.name for r in rows}
    assert {"Bernoulli dlogits", "Gaussian dlogits"} <= {r.name for r in rows}
    assert_all_pass(rows)


@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_small_model_every_entry_float64(likelihood, beta):
    model = VAE(6, 5, 3, likelihood, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1), beta=beta)
    assert len(rows) == 10 and all(r.checked == np.prod(r.shape) and r.kinks == 0 for r in rows)
    assert_all_pass(rows)


def test_entries_straddling_a_relu_kink_are_left_out_and_counted():
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    x, eps = check_batch(model, seed=1)
    # move one encoder pre-activation (example 0, unit 2) to 3e-6 above the kink, well inside a step of H
    pre = x[0] @ model.params["enc.W"][:, 2] + model.params["enc.b"][2]
    model.params["enc.b"][2] += 3e-6 - pre
    rows = {r.name: r for r in check_model(model, x, eps)}
    assert rows["enc.b"].kinks == 1 and rows["enc.W"].kinks >= 1
    assert all(r.passed for r in rows.values() if r.kinks <= max(1, 0.1 * (r.checked + r.kinks)))
    assert rows["enc.b"].passed                # one entry left out is allowed, even of 5 ...
    pre = x[1] @ model.params["enc.W"][:, 3] + model.params["enc.b"][3]
    model.params["enc.b"][3] += -2e-6 - pre    # ... a second is more than a row may lose
    rows = {r.name: r for r in check_model(model, x, eps)}
    assert rows["enc.b"].kinks == 2 and not rows["enc.b"].passed


def test_a_row_whose_kept_entries_are_all_zero_fails():
    from numpyvae.gradcheck import Row
    assert not Row("w", (3,), 3, 0.0, 1e-6, all_zero=True).passed
    assert not Row("w", (3,), 0, float("nan"), 1e-6, kinks=3).passed
    assert Row("w", (30,), 29, 1e-9, 1e-6, kinks=1).passed
    # one kink is allowed even among a few sampled entries (a conv bias moves hundreds of ReLU inputs), two are not
    assert Row("w", (32,), 4, 1e-9, 1e-6, kinks=1).passed
    assert not Row("w", (32,), 3, 1e-9, 1e-6, kinks=2).passed


@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
def test_full_size_model_every_tensor_float64(likelihood):
    model = VAE(likelihood=likelihood, dtype=np.float64, seed=0)
    rows = check_model(model, *check_batch(model, seed=0), entries=30)
    assert [r.name for r in rows] == list(model.params)
    for r in rows:   # a kink may take out the odd entry, never the check
        assert r.checked + r.kinks == min(30, np.prod(r.shape)) and r.kinks <= 2
    # the rounding noise of 4 images' loss (about 2,200 nats) sits far below 1e-6 on these gradients
    assert all(r.tolerance == 1e-6 for r in rows if r.name.endswith(".W")), gradcheck.format_table([("", rows)])
    assert_all_pass(rows)


def test_the_tolerance_scales_with_the_loss_and_the_gradients_but_is_capped():
    from numpyvae.gradcheck import MAX_TOLERANCE, tolerance
    assert tolerance(np.float64, 2_000.0, 1.0) == 1e-6          # the noise, 4.4e-8, is far below
    big = tolerance(np.float64, 2e6, 1.0)                          # a loss 1,000 times larger
    assert big == pytest.approx(10 * np.finfo(np.float64).eps * 2e6 / 1e-5)
    assert tolerance(np.float64, 2e6, 2.0) == pytest.approx(big / 2)   # larger gradients, less relative noise
    assert tolerance(np.float64, 2_000.0, 1e-9) == MAX_TOLERANCE   # gradients lost in the noise fail
    assert tolerance(np.float32, 2_000.0, 1.0) == 1e-5


@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
def test_full_size_model_float32_within_stated_tolerance(likelihood):
    model = VAE(likelihood=likelihood, dtype=np.float32, seed=0)
    rows = check_model(model, *check_batch(model, seed=0), entries=15)
    assert all(r.tolerance == 1e-5 for r in rows)
    assert_all_pass(rows)


def test_fake_gpu_backend_gives_the_same_gradients():
    model = VAE(6, 5, 3, backend="fakegpu", dtype=np.float64, seed=2)
    assert_all_pass(check_model(model, *check_batch(model, seed=2)))


# --- the checks must fail when a gradient is wrong ---------------------------------------

def _scaled(function, factor, which=None):
    """A backward that returns `factor` times the right answer (for output `which` of a tuple)."""
    def broken(*args, **kwargs):
        result = function(*args, **kwargs)
        if which is None:
            return result * factor
        result = list(result)
        result[which] = result[which] * factor
        return tuple(result)
    return broken


def assert_caught(row, case):
    """A real failure: entries were compared, and they disagree by far more than the tolerance."""
    assert row.checked > 0 and row.max_rel_error > 100 * row.tolerance, f"{case} went unnoticed in {row.name}"


# (where, function, which output to scale (None: the only one), factor, a parameter whose row must fail)
BROKEN_BACKWARDS = {
    "reparameterize dlogvar without the 1/2": (layers, "reparameterize_backward", 1, 2.0, "logvar.W"),
    "reparameterize dlogvar with the wrong sign": (layers, "reparameterize_backward", 1, -1.0, "logvar.W"),
    "KL dlogvar off by 2": (losses, "gaussian_kl_backward", 1, 2.0, "logvar.b"),
    "KL dmu off by 2": (losses, "gaussian_kl_backward", 0, 2.0, "mu.b"),
    "Bernoulli dlogits off by 10%": (losses.Bernoulli, "backward", None, 1.1, "out.b"),
    "ReLU dx off by 10%": (layers, "relu_backward", None, 1.1, "enc.W"),
}


@pytest.mark.parametrize("case", list(BROKEN_BACKWARDS))
def test_check_fails_on_a_broken_gradient(case, monkeypatch):
    where, name, which, factor, param = BROKEN_BACKWARDS[case]
    monkeypatch.setattr(where, name, _scaled(getattr(where, name), factor, which))
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    assert_caught(rows[param], case)


def test_check_fails_when_the_gaussian_gradient_loses_its_factor_2(monkeypatch):
    monkeypatch.setattr(losses.Gaussian, "backward", _scaled(losses.Gaussian.backward, 0.5))
    model = VAE(6, 5, 3, likelihood="gaussian", dtype=np.float64, seed=1)
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    assert_caught(rows["out.W"], "gaussian without 2")


def test_check_fails_when_the_kl_gradient_ignores_beta(monkeypatch):
    original = losses.gaussian_kl_backward
    monkeypatch.setattr(losses, "gaussian_kl_backward",
                        lambda xp, cache, scale=1.0, ws=None: original(xp, cache, 1.0, ws))
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1), beta=0.3)}
    assert_caught(rows["logvar.b"], "KL ignoring beta")


def test_check_fails_when_relu_saves_its_output_instead_of_its_mask(monkeypatch):
    """A broken ReLU must not be able to hide behind the kink detector (it once could)."""
    original = layers.relu_forward

    def broken(xp, x, out=None, mask=None):
        y, _ = original(xp, x, out, mask)
        return y, layers.ReLUCache(y)    # backward then computes dy * y instead of dy * (y > 0)
    monkeypatch.setattr(layers, "relu_forward", broken)
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1))
    assert all(r.kinks == 0 for r in rows)
    assert_caught({r.name: r for r in rows}["enc.W"], "ReLU saving y")


def test_check_fails_when_linear_forgets_the_bias_gradient(monkeypatch):
    original = layers.linear_backward

    def broken(xp, dy, cache, W, dW, db, dx=None, need_dx=True):
        result = original(xp, dy, cache, W, dW, db, dx, need_dx)
        db[...] = 0
        return result
    monkeypatch.setattr(layers, "linear_backward", broken)
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1))
    for r in rows:
        if r.name.endswith(".b"):
            assert_caught(r, "db left at zero")


def test_check_catches_std_equals_exp_logvar_in_backward_only(monkeypatch):
    """The seed's bug, half-fixed: forward uses exp(logvar / 2) but backward assumes exp(logvar)."""
    def broken(xp, dz, cache, dmu=None, dlogvar=None):
        return dz.copy(), dz * cache.eps * cache.std * cache.std   # d/dlogvar of eps * exp(logvar)
    monkeypatch.setattr(layers, "reparameterize_backward", broken)
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    assert_caught(rows["logvar.W"], "std = exp(logvar) in backward")
    assert rows["mu.W"].passed

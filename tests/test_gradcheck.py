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
                                      "BernoulliLoss dlogits", "GaussianLoss dlogits",
                                      "GaussianKL dmu", "GaussianKL dlogvar"}
    assert_all_pass(rows)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_small_model_every_entry_float64(likelihood, beta):
    model = VAE(6, 5, 3, likelihood, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1), beta=beta)
    assert len(rows) == 10 and all(r.checked + r.kinks == np.prod(r.shape) for r in rows)
    assert_all_pass(rows)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_full_size_model_every_tensor_float64(likelihood):
    model = VAE(likelihood=likelihood, dtype=np.float64, seed=0)
    rows = check_model(model, *check_batch(model, seed=0), entries=30)
    assert [r.name for r in rows] == list(model.params)
    for r in rows:   # a kink may take out the odd entry, never the check
        assert r.checked + r.kinks == min(30, np.prod(r.shape)) and r.kinks <= 2
    assert all(r.tolerance == 1e-6 for r in rows)
    assert_all_pass(rows)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_full_size_model_float32_within_stated_tolerance(likelihood):
    model = VAE(likelihood=likelihood, dtype=np.float32, seed=0)
    rows = check_model(model, *check_batch(model, seed=0), entries=15)
    assert all(r.tolerance == 1e-4 for r in rows)
    assert_all_pass(rows)


def test_fake_gpu_backend_gives_the_same_gradients():
    model = VAE(6, 5, 3, backend="fakegpu", dtype=np.float64, seed=2)
    assert_all_pass(check_model(model, *check_batch(model, seed=2)))


# --- the checks must fail when a gradient is wrong ---------------------------------------

def _scaled(method, factor, which=None):
    """A backward that returns `factor` times the right answer (for output `which` of a tuple)."""
    def broken(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        if which is None:
            return result * factor
        result = list(result)
        result[which] = result[which] * factor
        return tuple(result)
    return broken


BROKEN_BACKWARDS = {
    "reparameterize dlogvar without the 1/2": (layers.Reparameterize, "backward", 1, "logvar.W"),
    "KL dlogvar off by 2": (losses.GaussianKL, "backward", 1, "logvar.b"),
    "KL dmu off by 2": (losses.GaussianKL, "backward", 0, "mu.b"),
    "Bernoulli dlogits off by 10%": (losses.BernoulliLoss, "backward", None, "out.b"),
    "ReLU dx off by 10%": (layers.ReLU, "backward", None, "enc.W"),
}


@pytest.mark.parametrize("case", list(BROKEN_BACKWARDS))
def test_check_fails_on_a_broken_gradient(case, monkeypatch):
    cls, method, which, param = BROKEN_BACKWARDS[case]
    factor = 2.0 if "2" in case else 1.1
    monkeypatch.setattr(cls, method, _scaled(getattr(cls, method), factor, which))
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    assert not rows[param].passed, f"{case} went unnoticed in {param}"


def test_check_fails_when_linear_forgets_the_bias_gradient(monkeypatch):
    original = layers.Linear.backward

    def broken(self, dy, need_dx=True):
        dx = original(self, dy, need_dx)
        self.db[...] = 0
        return dx
    monkeypatch.setattr(layers.Linear, "backward", broken)
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1))
    assert all(not r.passed for r in rows if r.name.endswith(".b"))


def test_check_catches_std_equals_exp_logvar_in_backward_only(monkeypatch):
    """The seed's bug, half-fixed: forward uses exp(logvar / 2) but backward assumes exp(logvar)."""
    def broken(self, dz):
        eps, std = self._take_saved()
        return dz.copy(), dz * eps * std * std   # d/dlogvar of eps * exp(logvar)
    monkeypatch.setattr(layers.Reparameterize, "backward", broken)
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    assert not rows["logvar.W"].passed and rows["mu.W"].passed

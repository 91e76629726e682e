"""The VampPrior (priors.py): its log-density, its gradients by hand, the encoder used twice, and runs with it."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_interrupted_run_resumes_bit_for_bit, train_quietly

from numpyvae import VAE, checkpoint, layers
from numpyvae.gradcheck import check_batch, check_model
from numpyvae.gradcheck_plan import live_seed
from numpyvae.priors import VampPrior

torch = pytest.importorskip("torch")
from benchmarks.torch_reference import TorchVAE  # noqa: E402

DENSE = dict(input_dim=6, hidden_dim=5, latent_dim=3)
CONV = dict(arch="conv", input_shape=(1, 6, 6), hidden_dims=(3, 4), latent_dim=3)


def log_mixture_by_definition(z, m, logvar):
    """log (1/K) sum_k N(z; m_k, exp(logvar_k)), straight from the formula, in float64 with a shifted sum."""
    var = np.exp(logvar)[None]                                                 # (1, K, Z)
    log_n = -0.5 * (((z[:, None, :] - m[None]) ** 2) / var + np.log(2 * np.pi * var)).sum(-1)   # (N, K)
    top = log_n.max(axis=1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(log_n - top).sum(axis=1))) - math.log(m.shape[0])


def test_log_density_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    model = VAE(**DENSE, prior="vamp", pseudo_inputs=7, dtype=np.float64, seed=0)
    u = 1 / (1 + np.exp(-model.params["prior.pseudo_logits"].reshape(7, -1)))
    m, logvar = model.encode(u)
    z = np.random.default_rng(0).standard_normal((9, 3)) * 3
    z[0] = 400.0                            # far from every component: every L_nk is about -1e5, none overflows
    log_p, _ = model.prior.log_prob_forward(model, z)
    np.testing.assert_allclose(log_p, log_mixture_by_definition(z, m, logvar), rtol=1e-12)
    assert np.isfinite(log_p).all()


def test_pseudo_inputs_start_as_the_reference_code_draws_them():
    """jmtomczak/vae_vampprior initializes MNIST pseudo-inputs from N(0.05, 0.01^2); stored as logits."""
    model = VAE(prior="vamp", pseudo_inputs=500, seed=0)
    assert model.params["prior.pseudo_logits"].shape == (500, 1, 28, 28)
    u = 1 / (1 + np.exp(-model.params["prior.pseudo_logits"].astype(np.float64)))
    assert abs(u.mean() - 0.05) < 1e-3 and abs(u.std() - 0.01) < 1e-3
    # the layers' weights are drawn first, so they are those of the same model with the standard prior
    plain = VAE(seed=0)
    np.testing.assert_array_equal(model.flat_params[:plain.num_params], plain.flat_params)


@pytest.mark.parametrize("settings", [DENSE, CONV], ids=["dense", "conv"])
@pytest.mark.parametrize("objective, samples, beta", [("elbo", None, 0.7), ("iwae", 3, 1.0)])
def test_every_gradient_against_finite_differences(settings, objective, samples, beta):
    """Every entry of every tensor, the pseudo-logits included, at weights whose ReLUs all live."""
    seed = live_seed({**settings, "prior": "vamp", "pseudo_inputs": 4}, 0, objective, samples)
    model = VAE(**settings, prior="vamp", pseudo_inputs=4, dtype=np.float64, seed=seed)
    rows = check_model(model, *check_batch(model, batch=5, seed=1, samples=samples), objective=objective, beta=beta)
    assert "prior.pseudo_logits" in {row.name for row in rows}
    assert all(row.passed for row in rows), [(row.name, row.reason) for row in rows if not row.passed]


@pytest.mark.parametrize("settings", [DENSE, CONV], ids=["dense", "conv"])
@pytest.mark.parametrize("objective, samples, beta", [("elbo", None, 0.7), ("iwae", 4, 1.0)])
def test_loss_and_every_gradient_match_autograd(settings, objective, samples, beta):
    model = VAE(**settings, prior="vamp", pseudo_inputs=6, dtype=np.float64, seed=2)
    x, eps = check_batch(model, batch=5, seed=3, samples=samples)[:2]
    ours = model.loss_and_grads(x, eps=eps, objective=objective, beta=beta)
    reference = TorchVAE(model)
    loss = reference.loss(torch.from_numpy(x), torch.from_numpy(eps), objective=objective, beta=beta)
    loss.backward()
    assert abs(float(ours[0]) - loss.item()) <= 1e-9 * abs(loss.item())
    for name, grad in reference.grads().items():
        scale = max(np.abs(grad).max(), 1e-300)
        assert np.abs(model.grads[name] - grad).max() / scale < 1e-9, name


def test_the_kl_is_the_estimate_at_the_sample_and_the_elbo_bounds_the_iwae_bound():
    model = VAE(**DENSE, prior="vamp", pseudo_inputs=5, dtype=np.float64, seed=0)
    x, eps = check_batch(model, batch=4, seed=0)[:2]
    mu, logvar = model.encode(x)
    z = mu + eps * np.exp(logvar / 2)
    log_q = (-0.5 * (eps ** 2 + logvar + np.log(2 * np.pi))).sum()
    _, _, kl = model.loss(x, eps=eps)
    assert float(kl) == pytest.approx(log_q - model.prior.log_prob_forward(model, z)[0].sum(), rel=1e-12)
    # one sample: the IWAE bound at K = 1 is this ELBO
    assert float(model.loss(x, eps=eps[None], objective="iwae")[0]) == pytest.approx(float(model.loss(x, eps=eps)[0]),
                                                                                      rel=1e-12)


def test_a_parameter_used_twice_in_a_step_gets_the_sum_and_one_used_once_costs_no_scratch():
    """layers.Gradients: the first use writes in place, a later one adds through a scratch buffer."""
    layer = layers.Linear("l", 3, 2)
    params = {"l.W": np.ones((3, 2)), "l.b": np.zeros(2)}
    flat = np.zeros(8)
    grads = layers.Gradients({"l.W": flat[:6].reshape(3, 2), "l.b": flat[6:]})
    ws = layers.Workspace(np, np.float64)
    x1, x2, dy = np.arange(6.).reshape(2, 3), np.ones((2, 3)), np.array([[1., 2.], [3., 4.]])
    grads.start_step()
    layer.backward(np, params, grads, dy, layer.forward(np, params, x1)[1], ws)
    assert not [key for key in ws._buffers if key[0].endswith(".again")]   # the first use: no scratch at all
    layer.backward(np, params, grads, dy, layer.forward(np, params, x2)[1], ws)
    np.testing.assert_allclose(grads["l.W"], x1.T @ dy + x2.T @ dy)
    np.testing.assert_allclose(grads["l.b"], 2 * dy.sum(axis=0))
    grads.start_step()                                                     # a new step writes afresh
    layer.backward(np, params, grads, dy, layer.forward(np, params, x1)[1], ws)
    np.testing.assert_allclose(grads["l.W"], x1.T @ dy)


def test_an_error_raised_while_writing_gradients_is_not_swallowed():
    """The context that adds a later use's gradient in lets an exception from the backward inside it through."""
    grads = layers.Gradients({"l.W": np.zeros((3, 2))})
    grads.start_step()
    with pytest.raises(ValueError, match="the backward failed"):
        with grads.into(np, ["l.W"]):
            raise ValueError("the backward failed")


def test_the_standard_prior_step_adds_nothing_while_the_vamp_step_adds_the_encoders_second_use():
    plain = VAE(784, 16, 2, seed=0)
    plain.loss_and_grads(np.full((4, 784), 0.5, np.float32), eps=np.ones((4, 2), np.float32))
    assert not [key for key in plain.workspace._buffers if key[0].endswith(".again")]
    vamp = VAE(784, 16, 2, prior="vamp", pseudo_inputs=3, seed=0)
    vamp.loss_and_grads(np.full((4, 784), 0.5, np.float32), eps=np.ones((4, 2), np.float32))
    again = {key[0] for key in vamp.workspace._buffers if key[0].endswith(".again")}
    assert again == {"enc.W.again", "enc.b.again", "mu.W.again", "mu.b.again", "logvar.W.again", "logvar.b.again"}


@pytest.mark.parametrize("latent", [2, 4], ids=["K=B", "K=B=Z"])
@pytest.mark.parametrize("objective, samples", [("elbo", 1), ("iwae", 2)])
def test_as_many_pseudo_inputs_as_images_keep_their_buffers_apart(objective, samples, latent):
    """The encoder's second pass has a workspace scope of its own: with K = B its caches would otherwise
    overwrite the first pass's (same names, same shapes). The buffered step equals the allocating one.
    With K = B = Z too, every (N, K), (N, Z), (K, Z) and (K,), (N,) buffer of the prior shares its shape
    with the others, so two names that meant one buffer would meet here."""
    model = VAE(784, 16, latent, prior="vamp", pseudo_inputs=4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).uniform(0, 1, (4, 784))
    eps = np.random.default_rng(1).standard_normal((samples, 4, latent) if objective == "iwae" else (4, latent))
    buffered = [float(v) for v in model.loss_and_grads(x, eps=eps, objective=objective)]
    grads = model.flat_grads.copy()
    goal = __import__("numpyvae.objectives", fromlist=["OBJECTIVES"]).OBJECTIVES[objective]
    totals, cache = goal.forward(model, model._input(x), model.backend.to_device(eps, dtype=np.float64))
    model.grads.start_step()
    goal.backward(model, cache)                                         # no workspace: fresh arrays
    assert [float(v) for v in totals] == buffered
    np.testing.assert_array_equal(model.flat_grads, grads)


def test_samples_come_from_the_mixture():
    model = VAE(**DENSE, prior="vamp", pseudo_inputs=3, dtype=np.float64, seed=0)
    # three components far apart, narrow: each sample must sit next to one of them, each about a third of the time
    m = np.array([[-10., 0, 0], [0, 10, 0], [0, 0, 10]])
    model.prior.components = lambda model, ws=None, visit=None: (None, m, np.full((3, 3), -8.0), None)
    z = model.prior_noise(3000, rng=model.backend.rng(5))
    nearest = np.argmin(((z[:, None, :] - m[None]) ** 2).sum(-1), axis=1)
    assert np.abs(z - m[nearest]).max() < 0.2
    assert np.all(np.abs(np.bincount(nearest, minlength=3) / 3000 - 1 / 3) < 0.04)


def with_components(model, m, logvar):
    """model, its VampPrior's components replaced by fixed ones (means m (K, Z), log-variances (K, Z))."""
    model.prior.components = lambda model, ws=None, visit=None: (None, m, logvar, None)
    return model


def test_samples_spread_around_their_component_by_its_standard_deviation():
    """z = m_k + eps * exp(lv_k / 2): components far apart with variance 4 (std 2), so each sample's offset from
    the nearest mean has mean 0 and std 2 in every coordinate (3000 draws: the std within about +-0.05)."""
    m = np.array([[-100., 0, 0], [0, 100, 0], [0, 0, 100]])
    model = with_components(VAE(**DENSE, prior="vamp", pseudo_inputs=3, dtype=np.float64, seed=0),
                            m, np.full((3, 3), math.log(4.0)))
    z = model.prior_noise(3000, rng=model.backend.rng(5))
    offset = z - m[np.argmin(((z[:, None, :] - m[None]) ** 2).sum(-1), axis=1)]
    np.testing.assert_allclose(offset.mean(axis=0), 0, atol=0.15)
    np.testing.assert_allclose(offset.std(axis=0), 2, rtol=0.05)


def test_sampling_with_a_given_rng_draws_everything_from_it():
    """Both the component picks and the noise come from `rng`: the same seed gives the same codes, whatever
    the model's own generator has done in between."""
    model = VAE(**DENSE, prior="vamp", pseudo_inputs=3, dtype=np.float64, seed=0)
    first = model.prior_noise(50, rng=model.backend.rng(5))
    model.prior_noise(7)                                                   # moves the model's own generator on
    np.testing.assert_array_equal(model.prior_noise(50, rng=model.backend.rng(5)), first)


def test_a_uniform_draw_at_the_top_of_its_range_picks_the_last_component(monkeypatch):
    """The pick is floor(u * K), clamped to K - 1: a draw that comes out as 1.0 (u * K == K) still names a
    component, the last one, instead of indexing one past the end."""
    m = np.array([[-100., 0, 0], [0, 100, 0], [0, 0, 100]])
    model = with_components(VAE(**DENSE, prior="vamp", pseudo_inputs=3, dtype=np.float64, seed=0),
                            m, np.full((3, 3), -20.0))

    def top_of_the_range(rng, out):
        out.fill(1.0)
        return out
    monkeypatch.setattr(model.backend, "uniform", top_of_the_range)
    np.testing.assert_allclose(model.prior_noise(4, rng=model.backend.rng(0)), np.repeat(m[-1:], 4, axis=0), atol=1e-3)


class OutlyingDraws:
    """An rng whose normal() returns fixed pixel values: draws of N(0.05, 0.01^2) that a clip must catch."""
    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float64)

    def normal(self, mean, std, size):
        return np.resize(self.values, size)


def test_pseudo_input_draws_outside_0_1_become_finite_logits_at_the_edges():
    """The logit of a draw <= 0 or >= 1 is -inf, inf or nan: the clip into (0, 1) keeps every stored logit finite,
    mapping such a draw to a pixel within 1e-3 of 0 or 1."""
    prior = VampPrior((4,), pseudo_inputs=2)
    logits = prior.init(OutlyingDraws([-0.5, 0.0, 0.05, 1.0, 2.0, 0.5, 1.5, -1.0]))
    assert np.isfinite(logits).all()
    u = 1 / (1 + np.exp(-logits))
    assert (u[[0, 1, 7]] < 1e-3).all() and (u[[3, 4, 6]] > 1 - 1e-3).all() and (u < 1).all() and (u > 0).all()
    np.testing.assert_allclose(u[[2, 5]], [0.05, 0.5], rtol=1e-12)


def test_called_without_a_scale_the_kl_backward_is_the_kls_own_gradient():
    """scale defaults to 1: the standard normal's dmu = mu (of KL = sum (mu^2 + e^lv - lv - 1) / 2) and the
    VampPrior's estimate's dlogvar = -1/2 (d log q / d logvar, module docstring)."""
    for prior in ("normal", "vamp"):
        model = VAE(**DENSE, prior=prior, **({"pseudo_inputs": 3} if prior == "vamp" else {}), dtype=np.float64, seed=0)
        x, eps = check_batch(model, batch=4, seed=0)[:2]
        mu, logvar = model.encode(x)
        z = mu + eps * np.exp(logvar / 2)
        _, cache = model.prior.kl_forward(model, mu, logvar, z, eps)
        model.grads.start_step()
        dmu, dlogvar, _ = model.prior.kl_backward(model, cache)
        if prior == "normal":
            np.testing.assert_allclose(dmu, mu, rtol=1e-12)
        else:
            np.testing.assert_array_equal(dlogvar, np.full(logvar.shape, -0.5))


def test_the_vampprior_kl_is_an_estimate_that_can_be_negative_so_it_is_not_closed_form():
    """log q - log p at one sample can fall below 0 (here, a wide q, variance e^4, sampled at its mean, which is
    a component's mean, where p is dense): the resume check that refuses a negative KL sum must not treat the
    VampPrior's KL as closed form."""
    from numpyvae.priors import PRIORS
    model = VAE(**DENSE, prior="vamp", pseudo_inputs=3, dtype=np.float64, seed=0)
    z = model.prior.components(model)[1][:1]                               # (1, Z) the first component's mean
    kl, _ = model.prior.kl_forward(model, z, np.full(z.shape, 4.0), z, np.zeros(z.shape))
    assert float(kl) < 0
    assert PRIORS["normal"].kl_closed_form and not PRIORS["vamp"].kl_closed_form


def test_the_standard_normal_as_a_mixture_is_one_component_at_the_origin():
    """What the explorer page samples (explore.describe_prior): one component, N(0, I)."""
    model = VAE(**DENSE, seed=0)
    means, logvars = model.prior.mixture(model)
    np.testing.assert_array_equal(means, np.zeros((1, 3)))
    np.testing.assert_array_equal(logvars, np.zeros((1, 3)))


@pytest.mark.parametrize("settings, message", [
    ({"prior": "vamp", "num_classes": 10}, "a VampPrior's pseudo-inputs carry no label"),
    ({"prior": "vampire"}, "prior must be one of normal, vamp, not 'vampire'"),
    ({"pseudo_inputs": 10}, "pseudo_inputs (10) are the VampPrior's"),
    ({"prior": "vamp", "pseudo_inputs": 0}, "pseudo_inputs must be a positive integer, not 0"),
])
def test_settings_that_cannot_work_are_refused(settings, message):
    with pytest.raises(ValueError, match=None) as error:
        VAE(**settings)
    assert message in str(error.value)


def test_the_command_refuses_a_conditional_vampprior_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "numpyvae", "train", "--prior", "vamp", "--conditional",
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "pseudo-inputs carry no label" in done.stderr and not (tmp_path / "run").exists()


# -- training with it ----------------------------------------------------------------------------

@pytest.mark.parametrize("objective, samples", [("elbo", 1), ("iwae", 3)])
def test_a_run_with_the_vampprior_records_it_learns_and_resumes_bit_for_bit(tiny_config, tmp_path, objective, samples):
    config = tiny_config(prior="vamp", pseudo_inputs=5, objective=objective, samples=samples)
    lines = train_quietly(config, tmp_path / "straight")
    assert "with a VampPrior of 5 pseudo-inputs" in lines[0]
    saved = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert (saved["prior"], saved["pseudo_inputs"]) == ("vamp", 5)
    first = checkpoint.load(tmp_path / "straight" / checkpoint.FILENAME)
    start = VAE(**config.model_settings(), seed=config.seed)
    name = slice(start.num_params - 5 * 784, start.num_params)            # the pseudo-logits learn
    assert not np.array_equal(first.params[name], start.flat_params[name])
    assert_interrupted_run_resumes_bit_for_bit(config, tmp_path / "straight", tmp_path / "stopped")


def test_evaluate_and_generate_use_the_mixture(tiny_config, tmp_path):
    train_quietly(tiny_config(epochs=1, prior="vamp", pseudo_inputs=5), tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "numpyvae", "evaluate", str(tmp_path / "run"), "--iw-samples", "20",
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["iwae_nll"] <= result["test_loss"] + 1 and 0 <= result["active_units"] <= 2
    out = tmp_path / "new.png"
    done = subprocess.run([sys.executable, "-m", "numpyvae", "generate", str(tmp_path / "run"), "-n", "8",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_prior_is_a_class_in_the_registry():
    from numpyvae.priors import PRIORS
    assert PRIORS["vamp"] is VampPrior and VampPrior.build(VAE(prior="vamp", pseudo_inputs=3).spec).K == 3


@pytest.mark.parametrize("objective, samples", [("elbo", 1), ("iwae", 3)])
def test_fakegpu_vamp_step_makes_no_transfers_and_matches_numpy(objective, samples):
    """The CuPy path, rehearsed on the fake device: a VampPrior step moves nothing across and waits for
    nothing after its warm-up steps, and computes NumPy's numbers (and sampling stays on the device)."""
    from numpyvae import Adam
    from numpyvae.backend import get_backend
    backend = get_backend("fakegpu")
    counters = backend.xp.counters
    model = VAE(hidden_dim=16, latent_dim=2, prior="vamp", pseudo_inputs=5, backend=backend, seed=0)
    optimizer = Adam(model)
    x = backend.to_device(np.random.default_rng(0).uniform(0, 1, (16, 784)), dtype=np.float32)
    shape = (samples, 16, 2) if objective == "iwae" else (16, 2)
    eps, rng = backend.xp.zeros(shape, dtype=np.float32), backend.rng(0)
    for step in range(4):
        if step == 2:
            counters.clear()                                  # after the warm-up steps
        backend.standard_normal(rng, eps)
        model.loss_and_grads(x, eps=eps, objective=objective)
        optimizer.step()
    assert dict(counters) == {}, "a VampPrior step moved data across or waited for the device"
    model.prior_noise(7, rng)                                 # fresh arrays (allocations), but nothing moves across
    assert {key: n for key, n in counters.items() if key != "alloc"} == {}, "sampling the mixture moved data across"
    host = VAE(hidden_dim=16, latent_dim=2, prior="vamp", pseudo_inputs=5, seed=0)
    fake = VAE(hidden_dim=16, latent_dim=2, prior="vamp", pseudo_inputs=5, backend="fakegpu", seed=0)
    x, eps = np.full((3, 784), 0.25, np.float32), np.ones((samples, 3, 2) if objective == "iwae" else (3, 2), np.float32)
    expected = host.loss_and_grads(x, eps=eps, objective=objective)
    got = fake.loss_and_grads(x, eps=eps, objective=objective)
    assert [fake.backend.scalar(v) for v in got] == [float(v) for v in expected]
    assert np.array_equal(fake.backend.to_host(fake.flat_grads), host.flat_grads)


def test_evaluation_runs_the_encoder_on_the_pseudo_inputs_once(monkeypatch):
    """model.held() computes the mixture's components once: the bound scores many blocks at the same weights."""
    from numpyvae import evaluate, priors
    model = VAE(**DENSE, prior="vamp", pseudo_inputs=4, seed=0)
    data = evaluate.test_dataset(np.random.default_rng(0).integers(0, 256, (12, 6), dtype=np.uint8),
                                 model.backend, model.dtype)
    computed = []
    original = priors.VampPrior.components

    def counting(self, model, ws=None, visit=None):
        computed.append(self.fixed is None)
        return original(self, model, ws, visit)
    monkeypatch.setattr(priors.VampPrior, "components", counting)
    bound = evaluate.importance_weighted_bound(model, data, k=10, max_elements=60)   # many small blocks
    assert len(computed) > 4 and computed.count(True) == 1
    monkeypatch.setattr(priors.VampPrior, "held", priors.Prior.held)                 # every block computes them
    assert evaluate.importance_weighted_bound(model, data, k=10, max_elements=60) == pytest.approx(bound, rel=1e-6)


def test_the_chapters_pseudo_inputs_script_draws_and_measures_a_vampprior_run(tiny_config, tmp_path, capsys):
    """benchmarks/vamp_pseudo_inputs.py, which made chapter 11's figures and numbers, on a small run; a run with
    another prior is refused in one line."""
    from benchmarks import vamp_pseudo_inputs
    train_quietly(tiny_config(epochs=1, prior="vamp", pseudo_inputs=10), tmp_path / "vamp")
    vamp_pseudo_inputs.main([str(tmp_path / "vamp"), "--figures", str(tmp_path / "fig"), "--out", str(tmp_path)])
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["vamp_pseudo_inputs.png", "vamp_samples.png"]
    stats = json.loads((tmp_path / "vamp_pseudo_inputs.json").read_text())
    assert stats["pseudo_inputs"] == 10 and stats["steps"] == 4 and stats["adam_reach"] == pytest.approx(4e-3)
    # measured from the logits training started at: 4 steps of Adam move each by about lr a step at most
    assert 0 < stats["logit_moved_mean"] < stats["logit_moved_max"] <= 1.5 * stats["adam_reach"]
    assert "| how far each logit moved from its first value: mean, max |" in (tmp_path / "vamp_pseudo_inputs.md").read_text()
    train_quietly(tiny_config(epochs=1), tmp_path / "normal")
    with pytest.raises(SystemExit, match="trained with prior 'normal', not the VampPrior"):
        vamp_pseudo_inputs.main([str(tmp_path / "normal"), "--figures", str(tmp_path / "f2"), "--out", str(tmp_path)])
    assert not (tmp_path / "f2").exists()
    damaged = tmp_path / "vamp" / "checkpoint.npz"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(SystemExit, match="vamp_pseudo_inputs: .*checkpoint.npz is corrupt"):
        vamp_pseudo_inputs.main([str(tmp_path / "vamp"), "--figures", str(tmp_path / "f3"), "--out", str(tmp_path)])

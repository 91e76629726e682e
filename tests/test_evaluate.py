"""The test negative ELBO and the importance-weighted bound, checked against exact answers."""
import json
import math

import numpy as np
import pytest

from numpyvae import datasets, evaluate, rundir, train
from numpyvae.batches import DeviceDataset
from numpyvae.evaluate import RunningLogSumExp, chunk_sizes, importance_weighted_bound, negative_elbo
from numpyvae.network import make_spec, widest_row
from numpyvae.losses import LIKELIHOODS
from numpyvae.vae import VAE


def exact_log_likelihood(model, x):
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) over z, by quadrature (Z = 1 only), float64."""
    z = np.linspace(-12, 12, 48001)[:, None]                                      # (G, 1)
    logits = model.decode_logits(z)                                               # (G, D)
    log_px_z = (x * logits - np.logaddexp(0, logits)).sum(axis=1)                 # (G,)
    log_joint = log_px_z - 0.5 * z[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    top = log_joint.max()
    return top + math.log(np.trapezoid(np.exp(log_joint - top), z[:, 0]))


def log_likelihood(likelihood, x, logits):
    """log p(x | logits) summed over pixels (the last axis), written from each likelihood's formula in float64.

    bernoulli: x l - log(1 + e^l); gaussian (the seed's): -(sigmoid(l) - x)^2; continuous Bernoulli: the
    Bernoulli's term + log C(l), C(l) = l / tanh(l / 2), with C(0) = 2 (log 2 + l^2 / 12 near 0).
    """
    if likelihood == "gaussian":
        return -((1 / (1 + np.exp(-logits)) - x) ** 2).sum(axis=-1)
    per_pixel = x * logits - np.logaddexp(0, logits)
    if likelihood == "continuous-bernoulli":
        a = np.abs(logits)
        near = a < 1e-4                                          # the series' next term, 7 l^4 / 1440, is < 1e-18
        safe = np.where(near, 1.0, a)
        per_pixel = per_pixel + np.where(near, math.log(2) + logits ** 2 / 12, np.log(safe) - np.log(np.tanh(safe / 2)))
    else:
        assert likelihood == "bernoulli", f"write {likelihood}'s log p(x | logits) here"
    return per_pixel.sum(axis=-1)


@pytest.fixture
def tiny_model():
    """A float64 VAE with 6 pixels and a 1-D latent space (so log p(x) can be integrated), weights scaled up
    so the posterior is far from the prior and the bounds differ visibly."""
    model = VAE(6, 8, 1, "bernoulli", dtype=np.float64, seed=3)
    model.flat_params *= 3
    image = np.array([[255, 0, 255, 255, 0, 0]], dtype=np.uint8)
    return model, image


def test_running_logsumexp_matches_the_direct_one_without_overflow():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 300, size=(50, 7))                   # exp() of these overflows float64
    values[:, 3] -= 5000
    lse = RunningLogSumExp(np, (7,))
    for start in range(0, 50, 8):
        lse.add(values[start:start + 8])
    top = values.max(axis=0)
    direct = top + np.log(np.exp(values - top).sum(axis=0))
    np.testing.assert_allclose(lse.value(), direct, rtol=1e-12)


@pytest.mark.parametrize("k, dim, budget", [(1, 784, 2 ** 22), (100, 784, 2 ** 22), (5000, 784, 2 ** 22),
                                            (10 ** 6, 784, 2 ** 22), (7, 784, 100)])
def test_chunks_stay_within_the_memory_budget(k, dim, budget):
    images, samples = chunk_sizes(k, dim, budget)
    assert images >= 1 and 1 <= samples <= k
    assert images * samples * dim <= max(budget, dim)
    assert samples == k or images == 1                          # split samples only when one image needs it


def test_the_default_chunks_are_the_documented_ones():
    """MAX_ELEMENTS = 2 ** 22 numbers (16 MB in float32) per block: at k = 100 the dense model's IWAE bound
    takes 53 images of 100 samples at a time (189 blocks for 10,000 images), the conv model's 2. A smaller
    budget gives the same numbers, but one image times one sample per decoder call is ~10^6 calls, not 189."""
    assert chunk_sizes(100, 784) == (53, 100)                  # 2 ** 22 // 784 = 5349 rows
    assert chunk_sizes(10_000, 784) == (1, 5349)                # one image needs more than a block
    assert chunk_sizes(100, 14112) == (2, 100)                 # the conv decoder's widest row, below


def test_the_widest_row_counts_a_convolutions_whole_patch():
    """A transposed convolution's patch matrix holds k * k numbers per pixel of its smaller image and
    channel of its larger one: 3 * 3 * (7 * 7) * 32 for the default conv decoder's first, more than
    any activation (3136). Counting k instead of k * k would let evaluation chunks use 3x the budget."""
    assert widest_row(make_spec(arch="conv", latent_dim=20)) == 3 * 3 * 7 * 7 * 32
    assert widest_row(make_spec(arch="dense", latent_dim=20)) == 784


def test_decode_is_the_sigmoid_of_the_decoders_logits():
    model = VAE(784, 32, 3, seed=0)
    z = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    probabilities = 1 / (1 + np.exp(-model.decode_logits(z).astype(np.float64)))
    np.testing.assert_allclose(probabilities, model.decode(z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_log_likelihood_is_minus_the_models_reconstruction_term(likelihood):
    model = VAE(784, 32, 3, likelihood, dtype=np.float64, seed=1)
    rng = np.random.default_rng(1)
    x, eps = rng.uniform(0, 1, (4, 784)), rng.standard_normal((4, 3))
    _, recon, _ = model.loss(x, eps=eps)
    mu, logvar = model.encode(x)
    z = mu + eps * np.exp(0.5 * logvar)
    logits = model.decode_logits(z)[None]                                         # (1, 4, D)
    assert -model.recon_term.log_prob(np, x, logits).sum() == pytest.approx(float(recon), rel=1e-12)


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_log_prob_sums_over_pixels_only(likelihood):
    """log_prob gives one number per (sample, image): summed over the last axis, not over the batch or samples."""
    rng = np.random.default_rng(5)
    logits, x = 3 * rng.standard_normal((2, 3, 5)), rng.uniform(0, 1, (3, 5))    # (S, C, D) against (C, D)
    got = LIKELIHOODS[likelihood].log_prob(np, x, logits)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, log_likelihood(likelihood, x, logits), rtol=1e-13, atol=0)


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_log_weights_are_log_joint_minus_log_posterior(likelihood):
    """log w = log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma^2), each term written out here."""
    model = VAE(784, 32, 3, likelihood, dtype=np.float64, seed=2)
    rng = np.random.default_rng(2)
    x, eps = rng.uniform(0, 1, (4, 784)), rng.standard_normal((2, 4, 3))
    mu, logvar = model.encode(x)
    z = mu + eps * np.exp(0.5 * logvar)

    def log_normal(v, mean, var):
        return (-0.5 * (v - mean) ** 2 / var - 0.5 * np.log(2 * np.pi * var)).sum(axis=-1)
    logits = model.decode_logits(z.reshape(8, 3)).reshape(2, 4, 784)
    expected = (log_likelihood(likelihood, x, logits) + log_normal(z, 0, 1)
                - log_normal(z, mu, np.exp(logvar)))
    np.testing.assert_allclose(evaluate.log_weights(model, x, mu, logvar, eps), expected, rtol=1e-12)


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_conditional_log_weights_give_each_sample_its_images_label(likelihood):
    """Row s * C + c of the decoded samples is image c's sample s: it must be decoded with label y[c]."""
    model = VAE(12, 8, 3, likelihood, num_classes=5, dtype=np.float64, seed=4)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 1, (4, 12)), np.array([0, 3, 1, 4])
    eps = rng.standard_normal((3, 4, 3))                                          # S = 3 samples of C = 4 images
    mu, logvar = model.encode(x, y)
    got = evaluate.log_weights(model, x, mu, logvar, eps, y)                      # (S, C)
    for s in range(3):
        for c in range(4):
            z = mu[c] + eps[s, c] * np.exp(0.5 * logvar[c])
            logits = model.decode_logits(z[None], y[c:c + 1])[0]
            expected = (log_likelihood(likelihood, x[c], logits)
                        + 0.5 * (eps[s, c] @ eps[s, c] + logvar[c].sum() - z @ z))
            assert got[s, c] == pytest.approx(expected, rel=1e-12)


def test_iwae_bound_tightens_towards_the_exact_log_likelihood(tiny_model):
    model, image = tiny_model
    copies = DeviceDataset(np.repeat(image, 2000, axis=0), model.backend, model.dtype)  # averages the noise
    exact = exact_log_likelihood(model, image.reshape(1, -1) / 255.0)
    elbo = -negative_elbo(model, copies, samples=10)["loss"]
    bounds = {k: importance_weighted_bound(model, copies, k=k, max_elements=600) for k in (1, 10, 100)}
    bounds[20000] = importance_weighted_bound(model, DeviceDataset(image, model.backend, model.dtype), k=20000,
                                              max_elements=600)
    # Burda et al.: ELBO = bound(1) <= bound(10) <= bound(100) <= ... <= log p(x)
    assert bounds[1] == pytest.approx(elbo, abs=0.2)
    assert elbo + 0.2 < bounds[10] < bounds[100] < bounds[20000] <= exact + 1e-3
    assert exact - elbo > 1                                     # the bounds have room to differ...
    assert bounds[20000] == pytest.approx(exact, abs=0.02)      # ...and the tightest one closes it


def test_iwae_bound_does_not_depend_on_the_chunking(tiny_model):
    model, image = tiny_model
    data = DeviceDataset(np.repeat(image, 5, axis=0), model.backend, model.dtype)
    # one chunk of everything, against one image and 100 samples at a time (k split in 20 blocks)
    whole = importance_weighted_bound(model, data, k=2000, max_elements=10 ** 6)
    pieces = importance_weighted_bound(model, data, k=2000, max_elements=600)
    assert whole == pytest.approx(pieces, abs=0.02)


def test_negative_elbo_is_reproducible_and_averages_samples():
    model = VAE(784, 32, 3, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    data = DeviceDataset(images, model.backend, model.dtype)
    one = negative_elbo(model, data, samples=1, batch_size=7)
    assert one == negative_elbo(model, data, samples=1, batch_size=7)
    assert one["loss"] == pytest.approx(one["recon"] + one["kl"], rel=1e-6)
    ten = negative_elbo(model, data, samples=10, batch_size=7)
    assert ten["kl"] == pytest.approx(one["kl"], rel=1e-5)   # analytic KL: the same for every sample
    assert ten["recon"] != one["recon"]


def test_binarize_fixed_draws_each_pixel_once_with_its_probability():
    images = np.full((200, 28, 28), 64, dtype=np.uint8)
    images[:, :, :14] = 255
    binary = evaluate.binarize_fixed(images)
    assert binary.dtype == np.uint8 and set(np.unique(binary)) == {0, 255}
    assert (binary[:, :, :14] == 255).all()
    assert (binary[:, :, 14:] == 255).mean() == pytest.approx(64 / 255, abs=0.01)
    assert np.array_equal(binary, evaluate.binarize_fixed(images))


def test_evaluating_a_trained_run(tiny_config, tmp_path):
    config = tiny_config()
    result = train.train(config, tmp_path / "run", log=lambda line: None, progress=False)
    config, model, saved = rundir.load_run(tmp_path / "run")
    assert np.array_equal(model.flat_params, result.model.flat_params) and saved.epoch == 2
    images, _ = datasets.load_fashion_mnist("test", config.data_dir, download=False)
    data = evaluate.test_dataset(images, model.backend, model.dtype)
    numbers = evaluate.evaluate(model, data, elbo_samples=5, iw_samples=50)
    assert numbers["test_images"] == 20
    # one sample with the evaluation seed is exactly the test loss training recorded
    assert negative_elbo(model, data)["loss"] == pytest.approx(result.metrics[-1]["test_loss"], abs=1e-4)
    assert numbers["iwae_nll"] < numbers["test_loss"]          # the IWAE bound is the tighter one
    assert numbers["test_loss"] - numbers["iwae_nll"] < 50


def test_the_fake_gpu_evaluates_like_numpy(tiny_model):
    model, image = tiny_model
    device = VAE(6, 8, 1, "bernoulli", backend="fakegpu", dtype=np.float64, seed=3)
    device.flat_params[...] = device.backend.to_device(model.flat_params)
    images = np.repeat(image, 3, axis=0)
    host_bound = importance_weighted_bound(model, DeviceDataset(images, model.backend, model.dtype), k=50)
    device_bound = importance_weighted_bound(device, DeviceDataset(images, device.backend, device.dtype), k=50)
    assert device_bound == pytest.approx(host_bound, rel=1e-12)


def test_evaluate_uses_the_documented_sample_counts(tiny_model):
    """README promises a 10-sample negative ELBO and the IWAE bound at k = 100 unless told otherwise."""
    model, image = tiny_model
    data = DeviceDataset(np.repeat(image, 3, axis=0), model.backend, model.dtype)
    numbers = evaluate.evaluate(model, data)
    assert (numbers["elbo_samples"], numbers["iw_samples"]) == (10, 100)
    assert numbers["test_loss"] == negative_elbo(model, data, samples=10)["loss"]
    assert numbers["iwae_nll"] == -importance_weighted_bound(model, data, k=100)
    assert importance_weighted_bound(model, data) == importance_weighted_bound(model, data, k=100)


@pytest.mark.parametrize("likelihood, on_binary, on_grey", [("bernoulli", True, False), ("gaussian", False, False),
                                                             ("continuous-bernoulli", True, True)])
def test_which_likelihoods_are_densities(likelihood, on_binary, on_grey):
    """Only a normalized p(x|z) makes the IWAE number a bound on -log p(x): the Bernoulli on binary pixels, the
    continuous Bernoulli on any; the seed's squared error never (it has no normalizing constant)."""
    term = LIKELIHOODS[likelihood]
    assert (term.is_density(binary=True), term.is_density(binary=False)) == (on_binary, on_grey)


def test_progress_ends_at_every_image(tiny_model):
    """progress(stage, images_done, images) is told each batch, ending with all of them, for both passes."""
    model, image = tiny_model
    data = DeviceDataset(np.repeat(image, 7, axis=0), model.backend, model.dtype)
    calls = []
    negative_elbo(model, data, samples=2, batch_size=3, progress=lambda *args: calls.append(args))
    assert [done for _, done, _ in calls] == [3, 6, 7] and {total for *_, total in calls} == {7}
    calls.clear()
    importance_weighted_bound(model, data, k=4, max_elements=200, progress=lambda *args: calls.append(args))
    done = [done for _, done, _ in calls]
    assert len(done) > 1 and done == sorted(set(done)) and done[-1] == 7 and {total for *_, total in calls} == {7}


def test_a_unit_is_active_only_above_the_threshold(monkeypatch, tiny_model):
    """Burda et al.: active means Var_x(mu_u(x)) > 0.01; a variance of exactly 0.01 is not."""
    model, image = tiny_model
    data = DeviceDataset(image, model.backend, model.dtype)
    monkeypatch.setattr(evaluate, "latent_activity", lambda *args: np.array([0.01, 0.0100001, 0.5, 0.0]))
    assert evaluate.active_units(model, data) == 2


# -- saying how long it takes ------------------------------------------------------------------------

def test_the_forecast_counts_every_pass_an_evaluation_makes():
    """Per image: S whole forward passes, an encoder and k decoder passes, an encoder pass for the active units."""
    times = evaluate.PassTimes(forward=3.0, decoder=1.0)                  # so the encoder takes 2
    assert times.evaluation(10, elbo_samples=2, iw_samples=5) == 10 * (2 * 3 + 2 * 2 + 5 * 1)
    # timing noise can make a decoder pass look longer than a whole forward: the encoder then counts 0
    assert evaluate.PassTimes(forward=1.0, decoder=1.5).evaluation(1, elbo_samples=1, iw_samples=1) == 2.5


def test_the_forecast_speaks_from_half_a_minute_in_seconds_then_minutes(monkeypatch):
    data = evaluate.test_dataset(np.zeros((3, 28, 28), np.uint8), VAE().backend, np.float32)
    for seconds, line in ((29.9, None), (30.0, "about 30 s"), (119.0, "about 119 s"), (265.0, "about 4 minutes")):
        # one ELBO sample and no other pass: the forecast is 3 images x one forward pass (the encoder counts 0)
        monkeypatch.setattr(evaluate, "estimate_pass_times", lambda *args: evaluate.PassTimes(seconds / 3, seconds / 3))
        said = evaluate.forecast(VAE(), data, elbo_samples=1, iw_samples=0)
        assert said == line if line is None else line in said.split(";")[0], (seconds, said)


def test_a_long_evaluation_says_how_long_at_its_start_and_offers_a_quicker_one(monkeypatch):
    """A conv evaluation took 265 s on a busy machine with nothing saying so; a short one stays silent."""
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    model = VAE(arch="conv", latent_dim=4, hidden_dims=(4, 8))
    data = evaluate.test_dataset(images, model.backend, model.dtype)
    state = model.rng.bit_generator.state
    assert evaluate.forecast(model, data) is None                         # 30 small images: seconds at most
    assert model.rng.bit_generator.state == state                         # the probe draws from its own stream
    monkeypatch.setattr(evaluate, "FORECAST_SECONDS", 0.0)
    line = evaluate.forecast(model, data, elbo_samples=10, iw_samples=100)
    assert line.startswith("evaluating 30 test images (10 ELBO samples and k = 100 importance samples each) "
                           "takes about ") and "; --samples 1 --iw-samples 10 takes about " in line
    assert min(evaluate.estimate_pass_times(model, data)) > 0            # timed, so no order between them is sure


def test_the_evaluate_command_prints_the_forecast_on_stderr(tiny_config, tmp_path, capsys, monkeypatch):
    from numpyvae import cli
    train.train(tiny_config(), tmp_path / "run", log=lambda line: None, progress=False)
    monkeypatch.setattr(evaluate, "FORECAST_SECONDS", 0.0)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--samples", "2", "--iw-samples", "5", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("numpyvae evaluate: evaluating 20 test images (2 ELBO samples and k = 5 importance")
    assert json.loads(out)["iw_samples"] == 5                             # stdout stays one JSON object

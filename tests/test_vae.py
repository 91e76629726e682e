"""The VAE's public API: flat buffers with named views, shapes, determinism, stability, guard rails."""
import warnings

import numpy as np
import pytest

from numpyvae import VAE, layers
from numpyvae.losses import LIKELIHOODS
from numpyvae.objectives import OBJECTIVES

NAMES = ["enc.W", "enc.b", "mu.W", "mu.b", "logvar.W", "logvar.b", "dec.W", "dec.b", "out.W", "out.b"]


def batch(n=8, d=784, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, d)).astype(np.float32)


def test_params_and_grads_are_named_views_into_flat_buffers():
    model = VAE()
    shapes = {"enc.W": (784, 400), "enc.b": (400,), "mu.W": (400, 20), "mu.b": (20,),
              "logvar.W": (400, 20), "logvar.b": (20,), "dec.W": (20, 400), "dec.b": (400,),
              "out.W": (400, 784), "out.b": (784,)}
    assert list(model.params) == list(model.grads) == NAMES
    assert {k: v.shape for k, v in model.params.items()} == shapes
    assert {k: v.shape for k, v in model.grads.items()} == shapes
    assert model.num_params == model.flat_params.size == sum(np.prod(s) for s in shapes.values()) == 652824
    model.loss_and_grads(batch())
    assert np.isfinite(model.flat_grads).all() and np.abs(model.flat_grads).max() > 0
    model.flat_params[:] = np.arange(model.num_params)
    assert model.params["enc.W"][0, 1] == 1 and model.params["out.b"][-1] == model.num_params - 1
    assert np.array_equal(np.concatenate([g.ravel() for g in model.grads.values()]), model.flat_grads)


def test_initialization_like_pytorch_linear():
    model = VAE(seed=3)
    for name, p in model.params.items():
        fan_in = model.params[name[:-1] + "W"].shape[0]
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert np.array_equal(VAE(seed=3).flat_params, model.flat_params)
    assert not np.array_equal(VAE(seed=4).flat_params, model.flat_params)


def test_loss_and_grads_is_deterministic_given_eps():
    x, eps = batch(), np.random.default_rng(1).standard_normal((8, 20)).astype(np.float32)
    a, b = VAE(seed=0), VAE(seed=0)
    la, lb = a.loss_and_grads(x, eps=eps), b.loss_and_grads(x, eps=eps)
    assert [float(v) for v in la] == [float(v) for v in lb]
    assert np.array_equal(a.flat_grads, b.flat_grads)
    total, recon, kl = la
    assert float(total) == pytest.approx(float(recon) + float(kl), rel=1e-6)
    assert float(kl) > 0 and float(recon) > 0


def test_loss_matches_a_direct_numpy_formula():
    x = batch(4).astype(np.float64)
    eps = np.random.default_rng(2).standard_normal((4, 20))
    model = VAE(dtype=np.float64, seed=5)
    p = model.params
    h = np.maximum(x @ p["enc.W"] + p["enc.b"], 0)
    mu, logvar = h @ p["mu.W"] + p["mu.b"], h @ p["logvar.W"] + p["logvar.b"]
    z = mu + eps * np.exp(0.5 * logvar)
    logits = np.maximum(z @ p["dec.W"] + p["dec.b"], 0) @ p["out.W"] + p["out.b"]
    probs = 1 / (1 + np.exp(-logits))
    recon = -np.sum(x * np.log(probs) + (1 - x) * np.log(1 - probs))
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar))
    total, got_recon, got_kl = model.loss_and_grads(x, eps=eps)
    assert float(got_recon) == pytest.approx(recon, rel=1e-12)
    assert float(got_kl) == pytest.approx(kl, rel=1e-12)
    gaussian = VAE(likelihood="gaussian", dtype=np.float64, seed=5)
    assert float(gaussian.loss(x, eps=eps)[1]) == pytest.approx(np.sum((probs - x) ** 2), rel=1e-12)


def test_float32_stays_float32():
    model = VAE()
    model.loss_and_grads(batch())
    assert model.flat_params.dtype == model.flat_grads.dtype == np.float32
    buffers = model.workspace._buffers.values()
    assert len(buffers) > 20 and all(b.dtype in (np.float32, np.bool_) for b in buffers)


def test_extreme_logits_do_not_overflow_in_float32():
    x = np.array([[0.0, 1.0, 0.5, 0.0, 1.0]], np.float32)
    logits = np.array([[-1000.0, 1000.0, 0.0, 1000.0, -1000.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = layers.sigmoid(np, logits, out=np.empty_like(logits))
        from numpyvae.losses import LIKELIHOODS
        bce, gauss = LIKELIHOODS["bernoulli"], LIKELIHOODS["gaussian"]
        loss, cache = bce.forward(np, logits, x)
        grad = bce.backward(np, cache)
        gauss_grad = gauss.backward(np, gauss.forward(np, logits, x)[1])
        log_probs = [term.log_prob(np, x, logits) for term in (bce, gauss)]
    assert np.array_equal(probs, [[0, 1, 0.5, 1, 0]])
    assert np.isfinite(loss) and float(loss) == pytest.approx(2000 + np.log(2), rel=1e-6)
    assert np.array_equal(grad, [[0, 0, 0, 1, -1]])
    assert np.isfinite(gauss_grad).all()
    assert float(log_probs[0][0]) == pytest.approx(-float(loss), rel=1e-6) and np.isfinite(log_probs[1]).all()


def test_backward_needs_the_cache_of_its_forward_and_layers_keep_nothing():
    """Backward cannot run without a forward: the cache forward returns is a required argument.
    And nothing is kept between calls: a second forward does not disturb the first one's backward."""
    import inspect
    for backward in (layers.linear_backward, layers.relu_backward, layers.sigmoid_backward,
                     layers.reparameterize_backward):
        assert inspect.signature(backward).parameters["cache"].default is inspect.Parameter.empty
    rng = np.random.default_rng(0)
    x1, x2, dy = rng.standard_normal((2, 4)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    _, cache1 = layers.relu_forward(np, x1)
    layers.relu_forward(np, x2)
    np.testing.assert_array_equal(layers.relu_backward(np, dy, cache1), dy * (x1 > 0))


@pytest.mark.parametrize("num_classes", [0, 4])
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_the_buffered_training_step_equals_the_allocating_one(likelihood, num_classes):
    """The workspace only decides where results are written, never what they are."""
    model = VAE(784, 32, 3, likelihood, num_classes=num_classes, seed=4)
    x, eps = batch(6), np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    y = np.arange(6) % 4 if num_classes else None
    buffered = [float(v) for v in model.loss_and_grads(x, eps=eps, y=y)]
    buffered_grads = model.flat_grads.copy()
    model.flat_grads[...] = np.nan
    y_hot = model._one_hot(y, 6)                                                  # no workspace: fresh arrays
    elbo = OBJECTIVES["elbo"]
    totals, caches = elbo.forward(model, model._input(x), model._input(eps), y_hot, 1.0)
    model.grads.start_step()
    elbo.backward(model, caches, 1.0)
    assert [float(v) for v in totals] == buffered
    np.testing.assert_array_equal(model.flat_grads, buffered_grads)
    assert len(model.workspace._buffers) > 20               # the first call did use the workspace


def test_encode_decode_reconstruct_sample():
    model = VAE(seed=0)
    x = batch(5)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 20)
    images = model.decode(mu)
    assert images.shape == (5, 784) and images.min() >= 0 and images.max() <= 1
    assert np.array_equal(model.reconstruct(x), images)
    assert model.reconstruct(x, sample=True, rng=np.random.default_rng(0)).shape == (5, 784)
    samples = model.sample(3, rng=np.random.default_rng(0))
    assert samples.shape == (3, 784) and ((samples >= 0) & (samples <= 1)).all()
    mu2, _ = model.encode(batch(5, seed=1))
    assert not np.array_equal(mu, mu2)                   # results are copies, not reused buffers


def test_configurable_sizes_and_batch_sizes():
    model = VAE(input_dim=10, hidden_dim=7, latent_dim=2, likelihood="gaussian")
    for n in (1, 3, 3, 5):
        total, recon, kl = model.loss_and_grads(batch(n, d=10))
        assert np.isfinite(float(total))
    assert model.params["dec.W"].shape == (2, 7)


@pytest.mark.parametrize("kwargs, message", [
    ({"likelihood": "poisson"}, "likelihood must be one of bernoulli, gaussian"),
    ({"latent_dim": 0}, "latent_dim must be a positive integer"),
    ({"hidden_dim": 2.5}, "hidden_dim must be a positive integer"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(**kwargs)


def test_bad_batch_shapes():
    model = VAE(6, 5, 3)
    with pytest.raises(ValueError, match="eps must have shape"):
        model.loss_and_grads(np.ones((2, 6)), eps=np.ones((3, 3)))
    with pytest.raises(ValueError, match="batch, features"):
        model.loss_and_grads(np.ones(6))


def test_kl_gradient_stays_accurate_in_float32_for_unused_latents():
    """logvar near 0 (an unused latent): exp(logvar) - 1 would cancel to ~3 digits in float32; expm1 keeps 7."""
    from numpyvae.losses import gaussian_kl_backward, gaussian_kl_forward
    logvar = np.array([[1e-4, -3e-4, 2e-5, 0.7]], np.float32)
    mu = np.zeros_like(logvar)
    _, dlogvar = gaussian_kl_backward(np, gaussian_kl_forward(np, mu, logvar)[1])
    assert dlogvar.dtype == np.float32
    exact = 0.5 * np.expm1(logvar.astype(np.float64))
    np.testing.assert_allclose(dlogvar, exact, rtol=1e-6)


def small_batch(model, n=8, seed=0):
    """x (n, D) in [0, 1] and, for a conditional model, labels y (n,); float64 like the model."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, model.input_dim)), (rng.integers(0, model.num_classes, n) if model.conditional
                                                     else None)


@pytest.mark.parametrize("num_classes", [0, 4], ids=["plain", "conditional"])
@pytest.mark.parametrize("objective, samples", [("elbo", 1), ("iwae", 3)])
def test_eps_drawn_from_rng_give_the_same_step_as_the_same_eps_passed_in(objective, samples, num_classes):
    """Every gradient check passes eps in, but training draws it (rng=...): the drawn noise must be the step's
    noise, not a buffer the step then overwrites (drawn into z's buffer, logvar's gradient comes out wrong)."""
    model = VAE(6, 5, 3, num_classes=num_classes, dtype=np.float64, seed=7)
    x, y = small_batch(model, 8, seed=1)
    drawn = [float(v) for v in model.loss_and_grads(x, rng=np.random.default_rng(11), y=y, objective=objective,
                                                    samples=samples)]
    drawn_grads = model.flat_grads.copy()
    # _noise and _iwae_noise fill a buffer with rng.standard_normal: (B, Z) for the ELBO, (K, B, Z) for the IWAE
    shape = (8, 3) if objective == "elbo" else (samples, 8, 3)
    eps = np.random.default_rng(11).standard_normal(shape, dtype=model.dtype)
    given = [float(v) for v in model.loss_and_grads(x, eps=eps, y=y, objective=objective)]
    assert drawn == given
    np.testing.assert_array_equal(drawn_grads, model.flat_grads)


def test_an_objectives_check_defaults_to_the_settings_every_objective_accepts():
    """check(beta=1, samples=1) by default: a call that names only one of them checks only that one."""
    OBJECTIVES["elbo"].check()
    OBJECTIVES["elbo"].check(beta=0.5)
    OBJECTIVES["iwae"].check()
    OBJECTIVES["iwae"].check(samples=5)
    with pytest.raises(ValueError, match="beta must be 1"):
        OBJECTIVES["iwae"].check(beta=0.5)
    with pytest.raises(ValueError, match="samples=2"):
        OBJECTIVES["elbo"].check(samples=2)


def test_the_elbos_kl_backward_without_a_scale_is_the_kls_own_gradient():
    """What an objective that overrides kl_forward alone (or calls the ELBO's kl_backward unscaled) gets: beta = 1."""
    model = VAE(6, 5, 3, dtype=np.float64, seed=3)
    x, _ = small_batch(model, 5, seed=2)
    eps = np.random.default_rng(2).standard_normal((5, 3))
    _, cache = OBJECTIVES["elbo"].forward(model, x, eps)
    mu, logvar = model.encode(x)
    dmu, dlogvar, dz = OBJECTIVES["elbo"].kl_backward(model, cache.kl)
    np.testing.assert_allclose(dmu, mu, rtol=1e-12)                               # d KL / d mu
    np.testing.assert_allclose(dlogvar, (np.exp(logvar) - 1) / 2, rtol=1e-12)     # d KL / d logvar
    assert dz is None                                                             # the closed form reads no sample


def test_kl_returned_at_beta_is_the_unweighted_kl():
    """At beta != 1 the returned KL (what metrics.csv records) is KL itself; only the total weighs it by beta."""
    model = VAE(6, 5, 3, dtype=np.float64, seed=3)
    x, _ = small_batch(model, 5, seed=2)
    eps = np.random.default_rng(2).standard_normal((5, 3))
    mu, logvar = model.encode(x)
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar))     # Kingma & Welling, Appendix B
    for totals in (model.loss_and_grads(x, eps=eps, beta=0.5), model.loss(x, eps=eps, beta=0.5)):
        total, recon, got_kl = (float(v) for v in totals)
        assert got_kl == pytest.approx(kl, rel=1e-12)
        assert total == pytest.approx(recon + 0.5 * kl, rel=1e-12)
        assert recon == pytest.approx(float(model.loss(x, eps=eps)[1]), rel=1e-12)   # beta leaves recon alone


def sigmoid(logits):
    return 1 / (1 + np.exp(-logits))


def continuous_bernoulli_mean(logits):
    """E[x | l] = 1/(1 - e^-l) - 1/l, and its series 1/2 + l/12 - l^3/720 near l = 0 (where that is 0/0)."""
    near = np.abs(logits) < 1e-2                                  # the series' next term, l^5/30240, is < 4e-15
    safe = np.where(near, 1.0, logits)
    return np.where(near, 0.5 + logits / 12 - logits ** 3 / 720, -1 / np.expm1(-safe) - 1 / safe)


# the mean of p(x | logits) of every likelihood, written from its formula (losses.py derives them)
LIKELIHOOD_MEANS = {"bernoulli": sigmoid, "gaussian": sigmoid, "continuous-bernoulli": continuous_bernoulli_mean}


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_decode_is_the_likelihoods_mean_of_the_logits(likelihood):
    """The pictures decode shows are E[x | z]: for the continuous Bernoulli that is not sigmoid(logits)."""
    model = VAE(6, 5, 3, likelihood, dtype=np.float64, seed=1)
    model.params["out.b"][...] = [-3.0, -0.3, 0.0, 0.004, 0.3, 3.0]   # logits on both sides of 0, some near it
    z = np.random.default_rng(1).standard_normal((4, 3))
    logits = model.decode_logits(z)
    np.testing.assert_allclose(model.decode(z), LIKELIHOOD_MEANS[likelihood](logits), rtol=1e-13, atol=0)


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_mean_without_a_buffer_leaves_the_logits_alone(likelihood):
    """likelihood.mean(xp, logits) returns a new array; only decode, which owns its logits, passes out=logits."""
    logits = np.array([[-3.0, -0.1, 0.0, 0.2, 4.0]])
    mean = LIKELIHOODS[likelihood].mean(np, logits)
    np.testing.assert_array_equal(logits, [[-3.0, -0.1, 0.0, 0.2, 4.0]])
    np.testing.assert_allclose(mean, LIKELIHOOD_MEANS[likelihood](logits), rtol=1e-13, atol=0)


def test_reconstruct_with_sample_decodes_a_posterior_sample():
    """sample=True decodes z = mu + exp(logvar / 2) eps with eps from rng; sample=False decodes mu itself."""
    model = VAE(6, 5, 3, dtype=np.float64, seed=2)
    x, _ = small_batch(model, 4, seed=3)
    mu, logvar = model.encode(x)
    eps = np.random.default_rng(5).standard_normal((4, 3), dtype=model.dtype)   # _noise's draw, (B, Z)
    sampled = model.reconstruct(x, sample=True, rng=np.random.default_rng(5))
    np.testing.assert_allclose(sampled, model.decode(mu + np.exp(0.5 * logvar) * eps), rtol=1e-13, atol=0)
    np.testing.assert_array_equal(model.reconstruct(x), model.decode(mu))
    assert np.abs(sampled - model.reconstruct(x)).max() > 1e-3      # so the two checks above tell them apart


def test_unscaled_pixels_are_refused_on_the_first_batch_even_in_the_models_dtype():
    """0-255 pixels already in the model's dtype skip the conversion, but not the first batch's value check."""
    model = VAE(6, 5, 3, dtype=np.float64)
    with pytest.raises(ValueError, match="divide 0-255 images by 255"):
        model.loss_and_grads(np.full((2, 6), 255.0), eps=np.zeros((2, 3)))


@pytest.mark.parametrize("call", ["loss", "encode", "reconstruct"])
def test_unscaled_pixels_are_refused_by_every_public_call_after_a_good_training_step(call):
    """Forgetting / 255 after one good batch in the model's dtype: only the training step's hot loop
    skips the value scan; loss, encode and reconstruct scan every time (no NaN loss, no mu of -80)."""
    model = VAE(6, 5, 3)
    model.loss_and_grads(np.full((2, 6), 0.5, dtype=np.float32))         # a good first batch
    unscaled = np.full((2, 6), 255.0, dtype=np.float32)                  # the model's dtype: no conversion
    with pytest.raises(ValueError, match=r"divide 0-255 images by 255"):
        getattr(model, call)(unscaled)


def test_the_training_step_skips_the_scan_only_for_a_batch_in_the_models_dtype_after_a_good_one():
    """The one place values go unchecked, by design: the hot loop's batches after the first (no wait per step)."""
    model = VAE(6, 5, 3)
    model.loss_and_grads(np.full((2, 6), 0.5, dtype=np.float32))
    with np.errstate(all="ignore"):
        model.loss_and_grads(np.full((2, 6), 2.0, dtype=np.float32))     # not scanned: no error
    with pytest.raises(ValueError, match=r"divide 0-255 images by 255"):
        model.loss_and_grads(np.full((2, 6), 2.0))                        # float64: converted, so scanned


def test_decode_takes_any_real_latent_code():
    """decode's input is z, not pixels: values far outside [0, 1] are fine, and the output is in [0, 1]."""
    model = VAE(6, 5, 3)
    out = model.decode(np.full((2, 3), -79.6, dtype=np.float32))
    assert out.shape == (2, 6) and (out >= 0).all() and (out <= 1).all()


def test_a_single_label_out_of_range_is_refused():
    """A batch of one image is checked like any other: label 4 of a 4-class model does not exist."""
    model = VAE(6, 5, 3, num_classes=4, dtype=np.float64)
    with pytest.raises(ValueError, match="labels y must be 1 integers in 0..3"):
        model.loss(np.zeros((1, 6)), eps=np.zeros((1, 3)), y=np.array([4]))


def test_a_one_class_conditional_model_still_reads_its_label():
    """num_classes=1 is conditional: its one-hot column joins the encoder's and the decoder's inputs."""
    plain, one_class = VAE(6, 5, 3, dtype=np.float64), VAE(6, 5, 3, num_classes=1, dtype=np.float64)
    assert one_class.conditional and not plain.conditional
    assert one_class.num_params == plain.num_params + 5 + 5        # one more input column for each first layer
    with pytest.raises(ValueError, match="needs labels y"):
        one_class.loss(np.zeros((2, 6)), eps=np.zeros((2, 3)))

"""The gradient checker: every hand-written gradient against finite differences, and proof that it fails
when a gradient is wrong, whatever the layer, the tensor or the model."""
import numpy as np
import pytest

from numpyvae import cli, conv, gradcheck, gradcheck_plan, im2col, iwae, layers, losses, network
from numpyvae.gradcheck import (GradientShapeError, Row, check_batch, check_layer, check_model, numerical_gradient,
                                one_piece_derivative, rel_error, relu_pattern, tolerance)
from numpyvae.priors import PRIORS
from numpyvae.vae import VAE

SMALL_CONV = {"arch": "conv", "input_shape": (1, 7, 7), "hidden_dims": (2, 3), "latent_dim": 3}


def assert_all_pass(rows):
    failed = [r for r in rows if not r.passed]
    assert not failed, gradcheck.format_table([("failed", failed)])


def run_main(capsys, *args):
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_numerical_gradient_of_a_known_function():
    x = np.array([0.3, -1.2, 2.0])
    numeric = numerical_gradient(lambda: np.sum(np.sin(x) * x ** 2), x)
    assert rel_error(numeric, np.cos(x) * x ** 2 + 2 * x * np.sin(x)) < 1e-9


def test_rel_error_is_relative_to_the_tensor_scale():
    assert rel_error([1000.0, 1e-9], [1000.0, 2e-9]) < 1e-11
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 4.2)
    assert rel_error([0.0], [0.0]) == 0.0


def test_the_tolerance_scales_with_the_loss_and_the_gradients_but_is_capped_at_1e_3():
    assert tolerance(np.float64, 2_000.0, 1.0) == 1e-6          # the noise, 4.4e-8, is far below
    big = tolerance(np.float64, 2e6, 1.0)                          # a loss 1,000 times larger
    assert big == pytest.approx(10 * np.finfo(np.float64).eps * 2e6 / 1e-5)
    assert tolerance(np.float64, 2e6, 2.0) == pytest.approx(big / 2)   # larger gradients, less relative noise
    assert tolerance(np.float64, 2e6, 10.0, step=1e-6) == pytest.approx(big)   # 10x smaller step: 10x the noise
    # gradients lost in the noise fail at the cap; the number itself, not the constant's name, is the promise
    assert tolerance(np.float64, 2_000.0, 1e-9) == 1e-3
    assert tolerance(np.float32, 2_000.0, 1.0) == 1e-5


# --- the layers, alone ------------------------------------------------------------------------

def test_every_layer_of_every_architecture_and_every_loss_is_checked_alone():
    models = [VAE(**gradcheck_plan.small_settings(network.make_spec(arch=arch, num_classes=classes).settings()),
                  dtype=np.float64) for arch in network.ARCHITECTURES for classes in (0, 10)]
    rows = gradcheck_plan.check_layers(models)
    owners = {r.layer for r in rows}
    assert {"Linear enc (dense)", "ReLU enc.relu (dense)", "Conv2d enc.conv1 (conv)", "Conv2d enc.conv2 (conv)",
            "ConvTranspose2d dec.deconv1 (conv)", "ConvTranspose2d dec.deconv2 (conv)", "Flatten enc.flat (conv)",
            "Linear mu (conv)", "Sigmoid", "Reparameterize", "GaussianKL"} <= owners
    # one row per registered likelihood: a new one is checked without touching this file
    assert {type(term).__name__ for term in losses.LIKELIHOODS.values()} <= owners
    assert {r.shape for r in rows if r.layer == "Linear enc (dense)" and r.name == "enc.W"} == {(6, 5), (10, 5)}
    names = {r.name for r in rows}
    assert {"enc.conv1 dx", "enc.conv1.W", "enc.conv1.b", "dec.deconv2 dx", "out.W", "out.b"} <= names
    assert all(r.checked == np.prod(r.shape) for r in rows)
    assert_all_pass(rows)


class Scale:
    """A new layer, as a user would write one: y = x * a + c, per feature, with a mistake to plant."""
    mistake = None

    def __init__(self, name, width):
        self.name, self.width, self.fan_in = name, width, 1

    def parameters(self):
        return {f"{self.name}.a": (self.width,), f"{self.name}.c": (self.width,)}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, xp, params, x, ws=None):
        return x * params[f"{self.name}.a"] + params[f"{self.name}.c"], x

    def backward(self, xp, params, grads, dy, x, ws=None, need_dx=True):
        grads[f"{self.name}.a"][...] = (dy * x).sum(axis=0) * (1.001 if self.mistake == "da" else 1)
        grads[f"{self.name}.c"][...] = dy.sum(axis=0)
        dx = dy * params[f"{self.name}.a"]
        return dx[:, :-1] if self.mistake == "shape" else dx


def test_a_layer_with_a_kink_is_checked_away_from_it():
    seen = []

    class Watched(layers.ReLU):
        def forward(self, xp, params, x, ws=None):
            seen.append(np.min(np.abs(x)))
            return super().forward(xp, params, x, ws)
    assert_all_pass(check_layer(Watched("relu"), (50,), batch=20))
    assert min(seen) >= 1e-2 - 1e-5            # a step of H never crosses 0


def test_check_layer_checks_a_new_layer_and_names_what_is_wrong():
    rows = check_layer(Scale("scale", 4), (4,))
    assert [r.name for r in rows] == ["scale dx", "scale.a", "scale.c"]
    assert all(r.layer == "Scale scale" for r in rows)
    assert_all_pass(rows)
    wrong = Scale("scale", 4)
    wrong.mistake = "da"                                  # da 0.1 % too large
    rows = {r.name: r for r in check_layer(wrong, (4,))}
    assert not rows["scale.a"].passed and rows["scale.a"].reason.startswith("error ")
    assert rows["scale dx"].passed and rows["scale.c"].passed
    wrong.mistake = "shape"                               # dx one column short: one line that names the layer
    rows = {r.name: r for r in check_layer(wrong, (4,))}
    assert not rows["scale dx"].passed
    assert rows["scale dx"].reason == "Scale scale's backward returns scale dx of shape (2, 3) for (2, 4)"


def test_a_wrong_conv_padding_offset_fails_the_conv_rows(monkeypatch):
    """col2im that forgets the padding's offset: invisible at padding 0, so the rows must use the model's padding."""
    original = im2col.col2im

    def forgets_offset(xp, cols, image_size, stride, padding, out=None):
        (C, k, _, Ho, Wo, B), (H, W) = cols.shape, image_size
        out = xp.empty((C, H + 2 * padding, W + 2 * padding, B)) if out is None else out
        original(xp, cols, image_size, stride, padding, out)
        return out[:, :H, :W]                        # the padded sums' corner, where out[:, p:p + H, p:p + W] belongs
    model = VAE(**SMALL_CONV, dtype=np.float64)
    assert_all_pass(gradcheck_plan.check_layers([model]))
    monkeypatch.setattr(conv, "col2im", forgets_offset)    # conv.py looks col2im up by name
    rows = {r.name: r for r in gradcheck_plan.check_layers([model])}
    assert not rows["enc.conv2 dx"].passed          # the convolution's input gradient goes through col2im
    assert not rows["dec.deconv1 dx"].passed or not rows["dec.deconv1.W"].passed   # and the transposed forward


# --- the whole model --------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_small_model_every_entry_float64(likelihood, beta):
    model = VAE(6, 5, 3, likelihood, dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1), beta=beta)
    assert len(rows) == 10 and all(r.checked == np.prod(r.shape) and r.kinks == 0 for r in rows)
    assert rows[0].layer == "Linear enc"
    assert_all_pass(rows)


def _place_preactivation(model, x, example, unit, value):
    """Move the encoder's pre-activation (example, unit) to `value` by moving enc.b[unit]."""
    model.params["enc.b"][unit] += value - (x[example] @ model.params["enc.W"][:, unit] + model.params["enc.b"][unit])


def _kinks_on_both_sides(distance):
    """A small model and batch whose examples 0 and 1 put the encoder's unit 2 `distance` above and below 0:
    a step of enc.b[2] larger than `distance` either way carries one of them across the kink."""
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    x, eps = check_batch(model, seed=1)
    w = model.params["enc.W"][:, 2]
    x[1] = x[0] - 2 * distance * w / (w @ w)
    _place_preactivation(model, x, 0, 2, distance)
    return model, x, eps


@pytest.mark.parametrize("side", [1, -1], ids=["above", "below"])
def test_an_entry_beside_a_kink_is_differenced_on_the_side_that_stays_on_one_piece(side):
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    x, eps = check_batch(model, seed=1)
    _place_preactivation(model, x, 0, 2, side * 3e-6)   # 3e-6 from the kink: a step of 1e-5 towards it crosses it
    rows = {r.name: r for r in check_model(model, x, eps)}
    assert rows["enc.b"].kinks == 0 and rows["enc.b"].checked == 5
    assert_all_pass(rows.values())
    # the entry got a one-sided difference (effective step h / 4), which matches the analytic gradient
    reference = VAE(**model.config, dtype=np.float64)
    reference.flat_params[...] = model.flat_params
    base = relu_pattern(reference, x, eps)
    estimate, step = one_piece_derivative(lambda: relu_pattern(reference, x, eps), reference.params["enc.b"], 2, base)
    assert step == gradcheck.H / 4
    model.loss_and_grads(x, eps=eps)
    assert abs(estimate - model.grads["enc.b"][2]) < 1e-7 * abs(model.grads["enc.b"][2])


def test_an_entry_with_kinks_on_both_sides_is_differenced_at_a_smaller_step():
    model, x, eps = _kinks_on_both_sides(3e-7)          # steps of 1e-5 and 1e-6 flip one on each side
    reference = VAE(**model.config, dtype=np.float64)
    reference.flat_params[...] = model.flat_params
    base = relu_pattern(reference, x, eps)
    estimate, step = one_piece_derivative(lambda: relu_pattern(reference, x, eps), reference.params["enc.b"], 2, base)
    assert step == gradcheck.STEPS[-1] == 1e-7
    model.loss_and_grads(x, eps=eps)
    assert abs(estimate - model.grads["enc.b"][2]) < 1e-6 * abs(model.grads["enc.b"][2])
    rows = {r.name: r for r in check_model(model, x, eps)}
    assert rows["enc.b"].kinks == 0 and rows["enc.b"].passed


def test_sampled_entries_include_nonzero_gradients_and_uniform_ones():
    """Trained weights leave a dead unit's rows at zero: half the sample is drawn among the entries that move."""
    analytic = np.zeros(1000)
    analytic[[3, 500, 999]] = 1.0
    rng = np.random.default_rng(0)
    idx = gradcheck.sample_entries(rng, analytic, 10)
    assert len(set(idx)) == 10 and {3, 500, 999} <= set(idx)
    analytic[:100] = 1.0                       # 10 % of the entries move: half the sample, and a tenth of the rest
    counts = [np.count_nonzero(analytic[gradcheck.sample_entries(rng, analytic, 20)]) for _ in range(200)]
    assert 10 <= min(counts) and 10.5 < np.mean(counts) < 11.5
    assert list(gradcheck.sample_entries(rng, analytic, None)) == list(range(1000))
    assert len(set(gradcheck.sample_entries(rng, np.zeros(50), 20))) == 20      # all zero: uniform


def test_a_small_model_with_a_dead_layer_is_drawn_again_but_a_broken_forward_is_not_hidden(monkeypatch):
    settings = {"input_dim": 6, "hidden_dims": (5, 4, 3), "latent_dim": 3}
    dead = [s for s in range(40) if gradcheck.dead_layers(VAE(**settings, dtype=np.float64, seed=s),
                                                          *check_batch(VAE(**settings), seed=s))]
    assert dead, "no seed of 40 leaves a layer dead: pick a smaller model for this test"
    seed = dead[0]
    live = gradcheck_plan.live_seed(settings, seed)
    assert live > seed and not gradcheck.dead_layers(VAE(**settings, dtype=np.float64, seed=live),
                                                     *check_batch(VAE(**settings), seed=seed))
    assert_all_pass(gradcheck_plan.model_section("", settings, gradcheck_plan.Where(
        gradcheck_plan.get_backend("numpy"), np.dtype(np.float64)), seed=seed).run())
    # a ReLU whose forward outputs zeros is dead at every draw: its rows fail as all zero
    monkeypatch.setattr(layers.ReLU, "forward", lambda self, xp, params, x, ws=None:
                        layers.relu_forward(xp, x - 1e3))
    rows = gradcheck_plan.model_section("", settings, gradcheck_plan.Where(
        gradcheck_plan.get_backend("numpy"), np.dtype(np.float64)), seed=seed).run()
    assert any(r.reason.startswith("all zero") for r in rows)


def test_an_entry_with_kinks_on_both_sides_at_every_step_is_left_out_and_its_row_fails_saying_why():
    model, x, eps = _kinks_on_both_sides(1e-9)          # any step of enc.b[2] down to 1e-7 flips one
    rows = {r.name: r for r in check_model(model, x, eps)}
    assert rows["enc.b"].kinks == 1 and rows["enc.b"].checked == 4
    assert not rows["enc.b"].passed
    assert rows["enc.b"].reason == "too few entries checked: 1 of 5 cross a ReLU kink at every step down to 1e-07"


def test_a_dead_layer_fails_as_all_zero():
    """A real dead layer: every encoder ReLU is off, so its gradients are exactly zero and nothing is tested."""
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    model.params["enc.b"][...] = -100.0
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    for name in ("enc.W", "enc.b", "mu.W", "logvar.W"):
        assert rows[name].all_zero and rows[name].max_rel_error == 0.0 and not rows[name].passed
        assert rows[name].reason.startswith("all zero")
    assert rows["out.W"].passed and rows["mu.b"].passed


@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
def test_full_size_model_every_tensor_float64(likelihood):
    model = VAE(likelihood=likelihood, dtype=np.float64, seed=0)
    rows = check_model(model, *check_batch(model, seed=0), entries=10)
    assert [r.name for r in rows] == list(model.params)
    assert all(r.checked == min(10, np.prod(r.shape)) for r in rows)
    # the rounding noise of 4 images' loss (about 2,200 nats) sits far below 1e-6 on these gradients
    assert all(r.tolerance <= 4e-6 for r in rows), gradcheck.format_table([("", rows)])
    assert_all_pass(rows)


@pytest.mark.parametrize("likelihood", list(losses.LIKELIHOODS))
def test_full_size_model_float32_within_stated_tolerance(likelihood):
    model = VAE(likelihood=likelihood, dtype=np.float32, seed=0)
    rows = check_model(model, *check_batch(model, seed=0), entries=8)
    assert all(r.tolerance == 1e-5 for r in rows)
    assert_all_pass(rows)


def test_float32_iwae_rows_allow_for_the_rounding_of_the_weights_but_catch_1e_3(monkeypatch):
    """float32 rounds log w (about 550 nats per image here) by 3e-5: the softmax weights, and every gradient,
    move by that much, more than float32's 1e-5 (seed 0 failed at 1.4e-5 before the rule)."""
    model = VAE(dtype=np.float32, seed=0)
    batch = check_batch(model, seed=0, samples=3)
    rows = check_model(model, *batch, entries=8, objective="iwae")
    reference = VAE(dtype=np.float64, seed=0)
    per_image = relu_pattern(reference, *batch, objective="iwae")[0] / 4        # about |log w|
    weights = 2 * np.finfo(np.float32).eps * per_image                          # twice its rounding in float32
    assert all(r.tolerance >= weights for r in rows) and rows[0].tolerance == pytest.approx(weights)
    assert 1e-5 < weights < 2e-4, gradcheck.format_table([("", rows)])
    assert_all_pass(rows)
    honest = VAE.loss_and_grads

    def off(self, *args, **kwargs):
        result = honest(self, *args, **kwargs)
        self.grads["enc.W"] *= 1 + 1e-3
        return result
    monkeypatch.setattr(VAE, "loss_and_grads", off)
    assert not {r.name: r for r in check_model(model, *batch, entries=8, objective="iwae")}["enc.W"].passed


def test_a_float32_model_on_a_kink_is_refused_and_checked_on_another_batch():
    """An input within float32's rounding of 0 can sit on the other side of the kink from float64's: the
    float32 gradient is then another piece's (conv, float32, seed 8 failed by 1e-3 that way). Refused, with why."""
    model = VAE(6, 5, 3, dtype=np.float32, seed=1)
    x, eps = check_batch(model, seed=1)
    reference = VAE(6, 5, 3, dtype=np.float64, seed=1)
    x32, eps32 = (a.astype(np.float32).astype(np.float64) for a in (x, eps))
    on_kink = None
    for unit in range(5):                          # move a pre-activation of example 0 to 0, ulp by ulp
        b = np.float32(-(x32[0] @ model.params["enc.W"][:, unit].astype(np.float64)))
        for _ in range(20):
            model.params["enc.b"][unit] = b
            reference.flat_params[...] = model.flat_params
            if not np.array_equal(relu_pattern(model, x, eps)[1], relu_pattern(reference, x32, eps32)[1]):
                on_kink = unit
                break
            b = np.nextafter(b, np.float32(np.inf))
        if on_kink is not None:
            break
    assert on_kink is not None, "no pre-activation found where float32 and float64 disagree"
    with pytest.raises(gradcheck.KinkDisagreement, match="the float32 forward puts a ReLU input on the other side"):
        check_model(model, x, eps)
    where = gradcheck_plan.Where(gradcheck_plan.get_backend("numpy"), np.dtype(np.float32))
    section = gradcheck_plan.model_section("", model.config, where, seed=1, weights=model.flat_params)
    assert_all_pass(section.run())                 # on the next batch


def test_fake_gpu_backend_gives_the_same_gradients():
    model = VAE(6, 5, 3, backend="fakegpu", dtype=np.float64, seed=2)
    assert_all_pass(check_model(model, *check_batch(model, seed=2)))


# --- the checks must fail when a gradient is wrong ---------------------------------------

MODELS = {"dense 2 layers": {"input_dim": 6, "hidden_dims": (5, 4), "latent_dim": 3},
          "conditional": {"input_dim": 6, "hidden_dim": 5, "latent_dim": 3, "num_classes": 4},
          "conv": SMALL_CONV}


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_a_gradient_off_by_1e_3_relative_fails_in_any_one_tensor(kind, objective, monkeypatch):
    model = VAE(**MODELS[kind], dtype=np.float64, seed=1)
    batch = check_batch(model, seed=1, samples=3 if objective == "iwae" else None)
    assert_all_pass(check_model(model, *batch, objective=objective))
    honest = VAE.loss_and_grads
    for name in model.params:
        def off(self, *args, **kwargs):
            result = honest(self, *args, **kwargs)
            self.grads[name] *= 1 + 1e-3
            return result
        monkeypatch.setattr(VAE, "loss_and_grads", off)
        rows = {r.name: r for r in check_model(model, *batch, objective=objective)}
        assert not rows[name].passed and rows[name].reason.startswith("error "), name
        assert all(r.passed for r in rows.values() if r.name != name), name
    monkeypatch.setattr(VAE, "loss_and_grads", honest)


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


def test_a_wrong_layer_backward_fails_alone_and_in_the_model(monkeypatch):
    """ReLU passing back 1 % too much: its own row fails, and so do the rows of the layers before it."""
    monkeypatch.setattr(layers.ReLU, "backward", lambda self, xp, params, grads, dy, cache, ws=None, need_dx=True:
                        layers.relu_backward(xp, dy, cache) * 1.01)
    model = VAE(**SMALL_CONV, dtype=np.float64, seed=1)
    alone = {r.name: r for r in gradcheck_plan.check_layers([model])}
    assert not alone["enc.conv1.relu dx"].passed and alone["enc.conv1 dx"].passed
    rows = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}
    assert not rows["enc.conv1.W"].passed and not rows["dec.W"].passed


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


# --- a new architecture: its layers alone and in the model, by the bare command ----------------

def scaled_network(spec):
    """The dense network with a Scale after every ReLU."""
    def scaled(entries):
        out = []
        for entry in entries:
            out.append(entry)
            if type(entry) is layers.ReLU:
                width = out[-2].fan_out
                out.append(Scale(entry.name.replace("relu", "scale"), width))
        return out
    return network.Network(*map(scaled, network.dense_network(spec)))


@pytest.fixture
def scaled_arch(monkeypatch):
    """"scaled" registered as an architecture, and the registry restored in place after the test."""
    saved = dict(network.ARCHITECTURES)
    network.ARCHITECTURES["scaled"] = network.Architecture(scaled_network, (400,), "the hidden widths")
    monkeypatch.setattr(Scale, "mistake", None)
    yield "scaled"
    network.ARCHITECTURES.clear()
    network.ARCHITECTURES.update(saved)


def test_a_new_architecture_gets_a_small_model_of_its_own_and_its_layers_checked(scaled_arch):
    small = gradcheck_plan.small_settings(network.make_spec(arch=scaled_arch, hidden_dims=(400, 300)).settings())
    assert small["input_shape"] == (6,) and small["hidden_dims"] == (5, 4)      # not a conv's 7x7 and 2, 3 channels
    conv = gradcheck_plan.small_settings(network.make_spec(arch="conv").settings())
    assert conv["input_shape"] == (1, 7, 7) and conv["hidden_dims"] == (2, 3)
    for settings in (None, {"arch": scaled_arch}):          # the bare plan holds every architecture's layers
        layer_rows = gradcheck_plan.plan(settings, full=False)[0].run()
        assert {"enc.scale dx", "enc.scale.a", "enc.scale.c"} <= {r.name for r in layer_rows}   # (dec.scale: alike)
        assert_all_pass(layer_rows)
    sections = gradcheck_plan.plan({"arch": scaled_arch}, full=False)
    rows = [r for section in sections[1:] for r in section.run()]
    assert {"enc.scale.a", "dec.scale.c"} <= {r.name for r in rows}
    assert_all_pass(rows)


def test_a_broken_new_layer_fails_the_bare_command_for_its_architecture(scaled_arch, capsys):
    Scale.mistake = "da"
    status, out, _ = run_main(capsys, "gradcheck", "--arch", scaled_arch, "--quick", "--threads", "1")
    assert status == 1
    assert any(line.split()[:2] == ["enc.scale.a", "Scale"] and "FAIL: error" in line for line in out.splitlines())
    status, out, _ = run_main(capsys, "gradcheck", "--quick", "--threads", "1")     # and so does the bare command
    assert status == 1
    assert any(line.split()[:4] == ["enc.scale.a", "Scale", "enc.scale", "(scaled)"] and "FAIL: error" in line
               for line in out.splitlines())


def test_a_wrong_shaped_gradient_in_the_model_is_named_in_one_line(scaled_arch, capsys):
    Scale.mistake = "shape"
    model = VAE(6, arch=scaled_arch, hidden_dims=(5,), latent_dim=3, dtype=np.float64)
    with pytest.raises(GradientShapeError, match=r"^Scale enc.scale's backward returns dx of shape \(2, 4\) "
                                                 r"for an input of \(2, 5\)$"):
        check_model(model, *check_batch(model))
    status, out, err = run_main(capsys, "gradcheck", "--arch", scaled_arch, "--quick", "--threads", "1")
    assert status == 1
    assert "layers and losses" in out and "FAIL: Scale enc.scale's backward returns enc.scale dx" in out
    crashes = [line for line in err.splitlines() if "crashed" in line]
    assert crashes and all(line.startswith('numpyvae gradcheck: error: the section "small ') for line in crashes)
    assert "Scale enc.scale's backward returns dx of shape" in crashes[0]


# --- the command ------------------------------------------------------------------------------

def test_each_section_prints_as_it_ends_and_a_crash_is_one_line_naming_its_section(capsys, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("the IWAE bound broke\non two lines")
    monkeypatch.setattr(iwae, "forward", crash)
    status, out, err = run_main(capsys, "gradcheck", "--quick", "--threads", "1")
    assert status == 1
    # the ELBO sections before the crash kept their rows
    assert "small 6-5-3 VAE, bernoulli, every entry (float64, numpy)\n  gradient" in out
    crashes = [line for line in err.splitlines() if "crashed" in line]
    # every IWAE section: each likelihood (and sigma) plain and conditional, and each other prior dense and conv
    settings = sum(len(term.sigmas) for term in losses.LIKELIHOODS.values())
    assert len(crashes) == 2 * settings + 2 * (len(PRIORS) - 1)
    assert crashes[0] == ('numpyvae gradcheck: error: the section "small 6-5-3 VAE, IWAE bound with K = 3, bernoulli, '
                          'every entry (float64, numpy)" crashed: RuntimeError: the IWAE bound broke on two lines')
    assert out.rstrip().endswith(f"gradients pass; {len(crashes)} sections crashed")


def test_a_run_is_checked_at_its_own_objective_and_k_and_with_trained_its_own_weights(small_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_main(capsys, "train", "--run-dir", run, "--epochs", 1, "--batch-size", 16, "--hidden-dim", 8,
                    "--latent-dim", 2, "--objective", "iwae", "--samples", 2, "--no-figures",
                    "--data-dir", small_data.data_dir)[0] == 0
    status, out, _ = run_main(capsys, "gradcheck", run, "--entries", 3, "--threads", "1")
    assert status == 0, out
    titles = [line for line in out.splitlines() if line.endswith("(float64, numpy)")]
    assert titles and all("IWAE bound with K = 2" in t for t in titles)          # no ELBO, no K = 3
    status, out, _ = run_main(capsys, "gradcheck", run, "--trained", "--entries", 3, "--threads", "1")
    assert status == 0, out
    assert "784-8-2 VAE, IWAE bound with K = 2, trained weights (epoch 1) on 4 test images, bernoulli, 3 sampled" in out
    status, _, err = run_main(capsys, "gradcheck", "--trained")
    assert status == 1 and err.count("\n") == 1 and "--trained checks a run's own weights" in err
    status, _, err = run_main(capsys, "gradcheck", run, "--trained", "--quick")
    assert status == 1 and err.count("\n") == 1 and "which --quick leaves out" in err


def test_trained_weights_and_images_are_the_ones_checked(monkeypatch):
    """plan(trained=...) checks the model at the weights and on the images given, not fresh ones."""
    settings = {"input_dim": 6, "hidden_dim": 5, "latent_dim": 3, "num_classes": 2}
    weights = VAE(**settings, seed=7).flat_params
    x, y = np.random.default_rng(3).uniform(0, 1, (4, 6)), np.array([1, 0, 1, 1])
    seen = {}

    def spy(model, x, eps, y=None, **kwargs):
        seen.update(params=model.flat_params.copy(), x=x, y=y)
        return []
    monkeypatch.setattr(gradcheck_plan, "check_model", spy)
    gradcheck_plan.plan(settings, small=False, objectives=("elbo",), trained=(weights, "trained", (x, y)))[1].run()
    assert np.array_equal(seen["params"], weights) and seen["x"] is x and seen["y"] is y


# --- the checker's documented numbers and thresholds, exactly at their edges -----------------

def test_the_steps_are_1e_5_1e_6_1e_7_and_an_entry_1_5e_6_from_kinks_either_side_is_differenced_at_1e_6():
    assert gradcheck.STEPS == (1e-5, 1e-6, 1e-7)           # the module docstring: "STEPS (1e-5, 1e-6, 1e-7)"
    model, x, eps = _kinks_on_both_sides(1.5e-6)        # 1e-5 crosses a kink either way; 1e-6 crosses none
    reference = VAE(**model.config, dtype=np.float64)
    reference.flat_params[...] = model.flat_params
    base = relu_pattern(reference, x, eps)
    estimate, step = one_piece_derivative(lambda: relu_pattern(reference, x, eps), reference.params["enc.b"], 2, base)
    assert step == 1e-6
    model.loss_and_grads(x, eps=eps)
    assert abs(estimate - model.grads["enc.b"][2]) < 1e-6 * abs(model.grads["enc.b"][2])


def test_a_kinked_layer_alone_gets_its_random_inputs_moved_exactly_1e_2_away_from_0():
    """check_layer's docstring: inputs at least KINK_MARGIN (1e-2, gradcheck.py) from 0: x -> sign(x) (1e-2 + |x|)."""
    seen = []

    class Kinked:
        name, kink_at_zero = "kinked", True

        def parameters(self):
            return {}

        def forward(self, xp, params, x):
            seen.append(x.copy())
            return 2 * x, None

        def backward(self, xp, params, grads, dy, cache):
            return 2 * dy

    assert gradcheck.KINK_MARGIN == 1e-2
    assert_all_pass(check_layer(Kinked(), (5000,), seed=0))
    drawn = np.random.default_rng(0).standard_normal((2, 5000))        # what check_layer draws first, seed 0
    assert np.array_equal(seen[0], np.where(drawn < 0, -1.0, 1.0) * (1e-2 + np.abs(drawn)))
    assert 1e-2 < np.min(np.abs(seen[0])) < 1.02e-2                      # some input lands right at the margin


def test_a_row_that_checks_exactly_90_percent_of_its_sample_passes_and_one_fewer_fails():
    """MIN_CHECKED_SHARE (0.9): a row must compare *at least* this share of the entries it sampled."""
    assert Row("w", (10,), 9, 0.0, 1e-6, kinks=1).passed
    assert Row("w", (10,), 90, 0.0, 1e-6, kinks=10).passed
    assert "too few entries checked: 11 of 100" in Row("w", (100,), 89, 0.0, 1e-6, kinks=11).reason


def test_a_row_passes_only_with_an_error_strictly_below_its_tolerance():
    assert Row("w", (3,), 3, 0.999e-6, 1e-6).passed
    assert Row("w", (3,), 3, 1e-6, 1e-6).reason == "error 1.0e-06 above the tolerance 1e-06"
    assert not Row("w", (3,), 3, float("nan"), 1e-6).passed


def test_the_gradient_scale_is_the_largest_abs_a_plus_abs_n_but_at_least_1e_8():
    assert gradcheck.gradient_scale([1e-3, 0.0], [-2e-3, 5e-4]) == pytest.approx(3e-3)    # small gradients, no floor of 1
    assert gradcheck.gradient_scale([0.0], [0.0]) == 1e-8
    assert gradcheck.gradient_scale([1e-9], [0.0]) == 1e-8
    assert rel_error([2e-9], [0.0]) == pytest.approx(0.2)                 # 2e-9 / 1e-8


def test_the_tolerance_of_all_zero_gradients_divides_the_noise_by_1e_300_not_by_0():
    loss = 4.5e-295                                     # noise 10 eps |loss| / h / 1e-300 ~ 1e-4: between floor and cap
    assert tolerance(np.float64, loss, 0.0) == pytest.approx(10 * np.finfo(np.float64).eps * loss / 1e-5 / 1e-300)


def test_asking_for_as_many_entries_as_a_tensor_has_checks_them_all_in_order_and_draws_nothing():
    """So the entries drawn for the tensors after it are the same whether or not it was small."""
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    analytic = np.array([0.0, 1.0, 0.0, 2.0, 3.0])
    assert list(gradcheck.sample_entries(rng, analytic, 5)) == [0, 1, 2, 3, 4]
    assert rng.bit_generator.state == before


def test_only_the_kink_layers_are_watched_and_inputs_exactly_at_0_are_not_positive():
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    x, eps = check_batch(model, seed=1)
    assert [layer.name for layer, _ in gradcheck.relu_signs(model, x, eps)[1]] == ["enc.relu", "dec.relu"]
    assert gradcheck.dead_layers(model, x, eps) == []
    model.params["enc.W"][...] = 0.0
    model.params["enc.b"][...] = 0.0                    # every input of enc.relu is exactly 0: it passes nothing back
    assert gradcheck.dead_layers(model, x, eps) == ["enc.relu"]


def test_the_table_columns_are_as_wide_as_their_widest_entry_or_header_plus_2_and_a_scalar_says_so():
    """What a reader sees: gradient, layer and shape left-aligned, each column 2 wider than its widest
    text (header included); then checked (8), left out (9), max rel error (13) and tolerance (9) right-aligned."""
    short = gradcheck.format_table([("float64", [Row("b", (3,), 3, 0.0, 1e-6, layer="L")])])
    assert short.split("\n") == [
        "",
        "float64",
        "  gradient  layer  shape   checked left out  max rel error  tolerance  result",
        "  b         L      3             3        0       0.00e+00      1e-06  pass"]
    long = gradcheck.format_table([("float32", [Row("decoder.weights", (64, 32, 3, 3), 18432, 1.5e-7, 1e-5, 2,
                                                    layer="ConvTranspose2d dec.deconv1"),
                                                Row("s", (), 1, 0.0, 1e-5, layer="Scale s")])])
    assert long.split("\n") == [
        "",
        "float32",
        "  gradient         layer                        shape       checked left out  max rel error  tolerance  result",
        "  decoder.weights  ConvTranspose2d dec.deconv1  64x32x3x3     18432        2       1.50e-07      1e-05  pass",
        "  s                Scale s                      scalar            1        0       0.00e+00      1e-05  pass"]

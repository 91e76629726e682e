"""The continuous Bernoulli likelihood: gradients at every logit, a density that integrates to 1, torch parity.

Its normalizer log C(l) = log(l / tanh(l / 2)) switches from its closed form to a Taylor series at
|l| = SERIES_BELOW, so the checks probe both sides of that point, l = 0 itself, and logits far out.
"""
import math
import warnings

import numpy as np
import pytest

from numpyvae import VAE, Adam, get_backend, losses
from numpyvae.gradcheck import check_batch, check_model, numerical_gradient, rel_error
from numpyvae.losses import SERIES_BELOW

TERM = losses.LIKELIHOODS["continuous-bernoulli"]
TOL = 1e-6                                             # gradcheck's float64 tolerance
S = SERIES_BELOW

# every region of the logit axis: 0, tiny, both sides of the switch-over, moderate, large
NEAR_ZERO = [0.0, 1e-8, -1e-8, 1e-3, -1e-3]
AT_SWITCH = [sign * S * factor for sign in (1, -1) for factor in (1 - 1e-3, 1 + 1e-3)]
MODERATE = [0.1, -0.25, 0.7, -1.3, 2.5, -4.0, 8.0]
LARGE = [30.0, -30.0]


def mpmath():
    """mpmath at 50 digits: the exact values our float64 numbers are measured against."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    return mp


def exact_dlog_c(l):
    """1/l - 1/sinh(l) in 50-digit arithmetic (l/6 below 1e-20, where the rest is below rounding)."""
    mp = mpmath()
    l = mp.mpf(float(l))
    return float(l / 6 if abs(l) < 1e-20 else 1 / l - 1 / mp.sinh(l))


def loss_of(logits, x):
    return TERM.forward(np, logits, x)[0]


def dlogits_of(logits, x):
    return TERM.backward(np, TERM.forward(np, logits, x)[1])


@pytest.mark.parametrize("region, logits", [("near zero", NEAR_ZERO), ("at the switch", AT_SWITCH),
                                            ("moderate", MODERATE), ("large", LARGE)])
def test_dlogits_match_finite_differences_across_the_logit_axis(region, logits):
    # each logit on its own (a (1, 1) batch), so one entry's rounding cannot hide another's error
    for l in logits:
        for pixel in (0.0, 0.37, 1.0):
            logit, x = np.array([[l]]), np.array([[pixel]])
            numeric = numerical_gradient(lambda: loss_of(logit, x), logit)
            assert rel_error(dlogits_of(logit, x), numeric) < TOL, (region, l, pixel)


def test_finite_differences_across_the_switch_over_point():
    """A step of H from just below SERIES_BELOW lands above it: the two branches must join smoothly."""
    for l in (S - 2e-6, -S + 2e-6):
        logit, x = np.array([[l]]), np.array([[0.5]])
        assert rel_error(dlogits_of(logit, x), numerical_gradient(lambda: loss_of(logit, x), logit)) < TOL


def test_both_branches_are_accurate_to_rounding_at_the_switch_over():
    """Against 50-digit arithmetic: measured 1.6e-14 relative at worst, within 2% of the switch."""
    l = S * np.array([1 - 2e-2, 1 - 1e-3, 1 - 1e-9, 1, 1 + 1e-9, 1 + 1e-3, 1 + 2e-2])
    l = np.concatenate([l, -l])
    exact = np.array([exact_dlog_c(v) for v in l])
    got = losses.log_normalizer_grad(np, l)
    assert np.max(np.abs(got - exact) / np.abs(exact)) < 5e-14
    assert np.max(np.abs(got - exact)) < 3e-15                   # next to gradients of size ~1
    # below the switch the series answers: pure float64 arithmetic (no libm), the same on every
    # machine, and within the 1.6e-14 losses.py states (a last digit off in its l^9 coefficient is not)
    series = np.abs(l) < S
    assert np.max(np.abs(got - exact)[series] / np.abs(exact)[series]) < 1.6e-14


def test_log_normalizer_against_its_closed_form_and_series():
    l = np.array([0.0, 1e-300, 1e-8, 0.1, -0.3, S, 1.0, -7.0, 30.0, 700.0, -1e4])
    expected = np.log(2) + l ** 2 / 12                          # for the first three the rest is below rounding
    a = np.abs(l[3:])
    expected[3:] = np.log(a) - np.log(np.tanh(a / 2))
    np.testing.assert_allclose(losses.log_normalizer(np, l), expected, rtol=2e-16 * 4, atol=0)
    # the paper's form, 2 artanh(1 - 2s) / (1 - 2s), where it is well conditioned
    mid = np.array([0.5, -1.0, 2.0, -3.0])
    s = 1 / (1 + np.exp(-mid))
    np.testing.assert_allclose(losses.log_normalizer(np, mid), np.log(2 * np.arctanh(1 - 2 * s) / (1 - 2 * s)),
                               rtol=1e-14)


def test_derivative_of_log_normalizer_against_50_digits_everywhere():
    rng = np.random.default_rng(0)
    l = np.concatenate([np.exp(rng.uniform(np.log(1e-6), np.log(60), 300)), [1e-8, 700.0, 1e4]])
    l *= rng.choice([-1.0, 1.0], l.size)
    exact = np.array([exact_dlog_c(v) for v in l])
    got = losses.log_normalizer_grad(np, l)
    assert np.max(np.abs(got - exact) / np.abs(exact)) < 5e-14


def test_extreme_logits_give_finite_loss_and_gradient_without_warnings():
    l = np.array([[700.0, -700.0, 1e4, -1e4, 0.0, 1e-300]])
    x = np.array([[0.2, 0.9, 0.5, 0.0, 1.0, 0.3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, cache = TERM.forward(np, l, x)
        grad = TERM.backward(np, cache)
        mean = TERM.mean(np, l)
        for dtype in (np.float32, np.float64):   # float32 too: what training runs in
            l32, x32 = l.astype(dtype), x.astype(dtype)
            loss32, cache32 = TERM.forward(np, l32, x32)
            grad32 = TERM.backward(np, cache32)
            assert grad32.dtype == dtype and np.isfinite(loss32) and np.isfinite(grad32).all()
    assert np.isfinite(loss) and np.isfinite(grad).all()
    # d loss / dl = E[x] - x with E[x] = 1/(1 - e^-l) - 1/l: about 1 - 1/l far right, -1/l far left
    expected_mean = np.array([1 - 1 / 700, 1 / 700, 1 - 1e-4, 1e-4, 0.5, 0.5])
    np.testing.assert_allclose(mean[0], expected_mean, rtol=1e-15)
    np.testing.assert_allclose(grad[0], expected_mean - x[0], rtol=1e-14, atol=1e-16)
    per_pixel = np.logaddexp(0, l[0]) - x[0] * l[0] - np.log(np.maximum(np.abs(l[0]), 1e-300))
    per_pixel[4:] = 0.0                                          # softplus(0) - log C(0) = log 2 - log 2
    assert float(loss) == pytest.approx(per_pixel.sum(), rel=1e-15)


def test_mean_is_sigmoid_minus_dlog_c_and_its_series_near_zero():
    l = np.array([-5.0, -1.0, -0.3, -0.05, 0.0, 1e-9, 0.04, 0.2, 0.6, 3.0])
    mean = TERM.mean(np, l)
    big = np.abs(l) > 0.5
    np.testing.assert_allclose(mean[big], 1 / (1 - np.exp(-l[big])) - 1 / l[big], rtol=1e-14)
    # sigmoid(l) - (1/l - 1/sinh(l)), the two series subtracted term by term
    near = np.abs(l) < 0.1
    m = l[near]
    np.testing.assert_allclose(mean[near], 0.5 + m / 12 - m ** 3 / 720 + m ** 5 / 30240, rtol=3e-15)
    exact = np.array([0.5 + v / 12 if v == 0 else float(1 / (1 - mpmath().exp(-mpmath().mpf(v))) - 1 / mpmath().mpf(v))
                      for v in l])
    np.testing.assert_allclose(mean, exact, rtol=2e-15)
    assert ((mean > 0) & (mean < 1)).all()
    inplace = l.copy()
    assert TERM.mean(np, inplace, out=inplace) is inplace and np.array_equal(inplace, mean)   # decode's call


@pytest.mark.parametrize("l", [-20.0, -3.0, -0.3, 0.0, 1e-3, 0.39, 1.7, 9.0])
def test_the_density_integrates_to_one_and_the_bernoulli_does_not(l):
    """What makes it a likelihood for grey pixels: integral_0^1 p(x | l) dx = 1.

    The Bernoulli's s^x (1 - s)^(1 - x), read as a density on [0, 1], integrates to tanh(l/2) / l,
    at most 1/2: its 'likelihood' of grey images is no probability of anything.
    """
    x = np.linspace(0, 1, 100_001)[:, None]                       # (G, 1): one pixel per grid point
    logits = np.full_like(x, l)
    density = np.exp(TERM.log_prob(np, x, logits))
    # the trapezoid rule is off by about h^2/12 * l * (p(1) - p(0)): 3e-9 at l = -20
    assert np.trapezoid(density, x[:, 0]) == pytest.approx(1.0, abs=1e-8)
    bernoulli = np.exp(losses.LIKELIHOODS["bernoulli"].log_prob(np, x, logits))
    integral = np.trapezoid(bernoulli, x[:, 0])
    assert integral == pytest.approx(0.5 if l == 0 else np.tanh(l / 2) / l, abs=1e-8)
    assert integral <= 0.5 + 1e-12


def test_log_prob_is_minus_forward_with_leading_axes():
    rng = np.random.default_rng(3)
    logits = 5 * rng.standard_normal((3, 4, 10))                  # (S, C, D)
    logits[0, 0, :4] = [0.0, 1e-9, S, -S]
    x = rng.uniform(0, 1, (4, 10))                                # (C, D), broadcast over S
    log_prob = TERM.log_prob(np, x, logits)
    assert log_prob.shape == (3, 4)
    for s in range(3):
        for c in range(4):
            loss = TERM.forward(np, logits[s, c][None], x[c][None])[0]
            assert log_prob[s, c] == pytest.approx(-float(loss), rel=1e-13, abs=1e-13)


def test_registered_as_a_true_likelihood():
    assert TERM.normalized and TERM.is_density(binary=False) and TERM.is_density(binary=True)
    assert losses.get_likelihood("continuous-bernoulli") is TERM


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_small_model_every_entry_float64(beta):
    model = VAE(6, 5, 3, "continuous-bernoulli", dtype=np.float64, seed=1)
    rows = check_model(model, *check_batch(model, seed=1), beta=beta)
    assert len(rows) == 10 and all(r.checked == np.prod(r.shape) and r.kinks == 0 for r in rows)
    assert all(r.passed for r in rows), rows


def test_small_model_with_logits_on_both_sides_of_the_switch():
    """Scale the output layer so the logits spread over [-1, 1]: many near the switch, some in the series."""
    model = VAE(6, 5, 3, "continuous-bernoulli", dtype=np.float64, seed=2)
    x, eps = check_batch(model, batch=8, seed=2)
    model.params["out.b"][...] = [-0.41, -0.39, 0.0, 0.05, 0.39, 0.41]
    model.params["out.W"] *= 0.05
    logits = model.decode_logits(model.encode(x)[0])
    assert (np.abs(logits) < S).any() and (np.abs(logits) > S).any()
    assert all(r.passed for r in check_model(model, x, eps))


# -- the checks must fail when the derivative of log C is wrong ----------------------------------

def _row_errors(monkeypatch, broken):
    monkeypatch.setattr(losses, "log_normalizer_grad", broken)
    model = VAE(6, 5, 3, "continuous-bernoulli", dtype=np.float64, seed=1)
    x, eps = check_batch(model, seed=1)
    model.params["out.W"] *= 0.2                                  # logits near 0: the series branch is used
    return {r.name: r for r in check_model(model, x, eps)}


def test_check_fails_when_the_series_second_term_has_the_wrong_sign(monkeypatch):
    wrong = (losses.DLOG_C_SERIES[0], -losses.DLOG_C_SERIES[1]) + losses.DLOG_C_SERIES[2:]
    monkeypatch.setattr(losses, "DLOG_C_SERIES", wrong)
    # a single logit in the series branch, checked directly
    logit, x = np.array([[0.3]]), np.array([[0.5]])
    error = rel_error(dlogits_of(logit, x), numerical_gradient(lambda: loss_of(logit, x), logit))
    assert error > 100 * TOL
    model = VAE(6, 5, 3, "continuous-bernoulli", dtype=np.float64, seed=1)
    model.params["out.b"][...] = 0.3
    model.params["out.W"] *= 0.01                                 # every logit near 0.3
    row = {r.name: r for r in check_model(model, *check_batch(model, seed=1))}["out.b"]
    assert row.max_rel_error > 100 * row.tolerance


def test_check_fails_when_the_one_over_sinh_term_is_dropped(monkeypatch):
    original = losses.log_normalizer_grad

    def without_csch(xp, logits, out=None, **scratch):
        grad = original(xp, logits, out=out, **scratch)
        far = np.abs(logits) >= S
        grad[far] = 1 / logits[far]                               # 1/l instead of 1/l - 1/sinh(l)
        return grad
    logit, x = np.array([[1.5, -0.9, 2.0]]), np.array([[0.5, 0.1, 0.9]])
    monkeypatch.setattr(losses, "log_normalizer_grad", without_csch)
    assert rel_error(dlogits_of(logit, x), numerical_gradient(lambda: loss_of(logit, x), logit)) > 100 * TOL
    model = VAE(6, 5, 3, "continuous-bernoulli", dtype=np.float64, seed=1)
    model.params["out.b"][...] = 1.5
    assert {r.name: r for r in check_model(model, *check_batch(model, seed=1))}["out.b"].max_rel_error > 100 * TOL


def test_check_fails_when_log_c_is_left_out_of_the_gradient(monkeypatch):
    """The likelihood would then train as if it were the Bernoulli: the check must notice, in every tensor (the
    error enters at the logits), even with every logit near 0, where the missing d log C / dl ~ l / 6 is smallest."""
    rows = _row_errors(monkeypatch, lambda xp, logits, out=None, **scratch: xp.zeros_like(logits))
    assert rows["out.b"].max_rel_error > 100 * rows["out.b"].tolerance
    assert all(row.max_rel_error > 100 * row.tolerance for row in rows.values()), rows


# -- PyTorch --------------------------------------------------------------------------------------

# torch computes log C from probs = clamp(sigmoid(l), eps, 1 - eps), with a Taylor series only for
# probs in (0.499, 0.501] (|l| < 0.004). Measured in float64 against 50 digits: to 1e-13 for
# 0.01 < |l| < 10; 1e-11 just outside its series (|l| = 0.0041) and at |l| = 15; 2e-9 at 20, 1e-5 at 30;
# past |l| = 36 the clamped probs make it wrong by percents. So parity is checked for |l| <= 12.
TORCH_ACCURATE = 12.0


def _torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI installs torch==2.13.0)")
    torch.set_num_threads(1)
    return torch


def test_log_prob_gradient_and_mean_match_torch():
    torch = _torch()
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.uniform(-TORCH_ACCURATE, TORCH_ACCURATE, 400),
                             NEAR_ZERO, AT_SWITCH, [0.0039, -0.0039, 0.02, -0.02, TORCH_ACCURATE]])
    x = rng.uniform(0, 1, logits.size)
    x[:3] = [0.0, 1.0, 0.5]
    theirs_logits = torch.tensor(logits, requires_grad=True)
    distribution = torch.distributions.ContinuousBernoulli(logits=theirs_logits)
    log_prob = distribution.log_prob(torch.from_numpy(x))
    (-log_prob.sum()).backward()
    ours = -np.array([float(TERM.forward(np, np.array([[l]]), np.array([[v]]))[0]) for l, v in zip(logits, x)])
    np.testing.assert_allclose(ours, log_prob.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert rel_error(TERM.log_prob(np, x, logits), log_prob.sum().item()) < 1e-12
    dlogits = TERM.backward(np, TERM.forward(np, logits[None], x[None])[1])[0]
    np.testing.assert_allclose(dlogits, theirs_logits.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert rel_error(dlogits, theirs_logits.grad.numpy()) < 1e-12
    np.testing.assert_allclose(TERM.mean(np, logits), distribution.mean.detach().numpy(), rtol=1e-9)


def test_torch_goes_wrong_where_we_stay_exact():
    """Past |l| = 36 torch's clamped probs give a wrong log C; ours matches the formula log|l| - log tanh(|l|/2)."""
    torch = _torch()
    l, x = np.array([40.0, -40.0, 100.0]), np.array([0.3, 0.6, 0.9])
    exact = x * l - np.logaddexp(0, l) + np.log(np.abs(l))          # tanh(|l|/2) = 1 in float64 here
    theirs = torch.distributions.ContinuousBernoulli(logits=torch.from_numpy(l)).log_prob(torch.from_numpy(x))
    ours = np.array([-float(TERM.forward(np, np.array([[a]]), np.array([[b]]))[0]) for a, b in zip(l, x)])
    np.testing.assert_allclose(ours, exact, rtol=1e-15)
    assert np.max(np.abs(theirs.numpy() - exact) / np.abs(exact)) > 1e-3


# -- through the rest of numpyvae --------------------------------------------------------------------

def test_fakegpu_training_step_makes_no_transfers_and_no_sync_reads():
    backend = get_backend("fakegpu")
    counters = backend.xp.counters
    model = VAE(20, 8, 2, "continuous-bernoulli", backend=backend, seed=0)
    optimizer = Adam(model)
    x = backend.to_device(np.random.default_rng(0).uniform(0, 1, (16, 20)), dtype=model.dtype)
    total = backend.xp.zeros((), dtype=np.float64)
    for _ in range(2):                                            # warm-up: buffers allocated
        total += model.loss_and_grads(x)[0]
        optimizer.step()
    counters.clear()
    for _ in range(3):
        total += model.loss_and_grads(x)[0]
        optimizer.step()
    assert dict(counters) == {}, "a training step moved data across or waited for the device"
    assert np.isfinite(backend.scalar(total))
    samples = model.sample(4, rng=backend.rng(0))                 # decode through the mean, on the device
    assert ((backend.to_host(samples) > 0) & (backend.to_host(samples) < 1)).all()


# (the allocation test of a continuous-Bernoulli step is in test_gpu.py, with every other likelihood)


def test_training_lowers_the_loss_and_the_bound_can_be_negative():
    """A density on [0, 1] can exceed 1: well-fit pixels have log p > 0, so the loss may go below 0."""
    model = VAE(30, 16, 2, "continuous-bernoulli", dtype=np.float64, seed=0)
    optimizer = Adam(model, lr=1e-2)
    rng = np.random.default_rng(0)
    x = np.clip(rng.uniform(0, 1, (1, 30)) ** 4 + 0.01 * rng.standard_normal((64, 30)), 0, 1)   # near-copies
    first = float(model.loss_and_grads(x, rng=rng)[0])
    for _ in range(300):
        model.loss_and_grads(x, rng=rng)
        optimizer.step()
    last = float(model.loss(x, rng=rng)[0])
    assert last < first and last < 0


def bernoulli_numbers(count):
    """B_0 .. B_{count-1} as exact fractions (Akiyama-Tanigawa), with B_1 = +1/2 (unused here)."""
    from fractions import Fraction
    numbers, row = [], []
    for m in range(count):
        row.append(Fraction(1, m + 1))
        for j in range(m, 0, -1):
            row[j - 1] = j * (row[j - 1] - row[j])
        numbers.append(row[0])
    return numbers


def test_the_series_coefficients_are_the_bernoulli_number_formula():
    """d log C/dl = 1/l - 1/sinh(l) = sum_n 2 (2^(2n-1) - 1) B_2n l^(2n-1) / (2n)!: each float in DLOG_C_SERIES is
    that fraction, correctly rounded (a wrong last digit of a numerator moves the result below the tests' reach)."""
    from fractions import Fraction
    B = bernoulli_numbers(2 * len(losses.DLOG_C_SERIES) + 1)
    assert (B[2], B[4]) == (Fraction(1, 6), Fraction(-1, 30))
    for n, coefficient in enumerate(losses.DLOG_C_SERIES, start=1):
        assert coefficient == float(2 * (2 ** (2 * n - 1) - 1) * B[2 * n] / math.factorial(2 * n)), n
    assert losses.LOG_C_SERIES == tuple(c / (2 * n) for n, c in enumerate(losses.DLOG_C_SERIES, start=1))

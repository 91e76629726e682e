"""Adam on the flat buffers: the textbook update, in place, and a state that survives a save."""
import numpy as np
import pytest

from numpyvae import VAE, Adam, optim


def reference_adam(params, grads_per_step, lr, b1, b2, eps):
    """Adam as written in Kingma & Ba / torch.optim.Adam, one fresh array per line."""
    p, m, v = params.copy(), np.zeros_like(params), np.zeros_like(params)
    for t, g in enumerate(grads_per_step, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
    return p


def test_adam_matches_the_textbook_update():
    model = VAE(6, 5, 3, dtype=np.float64)
    start = model.flat_params.copy()
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(model.num_params) * 10 ** rng.uniform(-3, 1) for _ in range(7)]
    opt = Adam(model, lr=3e-3, betas=(0.8, 0.99), eps=1e-6)
    for g in grads:
        model.flat_grads[:] = g
        opt.step()
    expected = reference_adam(start, grads, 3e-3, 0.8, 0.99, 1e-6)
    np.testing.assert_allclose(model.flat_params, expected, rtol=1e-12, atol=0)


def default_adam_gradients(n, steps, seed):
    """Gradients of every scale, 1e-9 to 10, with signs that flip between steps: each default then shows."""
    rng = np.random.default_rng(seed)
    return [rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-9, 1, n) for _ in range(steps)]


def test_default_adam_takes_torchs_default_hyperparameters():
    """Adam() means lr=1e-3, betas=(0.9, 0.999), eps=1e-8, as torch.optim.Adam(): the first step moves each
    parameter by exactly lr * g / (|g| + eps) (about lr * sign(g), half that where |g| = eps)."""
    model = VAE(6, 5, 3, dtype=np.float64)
    start = model.flat_params.copy()
    grads = default_adam_gradients(model.num_params, 6, seed=2)
    opt = Adam(model)
    model.flat_grads[:] = grads[0]
    opt.step()
    np.testing.assert_allclose(start - model.flat_params, 1e-3 * grads[0] / (np.abs(grads[0]) + 1e-8),
                               rtol=1e-12, atol=0)
    for g in grads[1:]:
        model.flat_grads[:] = g
        opt.step()
    np.testing.assert_allclose(model.flat_params, reference_adam(start, grads, 1e-3, 0.9, 0.999, 1e-8),
                               rtol=1e-12, atol=0)


def test_default_adam_matches_torch_optim_adam_with_its_defaults():
    """The same defaults, read from PyTorch itself rather than written down here."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI installs torch==2.13.0)")
    model = VAE(6, 5, 3, dtype=np.float64)
    theirs = torch.tensor(model.flat_params.copy())
    torch_opt, opt = torch.optim.Adam([theirs]), Adam(model)
    for g in default_adam_gradients(model.num_params, 6, seed=3):
        model.flat_grads[:] = g
        opt.step()
        theirs.grad = torch.from_numpy(g)
        torch_opt.step()
    np.testing.assert_allclose(model.flat_params, theirs.numpy(), rtol=1e-12, atol=0)


def test_adam_updates_in_place_and_keeps_views_valid():
    model = VAE(6, 5, 3)
    buffer, view = model.flat_params, model.params["enc.W"]
    before = view.copy()
    model.loss_and_grads(np.full((2, 6), 0.5))
    Adam(model).step()
    assert model.flat_params is buffer and not np.array_equal(view, before)
    assert model.flat_params.dtype == np.float32


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (4, 6)).astype(np.float32)
    eps = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(6)]

    def train(model, opt, steps):
        for e in steps:
            model.loss_and_grads(x, eps=e)
            opt.step()

    # none of them the defaults, so that a hyperparameter load_state_dict forgot would show
    settings = {"lr": 1e-2, "betas": (0.5, 0.8), "eps": 1e-4}
    straight = VAE(6, 5, 3, seed=0)
    straight_opt = Adam(straight, **settings)
    train(straight, straight_opt, eps)

    first = VAE(6, 5, 3, seed=0)
    first_opt = Adam(first, **settings)
    train(first, first_opt, eps[:3])
    state, params = first_opt.state_dict(), first.flat_params.copy()
    resumed = VAE(6, 5, 3, seed=99)
    resumed.flat_params[:] = params
    resumed_opt = Adam(resumed, lr=0.5)           # hyperparameters come back from the state too
    resumed_opt.load_state_dict(state)
    assert (resumed_opt.lr, resumed_opt.betas, resumed_opt.eps) == (1e-2, (0.5, 0.8), 1e-4)
    train(resumed, resumed_opt, eps[3:])
    assert resumed_opt.t == 6
    assert np.array_equal(resumed.flat_params, straight.flat_params)


def test_bad_hyperparameters_and_state():
    model = VAE(6, 5, 3)
    with pytest.raises(ValueError, match="learning rate"):
        Adam(model, lr=0)
    with pytest.raises(ValueError, match="betas"):
        Adam(model, betas=(0.9, 1.0))
    state = Adam(model).state_dict()
    state["m"] = state["m"][:-1]
    with pytest.raises(ValueError, match="Adam state 'm' has shape"):
        Adam(model).load_state_dict(state)
    # a checkpoint edited to an impossible learning rate or beta is refused too, not trained with
    for key, value, message in (("lr", -1e-3, "learning rate"), ("beta2", 1.0, "betas"), ("eps", -1.0, "eps")):
        state = Adam(model).state_dict()
        state[key] = value
        with pytest.raises(ValueError, match=message):
            Adam(model).load_state_dict(state)


def test_m_never_decays_into_subnormal_floats():
    """Weights whose gradient stays 0 (always-black pixels) must not leave m subnormal: that is ~50x slower."""
    model = VAE(6, 5, 3)                                   # float32
    opt = Adam(model)
    model.flat_grads[:] = 1e-3
    opt.step()
    model.flat_grads[:] = 0
    tiny = np.finfo(np.float32).tiny
    for _ in range(1500):                                  # 0.9 ** 1500 * 1e-3 is far below tiny
        opt.step()
        assert not np.any((opt.m != 0) & (np.abs(opt.m) < tiny))
    assert np.all(np.abs(opt.m) < 1e-35)                   # what is left is negligible, and a normal float


def test_m_is_never_subnormal_after_a_step_on_tiny_negative_gradients():
    """The flush rounds m onto multiples of 64 * tiny from either side: g = -6e-38 gives m = 0, not a subnormal."""
    model = VAE(6, 5, 3)                                   # float32
    opt = Adam(model)
    model.flat_grads[:] = -np.geomspace(1e-39, 1e-33, model.num_params).astype(np.float32)
    model.flat_grads[::2] *= -1                            # both signs
    opt.step()
    tiny = np.finfo(np.float32).tiny
    assert not np.any((opt.m != 0) & (np.abs(opt.m) < tiny))


def test_the_fused_kernel_is_launched_with_the_plain_updates_numbers(monkeypatch):
    """On CuPy one kernel does the update (optim._fused_adam): a stand-in written from that kernel's formula,
    run on NumPy, must move p, m and v as the plain update does, so the launch passes the right numbers in the
    right order. (The kernel's own arithmetic runs only on a GPU: benchmarks/gpu_check.sh.)"""
    def stand_in(xp):
        def kernel(g, b1, one_minus_b1, b2, one_minus_b2, step_size, sqrt_bc2, eps, p, m, v):
            m[...] = b1 * m + one_minus_b1 * g
            v[...] = b2 * v + one_minus_b2 * g * g
            p -= step_size * m / (np.sqrt(v) / sqrt_bc2 + eps)
        return kernel

    class NamedCupy:
        """The model's own backend, but named "cupy", which is all Adam looks at to choose the kernel."""
        name = "cupy"

        def __init__(self, backend):
            self.backend = backend

        def __getattr__(self, attribute):
            return getattr(self.backend, attribute)

    monkeypatch.setattr(optim, "_fused_adam", stand_in)
    fused_model, plain_model = VAE(6, 5, 3, dtype=np.float64, seed=4), VAE(6, 5, 3, dtype=np.float64, seed=4)
    real = fused_model.backend
    fused_model.backend = NamedCupy(real)
    fused = Adam(fused_model, lr=1e-2)
    fused_model.backend = real
    plain = Adam(plain_model, lr=1e-2)
    assert fused._fused is not None and plain._fused is None
    x = np.random.default_rng(0).uniform(0, 1, (4, 6))
    for step in range(3):
        eps = np.random.default_rng(step).standard_normal((4, 3))
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            model.loss_and_grads(x, eps=eps)
            opt.step()
    np.testing.assert_allclose(fused_model.flat_params, plain_model.flat_params, rtol=1e-13, atol=0)
    np.testing.assert_allclose(fused.m, plain.m, rtol=1e-13, atol=0)
    np.testing.assert_allclose(fused.v, plain.v, rtol=1e-13, atol=0)

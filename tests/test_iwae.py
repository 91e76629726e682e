"""The IWAE objective (iwae.py): its loss and gradient against PyTorch autograd and finite differences,
K = 1 against the ELBO, mutations caught, allocation-free steps, the fake device, and training on it."""
import csv
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from numpyvae import VAE, Adam, checkpoint, get_backend, iwae
from numpyvae.batches import DeviceDataset
from numpyvae.gradcheck import check_batch, check_model, rel_error
from numpyvae.gradcheck_plan import small_settings
from numpyvae.losses import LIKELIHOODS
from numpyvae.train import ConfigError, Interrupted, TrainConfig, read_metrics

try:
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from torch_reference import TorchVAE   # the one PyTorch builder, shared with the benchmark
except ImportError:     # only the parity tests need it; they skip, saying why
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs torch==2.13.0)")


def batch(model, K, B, seed):
    rng = np.random.default_rng(seed)
    x, eps = rng.uniform(0, 1, (B, model.input_dim)), rng.standard_normal((K, B, model.latent_dim))
    return x, eps, (rng.integers(0, model.num_classes, B) if model.conditional else None)


def torch_iwae(model, x, eps, y=None):
    """The negative IWAE bound in PyTorch autograd, from the paper's definition, on the model built
    from numpyvae's own description and weights: (loss, {name: gradient in numpyvae's layout})."""
    reference = TorchVAE(model)
    loss = reference.iwae(torch.from_numpy(x), torch.from_numpy(eps), None if y is None else torch.from_numpy(y))
    loss.backward()
    return loss.item(), reference.grads()


# -- the gradient, three ways -------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("classes", [0, 10], ids=["plain", "conditional"])
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize("K", [1, 5])
def test_loss_and_every_gradient_match_autograd(likelihood, classes, K):
    model = VAE(784, 64, 8, likelihood, num_classes=classes, dtype=np.float64, seed=0)
    x, eps, y = batch(model, K, 16, seed=1)
    loss = model.loss_and_grads(x, eps=eps, y=y, objective="iwae")[0]
    torch_loss, torch_grads = torch_iwae(model, x, eps, y)
    assert rel_error(float(loss), torch_loss) < 1e-12
    for name in model.params:
        assert rel_error(model.grads[name], torch_grads[name]) < 1e-9, name


@needs_torch
@pytest.mark.parametrize("classes", [0, 4], ids=["plain", "conditional"])
def test_the_conv_model_trains_on_the_bound_too(classes):
    """The IWAE step only wraps the encoder and the decoder, so the conv VAE's gradients are as exact."""
    model = VAE(**small_settings({"arch": "conv", "num_classes": classes}), dtype=np.float64, seed=0)
    x, eps, y = batch(model, 3, 5, seed=1)
    loss = model.loss_and_grads(x, eps=eps, y=y, objective="iwae")[0]
    torch_loss, torch_grads = torch_iwae(model, x, eps, y)
    assert rel_error(float(loss), torch_loss) < 1e-12
    for name in model.params:
        assert rel_error(model.grads[name], torch_grads[name]) < 1e-9, name
    rows = check_model(model, *check_batch(model, seed=2, samples=3), seed=0, objective="iwae")
    assert all(row.passed for row in rows), [row for row in rows if not row.passed]


@pytest.mark.parametrize("classes", [0, 4], ids=["plain", "conditional"])
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_every_entry_against_finite_differences(likelihood, classes):
    model = VAE(6, 5, 3, likelihood, num_classes=classes, dtype=np.float64, seed=2)
    rows = check_model(model, *check_batch(model, batch=5, seed=2, samples=4), seed=2, objective="iwae")
    assert [row.name for row in rows] == list(model.params)
    for row in rows:
        assert row.passed, row


def test_full_size_model_against_finite_differences():
    model = VAE(dtype=np.float64, seed=0)
    rows = check_model(model, *check_batch(model, seed=0, samples=3), entries=20, seed=0, objective="iwae")
    for row in rows:
        assert row.passed, row


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_one_sample_is_the_elbo_with_the_kl_taken_at_the_sample(likelihood):
    """K = 1: loss = recon + log q(z|x) - log p(z) at the sample; the closed-form KL is another number."""
    model = VAE(30, 12, 4, likelihood, dtype=np.float64, seed=3)
    x, eps, _ = batch(model, 1, 7, seed=4)
    total, recon, kl = (float(v) for v in model.loss(x, eps=eps, objective="iwae"))
    elbo_total, elbo_recon, closed_form_kl = (float(v) for v in model.loss(x, eps=eps[0]))
    mu, logvar = model.encode(x)
    z = mu + eps[0] * np.exp(logvar / 2)
    # log N(z; mu, exp(logvar)) - log N(z; 0, 1), summed over latents and images, written out
    sample_kl = np.sum(-0.5 * ((z - mu) ** 2 / np.exp(logvar) + logvar) + 0.5 * z ** 2)
    assert recon == pytest.approx(elbo_recon, rel=1e-13)
    assert kl == pytest.approx(sample_kl, rel=1e-12, abs=1e-12)
    assert total == pytest.approx(elbo_recon + sample_kl, rel=1e-13)
    assert abs(kl - closed_form_kl) > 1e-3          # so the test above could tell them apart


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_recon_and_kl_are_the_averages_over_the_samples(likelihood):
    """K > 1: recon and kl (what metrics.csv records) are each sample's terms averaged over the K samples,
    and their sum, the K-sample ELBO, is never below the bound."""
    model = VAE(30, 12, 4, likelihood, dtype=np.float64, seed=3)
    K = 3
    x, eps, _ = batch(model, K, 7, seed=4)
    total, recon, kl = (float(v) for v in model.loss(x, eps=eps, objective="iwae", samples=K))
    mu, logvar = model.encode(x)
    per_sample_recon, per_sample_kl = [], []
    for k in range(K):
        per_sample_recon.append(float(model.loss(x, eps=eps[k])[1]))       # -log p(x|z_k), the ELBO's term
        z = mu + eps[k] * np.exp(logvar / 2)
        per_sample_kl.append(np.sum(-0.5 * ((z - mu) ** 2 / np.exp(logvar) + logvar) + 0.5 * z ** 2))
    assert recon == pytest.approx(np.mean(per_sample_recon), rel=1e-13)
    assert kl == pytest.approx(np.mean(per_sample_kl), rel=1e-12)
    assert total <= recon + kl
    assert abs(np.sum(per_sample_recon) - recon) > 1e-3      # a sum over the samples would not pass


def test_more_samples_give_a_tighter_bound_on_average():
    """E[-log (1/K) sum w] falls as K grows and stays below the K-sample average negative ELBO."""
    model = VAE(30, 12, 4, dtype=np.float64, seed=5)
    x = np.random.default_rng(0).uniform(0, 1, (64, 30))
    rng = np.random.default_rng(1)
    bounds = {}
    for K in (1, 10, 100):
        draws = [model.loss(x, rng=rng, objective="iwae", samples=K) for _ in range(20)]
        bounds[K] = np.mean([float(total) for total, _, _ in draws])
        assert all(float(total) <= float(recon + kl) + 1e-9 for total, recon, kl in draws)
    assert bounds[100] < bounds[10] < bounds[1]


def test_float32_survives_log_weights_spread_over_more_than_88_nats():
    """exp overflows float32 past 88.7: the log-sum-exp must shift by each image's LARGEST log w (every
    exp <= 1). Shifting by the smallest is the same mathematics, but here its exps overflow and the loss
    becomes -inf. Samples far out in the posterior's tail (eps * 5) spread each image's log w by > 88 nats."""
    from numpyvae.evaluate import log_weights
    rng = np.random.default_rng(1)
    x, eps = rng.uniform(0, 1, (4, 784)), rng.standard_normal((5, 4, 8))
    eps[1:] *= 5
    exact = VAE(784, 64, 8, dtype=np.float64, seed=0)
    mu, logvar = exact.encode(x)
    log_w = log_weights(exact, x, mu, logvar, eps)                                   # (K, B)
    assert (log_w.max(axis=0) - log_w.min(axis=0)).min() > 88                      # so the test tests it
    model = VAE(784, 64, 8, dtype=np.float32, seed=0)
    loss = float(model.loss_and_grads(x.astype(np.float32), eps=eps.astype(np.float32), objective="iwae")[0])
    expected = float(exact.loss_and_grads(x, eps=eps, objective="iwae")[0])
    assert np.isfinite(model.flat_grads).all()
    assert rel_error(loss, expected) < 1e-5
    assert rel_error(model.flat_grads.astype(np.float64), exact.flat_grads) < 1e-3


# -- mutations the checks must catch -------------------------------------------------------------

def unnormalized_weights(monkeypatch):
    """The bug: scale each sample's gradient by w_kb itself instead of w_kb / sum_k w_kb."""
    forward = iwae.forward

    def mutant(*args, **kwargs):
        loss, recon, kl, cache = forward(*args, **kwargs)
        return loss, recon, kl, cache._replace(weights=np.exp(cache.log_w))
    monkeypatch.setattr(iwae, "forward", mutant)


def logvar_term_dropped(monkeypatch):
    """The bug: forget that log q(z|x) holds + logvar / 2 directly (its share -1/2 of dlogvar)."""
    backward_latents = iwae.backward_latents

    def mutant(*args, **kwargs):
        dmu, dlogvar = backward_latents(*args, **kwargs)
        dlogvar += 0.5
        return dmu, dlogvar
    monkeypatch.setattr(iwae, "backward_latents", mutant)


MUTANTS = {"unnormalized weights": (unnormalized_weights, None),
           "logvar's log q term dropped": (logvar_term_dropped, {"logvar.W", "logvar.b", "enc.W", "enc.b"})}


@pytest.mark.parametrize("mutant", MUTANTS, ids=list(MUTANTS))
def test_finite_differences_catch_a_wrong_weight(mutant, monkeypatch):
    mutate, wrong_tensors = MUTANTS[mutant]
    mutate(monkeypatch)
    model = VAE(6, 5, 3, dtype=np.float64, seed=2)
    rows = {row.name: row for row in check_model(model, *check_batch(model, batch=5, seed=2, samples=4), seed=2,
                                                 objective="iwae")}
    failed = {name for name, row in rows.items() if not row.passed}
    if wrong_tensors is None:
        assert failed == set(model.params)                  # every gradient is scaled wrongly
    else:
        assert failed == wrong_tensors                      # logvar's head and the encoder under it
    assert all(rows[name].max_rel_error > 100 * rows[name].tolerance for name in failed)


@needs_torch
@pytest.mark.parametrize("mutant", MUTANTS, ids=list(MUTANTS))
def test_autograd_parity_catches_a_wrong_weight(mutant, monkeypatch):
    MUTANTS[mutant][0](monkeypatch)
    model = VAE(784, 64, 8, dtype=np.float64, seed=0)
    x, eps, y = batch(model, 5, 16, seed=1)
    model.loss_and_grads(x, eps=eps, objective="iwae")
    _, torch_grads = torch_iwae(model, x, eps)
    assert rel_error(model.grads["logvar.b"], torch_grads["logvar.b"]) > 1e-3


def test_eps_of_the_wrong_shape_is_refused_in_one_line():
    model = VAE(6, 5, 3, seed=0)
    x = np.full((4, 6), 0.5)
    for eps in (np.zeros((4, 3)), np.zeros((2, 5, 3)), np.zeros((0, 4, 3))):
        with pytest.raises(ValueError, match=r"eps for the IWAE objective must have shape \(K, 4, 3\)"):
            model.loss_and_grads(x, eps=eps, objective="iwae")
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        model.loss(x, objective="iwae", samples=0)
    with pytest.raises(ValueError, match="objective must be one of elbo, iwae, not 'IWAE'"):
        model.loss_and_grads(x, objective="IWAE")


def test_the_elbo_path_is_untouched_by_an_iwae_step():
    """Same model, same batch: the ELBO's loss and gradient are the same before and after an IWAE step."""
    model = VAE(30, 12, 4, seed=0)
    x, eps, _ = batch(model, 3, 8, seed=0)
    before = [float(v) for v in model.loss_and_grads(x, eps=eps[0])], model.flat_grads.copy()
    model.loss_and_grads(x, eps=eps, objective="iwae")
    after = [float(v) for v in model.loss_and_grads(x, eps=eps[0])], model.flat_grads.copy()
    assert before[0] == after[0] and np.array_equal(before[1], after[1])


# -- the device path ------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [{}, {"num_classes": 10}] + [{"likelihood": name} for name in LIKELIHOODS],
                         ids=lambda settings: ",".join(f"{k}={v}" for k, v in settings.items()) or "default")
def test_numpy_iwae_step_allocates_nothing_after_warmup(settings):
    model = VAE(seed=0, **settings)                                  # 784-400-20, float32
    optimizer = Adam(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 784)).astype(np.float32)
    eps = rng.standard_normal((5, 64, 20)).astype(np.float32)
    y = rng.integers(0, 10, 64) if model.conditional else None
    for _ in range(3):
        model.loss_and_grads(x, eps=eps, y=y, objective="iwae")
        optimizer.step()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(10):
            model.loss_and_grads(x, eps=eps, y=y, objective="iwae")
            optimizer.step()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # as for the ELBO (test_gpu.py): NumPy's iterator scratch and small Python objects only; one
    # (K * B, D) activation would be 1 MB, one (K * B, H) 512 KB
    assert peak - before < 64 * 1024
    assert after - before < 4 * 1024, "something kept growing from step to step"


@pytest.mark.parametrize("classes", [0, 10], ids=["plain", "conditional"])
def test_fakegpu_iwae_step_makes_no_transfers_and_matches_numpy(classes):
    backend = get_backend("fakegpu")
    counters = backend.xp.counters
    images = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 10, 64).astype(np.uint8) if classes else None
    data = DeviceDataset(images, backend, labels=labels)
    model = VAE(hidden_dim=16, latent_dim=2, num_classes=classes, backend=backend, seed=0)
    optimizer = Adam(model)
    eps = backend.xp.zeros((4, 16, 2), dtype=np.float32)
    rng = backend.rng(0)
    total = backend.xp.zeros((), dtype=np.float64)
    batches = data.labeled_batches(16, shuffle=True, seed=(0, 1))
    for step, (x, y) in enumerate(batches):
        if step == 2:
            counters.clear()                                  # after the warm-up steps
        backend.standard_normal(rng, eps)
        total += model.loss_and_grads(x, eps=eps, y=y, objective="iwae")[0]
        optimizer.step()
    assert dict(counters) == {}, "an IWAE step moved data across or waited for the device"
    assert np.isfinite(backend.scalar(total))
    # and the same numbers as NumPy
    host = VAE(hidden_dim=16, latent_dim=2, num_classes=classes, seed=0)
    x, eps = np.full((3, 784), 0.25, np.float32), np.ones((2, 3, 2), np.float32)
    y = np.array([1, 2, 3]) if classes else None
    fake = VAE(hidden_dim=16, latent_dim=2, num_classes=classes, backend="fakegpu", seed=0)
    expected = host.loss_and_grads(x, eps=eps, y=y, objective="iwae")
    got = fake.loss_and_grads(x, eps=eps, y=y, objective="iwae")
    assert [fake.backend.scalar(v) for v in got] == [float(v) for v in expected]
    assert np.array_equal(fake.backend.to_host(fake.flat_grads), host.flat_grads)


# -- training on it ---------------------------------------------------------------------------------

def run(config, run_dir, resume=False, **kwargs):
    from numpyvae import train
    lines = []
    train.train(config, run_dir, resume=resume, log=lines.append, progress=False, **kwargs)
    return lines


def test_training_on_the_iwae_bound_records_and_labels_it(tiny_config, tmp_path):
    lines = run(tiny_config(objective="iwae", samples=3), tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["objective"], config["samples"]) == ("iwae", 3)
    with open(tmp_path / "run" / "metrics.csv", newline="") as file:
        header = next(csv.reader(file))
    assert header[-2:] == ["train_iwae", "test_iwae"]
    metrics = read_metrics(tmp_path / "run")
    for row in metrics:
        # the bound trained on is below the K-sample negative ELBO it tightens
        assert 100 < row["train_iwae"] < row["train_loss"] and 100 < row["test_iwae"] < row["test_loss"] + 5
    assert metrics[1]["train_iwae"] < metrics[0]["train_iwae"]                        # it learns
    assert "trained on the IWAE bound with K = 3" in lines[0]
    epoch_line = [line for line in lines if line.startswith("epoch")][-1]
    assert f"train IWAE-3 loss {metrics[1]['train_iwae']:8.2f}" in epoch_line
    assert f"test IWAE-3 loss {metrics[1]['test_iwae']:8.2f}" in epoch_line


def test_the_elbo_run_is_the_one_it_always_was(tiny_config, tmp_path):
    """objective="elbo" (the default) writes no IWAE columns and trains the same weights as a run of old."""
    run(tiny_config(), tmp_path / "default")
    run(tiny_config(objective="elbo", samples=1), tmp_path / "explicit")
    assert list(read_metrics(tmp_path / "default")[0]) == list(read_metrics(tmp_path / "explicit")[0])
    assert "train_iwae" not in read_metrics(tmp_path / "default")[0]
    a, b = (checkpoint.load(tmp_path / name / checkpoint.FILENAME) for name in ("default", "explicit"))
    assert np.array_equal(a.params, b.params) and a.running.shape == (3,)


@pytest.mark.parametrize("settings", [{}, {"num_classes": 10, "likelihood": "continuous-bernoulli",
                                           "binarize": True}], ids=["plain", "conditional, binarized"])
@pytest.mark.parametrize("epoch, step", [(1, 2), (2, 4)])
def test_ctrl_c_mid_epoch_then_resume_is_bit_identical(tiny_config, tmp_path, settings, epoch, step):
    config = tiny_config(objective="iwae", samples=3, **settings)
    run(config, tmp_path / "straight")

    def interrupt(e, s):
        if (e, s) == (epoch, step):
            raise KeyboardInterrupt
    with pytest.raises(Interrupted, match=f"at step {step} of 4 in epoch {epoch}; saved"):
        run(config, tmp_path / "stopped", on_step=interrupt)
    saved = checkpoint.load(tmp_path / "stopped" / checkpoint.FILENAME)
    assert saved.running.shape == (4,) and saved.running[2] == min(16 * step, 60) and saved.running[3] != 0
    run(config, tmp_path / "stopped", resume=True)
    a, b = (checkpoint.load(tmp_path / name / checkpoint.FILENAME) for name in ("straight", "stopped"))
    assert np.array_equal(a.params, b.params) and np.array_equal(a.adam["m"], b.adam["m"])
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert strip(read_metrics(tmp_path / "straight")) == strip(read_metrics(tmp_path / "stopped"))


def test_resume_keeps_the_objective(tiny_config, tmp_path):
    run(tiny_config(epochs=1, objective="iwae", samples=3), tmp_path / "run")
    with pytest.raises(ConfigError, match="samples is 2, but the run was made with samples 3"):
        run(tiny_config(epochs=2, objective="iwae", samples=2), tmp_path / "run", resume=True)


@pytest.mark.parametrize("changes, message", [
    ({"objective": "iwea"}, "objective must be one of elbo, iwae, not 'iwea'"),
    ({"samples": 5}, "samples 5 is for --objective iwae; the ELBO takes 1 sample per image"),
    ({"objective": "iwae", "samples": 0}, "samples must be at least 1"),
    ({"objective": "iwae", "samples": 2, "beta": 0.5}, "the IWAE objective has no KL weight"),
    ({"objective": "iwae", "samples": 2, "warmup_epochs": 1.0}, "the IWAE objective has no KL weight"),
])
def test_bad_objective_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()


def test_a_config_from_before_the_objective_existed_is_an_elbo_run():
    from numpyvae.rundir import TrainConfig as Config
    old = {k: v for k, v in vars(TrainConfig()).items() if k not in ("objective", "samples")}
    config = Config.from_dict(old)
    assert (config.objective, config.samples) == ("elbo", 1)


def test_fake_gpu_trains_on_the_iwae_bound_like_numpy_with_fixed_transfers_per_epoch(tiny_config, tmp_path):
    """--backend fakegpu: the same weights as NumPy, and host-device crossings per epoch that do not
    grow with the number of steps (the IWAE sums stay on the device until the epoch ends)."""
    from numpyvae import fakegpu
    counters = fakegpu.namespace.counters
    crossings = {}
    for batch_size in (30, 4):                                 # 2 and 15 steps per epoch
        config = tiny_config(epochs=1, batch_size=batch_size, objective="iwae", samples=3)
        run(config, tmp_path / f"numpy{batch_size}")
        counters.clear()
        run(tiny_config(epochs=1, batch_size=batch_size, objective="iwae", samples=3, backend="fakegpu"),
            tmp_path / f"device{batch_size}")
        crossings[batch_size] = (counters["sync"] + counters["to_host"], counters["to_device"])
        device, host = (checkpoint.load(tmp_path / f"{name}{batch_size}" / checkpoint.FILENAME)
                        for name in ("device", "numpy"))
        np.testing.assert_allclose(device.params, host.params, rtol=1e-5, atol=1e-6)
    assert crossings[4] == crossings[30]


@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize("classes", [0, 10], ids=["plain", "conditional"])
def test_cupy_iwae_steps_match_numpy(likelihood, classes):
    from numpyvae.backend import cuda_unavailable_reason
    if cuda_unavailable_reason() is not None:
        pytest.skip(f"needs a CUDA device: {cuda_unavailable_reason()}")
    models = [VAE(likelihood=likelihood, num_classes=classes, backend=name, dtype=np.float64, seed=1)
              for name in ("numpy", "cupy")]
    optimizers = [Adam(model) for model in models]
    for step in range(3):
        x, eps, y = batch(models[0], 5, 64, seed=step)
        results = []
        for model, optimizer in zip(models, optimizers):
            totals = [model.backend.scalar(v) for v in model.loss_and_grads(x, eps=eps, y=y, objective="iwae")]
            results.append((totals, model.backend.to_host(model.flat_grads).copy()))
            optimizer.step()
        (l_np, g_np), (l_cp, g_cp) = results
        np.testing.assert_allclose(l_cp, l_np, rtol=1e-10)
        np.testing.assert_allclose(g_cp, g_np, rtol=1e-10, atol=1e-10 * np.abs(g_np).max())


def test_the_gradcheck_command_has_iwae_rows_that_pass(capsys):
    from numpyvae import cli
    assert cli.main(["gradcheck", "--quick"]) == 0
    out = capsys.readouterr().out
    for likelihood in LIKELIHOODS:
        assert f"small 6-5-3 VAE, IWAE bound with K = 3, {likelihood}, every entry" in out
        assert f"small 6-5-3 conditional VAE (4 classes), IWAE bound with K = 3, {likelihood}, every entry" in out


def test_settings_that_would_mean_nothing_are_refused():
    """beta weighs the ELBO's KL, which the IWAE bound does not have; samples is the IWAE's K."""
    model = VAE(6, 5, 3, seed=0)
    x = np.full((4, 6), 0.5)
    with pytest.raises(ValueError, match="the IWAE objective has no KL weight"):
        model.loss_and_grads(x, objective="iwae", samples=2, beta=0.5)
    with pytest.raises(ValueError, match="the ELBO takes one sample per image"):
        model.loss(x, samples=3)

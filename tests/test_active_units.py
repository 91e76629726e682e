"""Active units (Burda et al. 2016): latent u is active when Var over the test set of E_q[z_u | x] > 0.01."""
import json
import re

import numpy as np
import pytest

from numpyvae import VAE, evaluate, get_backend
from numpyvae.batches import DeviceDataset


def dataset(n=300, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 6), dtype=np.uint8)
    return DeviceDataset(images, get_backend("numpy"), np.float64)


def test_activity_is_the_variance_over_images_of_the_posterior_mean():
    model = VAE(6, 8, 4, dtype=np.float64, seed=0)
    data = dataset()
    x = next(data.batches(len(data)))
    mu, logvar = model.encode(x)
    # per image, over the whole set: not the mean posterior variance, not E[mu^2]
    assert np.allclose(evaluate.latent_activity(model, data, batch_size=64), mu.var(axis=0), rtol=1e-12)


def test_units_are_counted_against_the_threshold_of_one_hundredth():
    """Scale each unit's mu weights so its variance over the data is set exactly: 0 (the weights
    zeroed, only the bias left), 0.005, 0.009, 0.011 and 2."""
    model = VAE(6, 8, 5, dtype=np.float64, seed=1)
    data = dataset()
    base = evaluate.latent_activity(model, data)                       # (Z,)
    targets = np.array([0.0, 0.005, 0.009, 0.011, 2.0])
    model.params["mu.W"][...] *= np.sqrt(targets / base)               # var scales with the square
    model.params["mu.b"][...] = 3.0                                    # a shift moves no variance
    assert np.allclose(evaluate.latent_activity(model, data), targets, rtol=1e-9, atol=1e-15)
    assert evaluate.active_units(model, data) == 2
    # the posterior variance plays no part: a unit is active for how its mean moves with x
    model.params["logvar.b"][...] = -8.0
    assert evaluate.active_units(model, data) == 2


def test_evaluate_reports_active_units_in_text_and_json(tiny_config, tmp_path, capsys):
    from numpyvae import cli
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--batch-size", "16", "--hidden-dim", "32", "--latent-dim", "2",
                     "--objective", "iwae", "--samples", "3", "--data-dir", tiny_config().data_dir,
                     "--run-dir", str(run_dir), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "trained on the IWAE bound with K = 3" in out and "train IWAE-3 loss" in out
    assert cli.main(["evaluate", str(run_dir), "--samples", "2", "--iw-samples", "5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    from numpyvae.rundir import load_run
    config, model, _ = load_run(run_dir)
    from numpyvae import datasets
    images, _ = datasets.load_fashion_mnist("test", config.data_dir)
    expected = evaluate.active_units(model, evaluate.test_dataset(images, model.backend, model.dtype))
    assert results["active_units"] == expected and results["latent_dim"] == 2
    assert cli.main(["evaluate", str(run_dir), "--samples", "2", "--iw-samples", "5"]) == 0
    assert re.search(rf"active units +{expected} of 2 ", capsys.readouterr().out)


@pytest.mark.parametrize("args, message", [
    (["--objective", "iwea"], "invalid choice: 'iwea'"),
    (["--samples", "0"], "must be at least 1"),
    (["--samples", "4"], "samples 4 is for --objective iwae"),
    (["--objective", "iwae"], "--objective iwae needs --samples K"),        # not K = 1, silently
])
def test_bad_objective_flags_are_one_line(tiny_config, tmp_path, capsys, args, message):
    from numpyvae import cli
    status = cli.main(["train", "--epochs", "1", *args, "--data-dir", tiny_config().data_dir,
                       "--run-dir", str(tmp_path / "run"), "--no-figures"])
    err = capsys.readouterr().err
    assert status in (1, 2) and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()

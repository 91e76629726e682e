"""Training end to end on the small generated dataset: the run directory, exact resume, Ctrl-C, NaN, checkpoints."""
import csv
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from numpyvae import checkpoint, datasets, fakegpu, rundir, train
from numpyvae.checkpoint import CheckpointError
from numpyvae.optim import Adam
from numpyvae.train import (ConfigError, Diverged, Interrupted, NothingToDo, RunError, TrainConfig,
                            kl_weight, read_metrics)

COLUMNS = "epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds"


def run(config, run_dir, resume=False, **kwargs):
    lines = []
    result = train.train(config, run_dir, resume=resume, log=lines.append, progress=False, **kwargs)
    return result, lines


def state(run_dir):
    """Everything a checkpoint holds, as arrays, for bit-for-bit comparison."""
    with np.load(run_dir / checkpoint.FILENAME, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def assert_same_state(a, b):
    for key in ("params", "adam_m", "adam_v", "adam_t", "step", "epoch", "step_in_epoch"):
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def losses(run_dir):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics(run_dir)]


def interrupt_at(epoch, step):
    def on_step(e, s):
        if (e, s) == (epoch, step):
            raise KeyboardInterrupt
    return on_step


def test_defaults_are_the_seed_model():
    config = TrainConfig()
    assert (config.input_shape, config.arch, config.hidden_dims, config.latent_dim) == ((1, 28, 28), "dense", (400,), 20)
    assert (config.batch_size, config.lr, config.epochs, config.likelihood) == (128, 1e-3, 10, "bernoulli")
    assert (config.beta, config.warmup_epochs, config.binarize) == (1.0, 0.0, False)
    assert (config.backend, config.dtype) == ("numpy", "float32")


def test_two_epochs_write_a_complete_run_directory(tiny_config, tmp_path):
    result, lines = run(tiny_config(), tmp_path / "run")
    run_dir = tmp_path / "run"
    assert sorted(os.listdir(run_dir)) == [".lock", "checkpoint.npz", "config.json", "metrics.csv"]
    assert json.loads((run_dir / "config.json").read_text()) == {
        "epochs": 2, "batch_size": 16, "lr": 0.001, "input_shape": [1, 28, 28], "arch": "dense", "hidden_dims": [32],
        "latent_dim": 2,
        "likelihood": "bernoulli", "num_classes": 0, "beta": 1.0, "warmup_epochs": 0.0, "binarize": False,
        "seed": 0,
        "backend": "numpy", "dtype": "float32", "data_dir": tiny_config().data_dir,
        "objective": "elbo", "samples": 1, "prior": "normal", "pseudo_inputs": 500,
        "init_output_bias": "default", "sigma": "fixed"}
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert ",".join(rows[0]) == COLUMNS and [r[0] for r in rows[1:]] == ["1", "2"]
    metrics = read_metrics(run_dir)
    for row in metrics:
        # per image: the loss is the sum of its two parts; a 784-pixel image costs hundreds of nats
        assert row["train_loss"] == pytest.approx(row["train_recon"] + row["train_kl"], abs=2e-4)
        assert row["test_loss"] == pytest.approx(row["test_recon"] + row["test_kl"], abs=2e-4)
        assert 100 < row["train_loss"] < 600 and row["train_kl"] > 0 and row["seconds"] >= 0
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]          # it learns
    saved = checkpoint.load(run_dir / checkpoint.FILENAME)
    assert (saved.epoch, saved.step_in_epoch, saved.adam["t"]) == (2, 0, 8)
    assert np.array_equal(saved.params, result.model.flat_params)
    # one line per epoch, labelled, the numbers matching metrics.csv
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    assert len(epoch_lines) == 2
    assert f"train loss {metrics[1]['train_loss']:8.2f} = recon {metrics[1]['train_recon']:8.2f} + KL" in epoch_lines[1]
    assert f"test loss {metrics[1]['test_loss']:8.2f} = recon {metrics[1]['test_recon']:8.2f}" in epoch_lines[1]


def test_kl_label_is_the_kl(tiny_config, tmp_path):
    """The seed printed the reconstruction error as "KL"; here KL is the small term, as it must be."""
    run(tiny_config(), tmp_path / "run")
    for row in read_metrics(tmp_path / "run"):
        assert row["train_kl"] < row["train_recon"] / 10


def test_same_seed_same_run_other_seed_other_run(tiny_config, tmp_path):
    run(tiny_config(), tmp_path / "a")
    run(tiny_config(), tmp_path / "b")
    run(tiny_config(seed=1), tmp_path / "c")
    assert_same_state(state(tmp_path / "a"), state(tmp_path / "b"))
    assert not np.array_equal(state(tmp_path / "a")["params"], state(tmp_path / "c")["params"])


SETTINGS = {
    "plain": {},
    "binarized, warm-up, gaussian": {"binarize": True, "warmup_epochs": 1.5, "likelihood": "gaussian"},
    "conditional, continuous Bernoulli": {"num_classes": 10, "likelihood": "continuous-bernoulli"},
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_resume_at_an_epoch_boundary_is_bit_identical(tiny_config, tmp_path, settings):
    run(tiny_config(epochs=3, **settings), tmp_path / "straight")
    run(tiny_config(epochs=1, **settings), tmp_path / "resumed")
    _, lines = run(tiny_config(epochs=3, **settings), tmp_path / "resumed", resume=True)
    assert "resuming" in lines[0] and "after epoch 1" in lines[0]
    assert_same_state(state(tmp_path / "straight"), state(tmp_path / "resumed"))
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("epoch, step", [(1, 1), (2, 3), (2, 4)])
def test_ctrl_c_mid_epoch_then_resume_is_bit_identical(tiny_config, tmp_path, settings, epoch, step):
    """Interrupted after `step` of 4 steps of `epoch` ((2, 4): after the last step, before the epoch's end)."""
    run(tiny_config(**settings), tmp_path / "straight")
    with pytest.raises(Interrupted, match=f"interrupted at step {step} of 4 in epoch {epoch}; saved"):
        run(tiny_config(**settings), tmp_path / "stopped", on_step=interrupt_at(epoch, step))
    saved = checkpoint.load(tmp_path / "stopped" / checkpoint.FILENAME)
    assert (saved.epoch, saved.step_in_epoch, saved.adam["t"]) == (epoch - 1, step, 4 * (epoch - 1) + step)
    assert saved.running[2] == min(16 * step, 60) and saved.running[0] != 0   # (negative for a density)
    assert len(read_metrics(tmp_path / "stopped")) == epoch - 1
    _, lines = run(tiny_config(**settings), tmp_path / "stopped", resume=True)
    assert f"at step {step} of epoch {epoch}" in lines[0]
    assert_same_state(state(tmp_path / "straight"), state(tmp_path / "stopped"))
    # nothing lost: the interrupted epoch's train loss covers all its steps, exactly
    assert losses(tmp_path / "straight") == losses(tmp_path / "stopped")


def test_resume_must_restore_adam_or_it_is_not_the_same_run(tiny_config, tmp_path, monkeypatch):
    """The resume test can fail: resuming without Adam's moments gives different parameters."""
    run(tiny_config(), tmp_path / "straight")
    run(tiny_config(epochs=1), tmp_path / "resumed")
    monkeypatch.setattr(Adam, "load_state_dict", lambda self, state: None)
    run(tiny_config(), tmp_path / "resumed", resume=True)
    assert not np.array_equal(state(tmp_path / "straight")["params"], state(tmp_path / "resumed")["params"])


def test_a_step_cut_in_half_is_not_saved(tiny_config, tmp_path, monkeypatch):
    """A second Ctrl-C can land inside a step (here: inside Adam): that state is half-updated, never saved."""
    run_dir = tmp_path / "run"
    real_step, calls = Adam.step, []

    def step(self):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        real_step(self)
    monkeypatch.setattr(Adam, "step", step)
    with pytest.raises(Interrupted, match="middle of a step of epoch 2; nothing saved.*epoch 1"):
        run(tiny_config(), run_dir)
    assert checkpoint.load(run_dir / checkpoint.FILENAME).epoch == 1


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real_step, calls = Adam.step, []

    def poisoning_step(self):                  # from the 3rd step of epoch 2 on, a weight is NaN
        real_step(self)
        calls.append(1)
        if len(calls) == 7:
            self.model.flat_params[0] = np.nan
    monkeypatch.setattr(Adam, "step", poisoning_step)
    with pytest.raises(Diverged, match="NaN or Inf in epoch 2 .*last good checkpoint \\(epoch 1\\) is kept"):
        run(tiny_config(epochs=3), run_dir)
    saved = checkpoint.load(run_dir / checkpoint.FILENAME)
    assert saved.epoch == 1 and np.isfinite(saved.params).all()
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]
    monkeypatch.setattr(Adam, "step", real_step)
    run(tiny_config(epochs=3), run_dir, resume=True)           # and the run goes on from there
    assert checkpoint.load(run_dir / checkpoint.FILENAME).epoch == 3


@pytest.mark.parametrize("binarize", [False, True])
def test_every_epoch_crosses_to_the_device_a_fixed_number_of_times(tiny_config, tmp_path, binarize):
    """Losses are summed and noise is drawn on the device: transfers per epoch don't grow with the steps."""
    counters = fakegpu.namespace.counters
    reads, uploads = {}, {}
    for batch_size in (30, 4):                                 # 2 and 15 steps per epoch
        counters.clear()
        run(tiny_config(epochs=1, batch_size=batch_size, backend="fakegpu", binarize=binarize),
            tmp_path / f"b{batch_size}")
        reads[batch_size] = counters["sync"] + counters["to_host"]
        uploads[batch_size] = counters["to_device"]
    assert reads[4] == reads[30] <= 12
    assert uploads[4] == uploads[30]


def test_fake_gpu_trains_like_numpy(tiny_config, tmp_path):
    numpy_run, _ = run(tiny_config(), tmp_path / "numpy")
    device_run, _ = run(tiny_config(backend="fakegpu"), tmp_path / "device")
    host_params = device_run.model.backend.to_host(device_run.model.flat_params)
    np.testing.assert_allclose(host_params, numpy_run.model.flat_params, rtol=1e-5, atol=1e-6)


def test_kl_warm_up_ramps_beta_over_steps():
    config = TrainConfig(beta=2.0, warmup_epochs=2)
    assert kl_weight(config, 1, 0, 10) == 0.0
    assert kl_weight(config, 1, 5, 10) == pytest.approx(0.5)
    assert kl_weight(config, 2, 5, 10) == pytest.approx(1.5)
    assert kl_weight(config, 3, 0, 10) == kl_weight(config, 9, 3, 10) == 2.0
    assert kl_weight(TrainConfig(beta=0.5), 1, 0, 10) == 0.5


def test_binarize_trains_on_zeros_and_ones(tiny_config, tmp_path, monkeypatch):
    seen = []
    real = train.VAE.loss_and_grads

    def spy(self, x, **kwargs):
        seen.append(self.backend.to_host(x).copy())
        return real(self, x, **kwargs)
    monkeypatch.setattr(train.VAE, "loss_and_grads", spy)
    run(tiny_config(epochs=1, binarize=True), tmp_path / "run")
    pixels = np.concatenate(seen)
    assert set(np.unique(pixels)) == {0.0, 1.0} and pixels.dtype == np.float32
    # x ~ Bernoulli(pixel): the share of ones is the mean pixel value (47,040 coin flips: +-0.002)
    images, _ = datasets.load_fashion_mnist("train", tiny_config().data_dir, download=False)
    assert pixels.mean() == pytest.approx(images.mean() / 255, abs=0.01)


# -- refusing what cannot work ------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"epochs": -1}, "epochs must be 0 or more"),
    ({"lr": 0.0}, "lr must be a positive number"),
    ({"lr": float("nan")}, "lr must be a positive number"),
    ({"likelihood": "poisson"}, "likelihood must be one of bernoulli, gaussian"),
    ({"backend": "tpu"}, "backend must be one of"),
    ({"dtype": "float16"}, "dtype must be one of"),
    ({"hidden_dim": 2.5}, "hidden_dim must be a positive integer"),
])
def test_bad_settings_are_refused(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        train.train(TrainConfig(**changes), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_new_run_never_overwrites_an_old_one(tiny_config, tmp_path):
    run(tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(RunError, match="already holds a run; continue it with --resume"):
        run(tiny_config(epochs=1), tmp_path / "run")


def test_resume_refuses_other_settings_and_allows_more_epochs(tiny_config, tmp_path):
    run(tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"cannot resume with different settings.*hidden_dims is \(64,\), but the "
                                          r"run was made with hidden_dims \(32,\)"):
        run(tiny_config(hidden_dim=64), tmp_path / "run", resume=True)
    with pytest.raises(ConfigError, match="lr is 0.01"):
        run(tiny_config(lr=0.01), tmp_path / "run", resume=True)
    with pytest.raises(NothingToDo, match="already trained 1 epochs"):
        run(tiny_config(epochs=1), tmp_path / "run", resume=True)
    run(tiny_config(epochs=2), tmp_path / "run", resume=True)
    assert [row["epoch"] for row in read_metrics(tmp_path / "run")] == [1, 2]


def test_resume_needs_a_run(tiny_config, tmp_path):
    with pytest.raises(RunError, match="no run directory"):
        run(tiny_config(), tmp_path / "nowhere", resume=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="has no checkpoint.npz"):
        run(tiny_config(), tmp_path / "empty", resume=True)


def test_a_checkpoint_from_another_run_is_refused(tiny_config, tmp_path):
    run(tiny_config(epochs=1), tmp_path / "a")
    run(tiny_config(epochs=1, hidden_dim=16), tmp_path / "b")
    shutil.copy(tmp_path / "b" / "checkpoint.npz", tmp_path / "a" / "checkpoint.npz")
    with pytest.raises(CheckpointError, match="does not belong to this run.*hidden_dim"):
        run(tiny_config(), tmp_path / "a", resume=True)
    with pytest.raises(CheckpointError, match="does not belong to this run"):
        rundir.load_run(tmp_path / "a")


def test_a_checkpoint_whose_params_do_not_fit_the_model_is_refused(tiny_config, tmp_path):
    result, _ = run(tiny_config(epochs=1), tmp_path / "a")
    saved = checkpoint.load(tmp_path / "a" / checkpoint.FILENAME)
    with pytest.raises(CheckpointError, match="belongs to a different model"):
        checkpoint.restore(saved._replace(params=saved.params[:-1]), result.model)
    with pytest.raises(CheckpointError, match="float64 parameters but the model is float32"):
        checkpoint.restore(saved._replace(params=saved.params.astype(np.float64)), result.model)


def corrupt_truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_garbage(path):
    path.write_bytes(b"not a checkpoint at all" * 100)


def corrupt_flipped_byte(path):
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:          # a byte inside the stored parameters
        info = archive.getinfo("params.npy")
    data[info.header_offset + 200] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_missing_key(path):
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "adam_v"}
    np.savez(path, **arrays)


def corrupt_pickled(path):
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["config"] = np.array([{"evil": True}], dtype=object)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def corrupt_nan(path):
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["params"][3] = np.nan
    with open(path, "wb") as file:
        np.savez(file, **arrays)


@pytest.mark.parametrize("corrupt, message", [
    (corrupt_truncated, "is corrupt or not a numpyvae checkpoint"),
    (corrupt_garbage, "is corrupt or not a numpyvae checkpoint"),
    (corrupt_flipped_byte, "is corrupt or not a numpyvae checkpoint"),
    (corrupt_missing_key, "not a numpyvae checkpoint \\(missing adam_v\\)"),
    (corrupt_pickled, "is corrupt or not a numpyvae checkpoint"),
    (corrupt_nan, "NaN or Inf parameters"),
])
def test_a_corrupt_checkpoint_is_refused_in_one_line(tiny_config, tmp_path, corrupt, message):
    run(tiny_config(epochs=1), tmp_path / "run")
    corrupt(tmp_path / "run" / checkpoint.FILENAME)
    with pytest.raises(CheckpointError, match=message) as error:
        run(tiny_config(), tmp_path / "run", resume=True)
    assert "\n" not in str(error.value)


def test_a_failed_save_leaves_the_old_checkpoint_whole(tiny_config, tmp_path, monkeypatch):
    result, _ = run(tiny_config(epochs=1), tmp_path / "run")
    path = tmp_path / "run" / checkpoint.FILENAME
    before = path.read_bytes()

    def savez_then_crash(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint.np, "savez", savez_then_crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, json.loads((tmp_path / "run" / "config.json").read_text()),
                        result.model, Adam(result.model), epoch=5)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path / "run")) == [".lock", "checkpoint.npz", "config.json", "metrics.csv"]


def test_data_that_cannot_be_found_is_reported(tiny_config, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(train.datasets.DataError, match="Fashion-MNIST train.*not in .*empty.*numpyvae download"):
        run(tiny_config(data_dir=str(tmp_path / "empty")), tmp_path / "run")


def test_progress_bar_shows_the_running_loss(tiny_config, tmp_path, capsys):
    train.train(tiny_config(epochs=1, batch_size=1), tmp_path / "run", log=print, progress=True)
    out, err = capsys.readouterr()
    assert "epoch 1/1" in err and "loss=" in err          # the bar, on stderr, read every 50 steps
    assert "loss=" not in out and out.count("\nepoch") + out.startswith("epoch") == 1


@pytest.mark.slow
def test_one_epoch_on_the_real_data_learns_as_pytorch_does(real_fashion_mnist_dir, tmp_path):
    """The real 60,000 images, the default model: PyTorch reaches 262.6 test nats per image after one epoch."""
    result, _ = run(TrainConfig(epochs=1, data_dir=str(real_fashion_mnist_dir)), tmp_path / "run")
    assert result.metrics[0]["test_loss"] < 265


def test_a_second_process_cannot_train_in_the_same_run_directory(tiny_config, tmp_path):
    """While one run holds the directory, another train (new or --resume) is refused with one line."""
    import subprocess
    import sys
    run_dir = tmp_path / "run"
    run(tiny_config(epochs=1), run_dir)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(30)"), str(run_dir / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match="another numpyvae process is training in"):
            run(tiny_config(epochs=2), run_dir, resume=True)
    finally:
        holder.kill()
        holder.wait()
    run(tiny_config(epochs=2), run_dir, resume=True)           # the lock died with its holder


def test_a_new_run_that_fails_before_starting_leaves_no_directory(tiny_config, tmp_path):
    from numpyvae.datasets import DataError
    target = tmp_path / "runs" / "new"
    with pytest.raises(DataError):                 # fails after the directory and its lock were made
        run(tiny_config(data_dir=str(tmp_path / "missing")), target)
    assert not (tmp_path / "runs").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(DataError):
        run(tiny_config(data_dir=str(tmp_path / "missing")), existing)
    assert list(existing.iterdir()) == []       # a directory it did not create is left as it was: empty


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_last_test_pass_completes_the_run_and_still_counts(tiny_config, tmp_path, monkeypatch,
                                                                                signum):
    """The run has no epochs left: it is finished and saved, but the signal is not swallowed (exit 130/143)."""
    import signal
    from numpyvae import evaluate
    real = evaluate.negative_elbo

    def interrupted_test_pass(*args, **kwargs):
        os.kill(os.getpid(), getattr(signal, signum))   # arrives while the test set is being scored
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluate, "negative_elbo", interrupted_test_pass)
    with pytest.raises(Interrupted, match="after the last epoch .1.; the run is complete") as stopped:
        run(tiny_config(epochs=1), tmp_path / "run")
    assert stopped.value.signum == getattr(signal, signum)
    assert checkpoint.load(tmp_path / "run" / checkpoint.FILENAME).epoch == 1
    assert [row["epoch"] for row in read_metrics(tmp_path / "run")] == [1]


@pytest.mark.parametrize("change, message", [
    ({"lr": "0.001"}, "lr must be a number"),
    ({"beta": None}, "beta must be a number"),
    ({"likelihood": []}, "likelihood must be one of"),
    ({"data_dir": 5}, "data_dir must be a directory name or null"),
])
def test_config_json_with_wrong_types_is_refused_in_one_line(tiny_config, tmp_path, change, message):
    run(tiny_config(epochs=1), tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    values = json.loads(path.read_text())
    values.update(change)
    path.write_text(json.dumps(values))
    with pytest.raises(RunError, match=message):
        rundir.read_config(tmp_path / "run")


def test_config_json_missing_a_setting_names_it(tiny_config, tmp_path):
    run(tiny_config(epochs=1), tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    values = json.loads(path.read_text())
    del values["hidden_dims"]
    path.write_text(json.dumps(values))
    with pytest.raises(RunError, match="lacks setting.*hidden_dims"):
        rundir.read_config(tmp_path / "run")


@pytest.mark.parametrize("key, bad", [("epoch", np.array("2")), ("adam_lr", np.array("fast")),
                                      ("adam_m", None), ("epoch", np.int64(-1))])
def test_checkpoint_with_wrong_types_is_refused(tiny_config, tmp_path, key, bad):
    run(tiny_config(epochs=1), tmp_path / "run")
    path = tmp_path / "run" / checkpoint.FILENAME
    arrays = state(tmp_path / "run")
    arrays[key] = arrays[key].astype(str) if bad is None else bad
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(path)


def test_a_state_that_could_not_be_resumed_is_never_saved(tiny_config, tmp_path, monkeypatch):
    """Adam's v can overflow float32 while the parameters stay finite: keep the last good checkpoint."""
    run_dir = tmp_path / "run"
    run(tiny_config(epochs=1), run_dir)
    before = state(run_dir)
    real_step = Adam.step

    def overflowing_step(self):
        real_step(self)
        self.v[0] = np.inf
    monkeypatch.setattr(Adam, "step", overflowing_step)
    with pytest.raises(Diverged, match="NaN or Inf"):
        run(tiny_config(epochs=2), run_dir, resume=True)
    assert_same_state(state(run_dir), before)
    monkeypatch.setattr(Adam, "step", real_step)
    run(tiny_config(epochs=2), run_dir, resume=True)            # and it goes on from the good one


def test_a_failed_new_run_removes_only_what_it_made(tiny_config, tmp_path, monkeypatch):
    """Run B creates exp/ for exp/big; run A finishes in exp/small; B then fails: A's run must survive."""
    real_load, calls = datasets.load_fashion_mnist, []

    def sibling_finishes_then_b_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:                        # B, before its first checkpoint
            monkeypatch.setattr(datasets, "load_fashion_mnist", real_load)
            run(tiny_config(epochs=1), tmp_path / "exp" / "small")     # A, to the end
            raise KeyboardInterrupt
        return real_load(*args, **kwargs)
    monkeypatch.setattr(datasets, "load_fashion_mnist", sibling_finishes_then_b_fails)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(epochs=1), tmp_path / "exp" / "big")
    assert not (tmp_path / "exp" / "big").exists()                  # B leaves no trace of its own
    assert checkpoint.load(tmp_path / "exp" / "small" / checkpoint.FILENAME).epoch == 1
    assert sorted(os.listdir(tmp_path / "exp")) == ["small"]


def test_a_failed_new_run_keeps_files_others_put_in_its_directory(tiny_config, tmp_path, monkeypatch):
    """Another program writes into the new run directory meanwhile: the directory and that file stay."""
    target = tmp_path / "runs" / "new"

    def someone_writes_then_fail(*args, **kwargs):
        (target / "notes.txt").write_text("keep me")
        raise KeyboardInterrupt
    monkeypatch.setattr(datasets, "load_fashion_mnist", someone_writes_then_fail)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(epochs=1), target)
    assert sorted(os.listdir(target)) == ["notes.txt"]


def test_metrics_csv_that_is_not_utf8_is_refused_in_one_line(tiny_config, tmp_path):
    run(tiny_config(epochs=1), tmp_path / "run")
    path = tmp_path / "run" / "metrics.csv"
    path.write_bytes(path.read_bytes().replace(b"epoch,", b"epoch\xff,", 1))
    with pytest.raises(RunError, match="metrics.csv is not UTF-8 text"):
        read_metrics(tmp_path / "run")
    with pytest.raises(RunError, match="not UTF-8"):
        run(tiny_config(epochs=2), tmp_path / "run", resume=True)


@pytest.mark.parametrize("changes, message", [
    ({"seed": 2 ** 63}, "seed must be at most 2\\*\\*63-1"),
    ({"hidden_dim": 99999999999}, "784-99999999999-20 VAE would have 162,999,999,999,194 parameters"),
    ({"latent_dim": 10 ** 9}, "parameters; numpyvae trains at most.*choose smaller hidden_dims or latent_dim"),
    ({"prior": "vamp", "pseudo_inputs": 10 ** 6}, "the prior holds 784,000,000 of them: choose a smaller pseudo_inputs"),
])
def test_settings_too_large_to_work_are_refused(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()
    assert TrainConfig(seed=2 ** 63 - 1).validate().seed == 2 ** 63 - 1


class Unhandled(Exception):
    """What a SIGTERM raises in these tests unless training handles it (instead of killing pytest)."""


@pytest.fixture
def sigterm_raises():
    import signal

    def unhandled(signum, frame):
        raise Unhandled("SIGTERM reached the handler outside training")
    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_mid_epoch_saves_and_resumes_exactly(tiny_config, tmp_path, sigterm_raises):
    import signal
    run(tiny_config(), tmp_path / "straight")

    def terminate(epoch, step):
        if (epoch, step) == (2, 1):
            os.kill(os.getpid(), signal.SIGTERM)    # arrives at once, as a scheduler's would
    with pytest.raises(Interrupted, match="terminated \\(SIGTERM\\) at step 1 of 4 in epoch 2; saved") as stop:
        run(tiny_config(), tmp_path / "stopped", on_step=terminate)
    assert stop.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM).__name__ == "unhandled"      # the handler before training is back
    run(tiny_config(), tmp_path / "stopped", resume=True)
    assert_same_state(state(tmp_path / "straight"), state(tmp_path / "stopped"))


def test_temp_files_of_a_killed_save_are_removed_at_the_next_start(tiny_config, tmp_path):
    """kill -9 during a save leaves .checkpoint.npz.RANDOM.tmp: the next start, holding the lock, removes it."""
    run_dir = tmp_path / "run"
    run(tiny_config(epochs=1), run_dir)
    stale = [".checkpoint.npz.0123456789ab.tmp", ".config.json.abcdefabcdef.tmp", ".metrics.csv.00ff00ff00ff.tmp"]
    others = [".notes.txt.0123456789ab.tmp", ".checkpoint.npz.tmp", "checkpoint.npz.0123456789ab.tmp"]
    for name in stale + others:
        (run_dir / name).write_bytes(b"PK\x03\x04 half a zip file")
    run(tiny_config(epochs=2), run_dir, resume=True)
    assert sorted(os.listdir(run_dir)) == sorted(others + [".lock", "checkpoint.npz", "config.json", "metrics.csv"])
    from numpyvae.atomicfile import atomic_write, temp_name_pattern
    with atomic_write(run_dir / "checkpoint.npz") as file:      # the pattern is the one atomic_write uses
        (temp,) = set(os.listdir(run_dir)) - set(others) - {".lock", "checkpoint.npz", "config.json", "metrics.csv"}
        file.write((run_dir / "checkpoint.npz").read_bytes())
    assert temp_name_pattern("checkpoint.npz").fullmatch(temp)


def test_an_empty_run_directory_name_is_refused(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError, match="must name a directory"):
        train.train(tiny_config(epochs=1), "", log=lambda line: None, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["small-fashion-mnist"]       # nothing written here


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tiny_config, tmp_path, capsys, monkeypatch):
    """Batch jobs and log files get a line every PLAIN_PROGRESS_SECONDS on stderr (here: every step)."""
    monkeypatch.setattr(train, "PLAIN_PROGRESS_SECONDS", 0)
    train.train(tiny_config(epochs=1), tmp_path / "run", log=print)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 4 and lines[0].startswith("epoch 1/1: step 1/4, loss ")
    assert lines[3].startswith("epoch 1/1: step 4/4, loss ") and "\r" not in err
    assert "step 1/4" not in out


def test_a_checkpoint_whose_steps_disagree_with_the_data_is_refused(tiny_config, tmp_path):
    """4 steps per epoch: after epoch 1 Adam has taken exactly 4 steps, not 5."""
    run(tiny_config(epochs=1), tmp_path / "run")
    path = tmp_path / "run" / checkpoint.FILENAME
    arrays = state(tmp_path / "run")
    arrays["adam_t"] = arrays["step"] = np.int64(5)
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    with pytest.raises(CheckpointError, match="Adam has taken 5 steps.*4 per epoch"):
        run(tiny_config(), tmp_path / "run", resume=True)


def test_a_run_written_before_num_classes_existed_still_resumes(tiny_config, tmp_path):
    """config.json (and the checkpoint's copy of it) from before the conditional VAE have no num_classes."""
    run_dir = tmp_path / "run"
    run(tiny_config(epochs=1), run_dir)
    path = run_dir / "config.json"
    values = json.loads(path.read_text())
    del values["num_classes"]
    path.write_text(json.dumps(values))
    with np.load(run_dir / checkpoint.FILENAME, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    old = json.loads(str(arrays["config"]))
    del old["num_classes"]
    arrays["config"] = np.array(json.dumps(old, sort_keys=True))
    np.savez(run_dir / checkpoint.FILENAME, **arrays)
    assert rundir.read_config(run_dir).num_classes == 0
    result, _ = run(tiny_config(epochs=2), run_dir, resume=True)
    assert [row["epoch"] for row in result.metrics] == [1, 2] and not result.model.conditional


def as_written_before_arch(values):
    """A config as numpyvae wrote it before the network became a description: input_dim, one hidden_dim."""
    values = dict(values)
    del values["arch"], values["input_shape"]
    values["input_dim"], values["hidden_dim"] = 784, values.pop("hidden_dims")[0]
    return values


def test_a_run_made_before_arch_existed_loads_and_resumes_as_a_dense_run(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    first, _ = run(tiny_config(epochs=1), run_dir)
    path = run_dir / "config.json"
    path.write_text(json.dumps(as_written_before_arch(json.loads(path.read_text()))))
    with np.load(run_dir / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["config"] = np.array(json.dumps(as_written_before_arch(json.loads(str(arrays["config"]))), sort_keys=True))
    np.savez(run_dir / "checkpoint.npz", **arrays)

    config, model, _ = rundir.load_run(run_dir)
    assert (config.input_shape, config.arch, config.hidden_dims) == ((1, 28, 28), "dense", (32,))
    np.testing.assert_array_equal(model.flat_params, first.model.flat_params)
    resumed, lines = run(tiny_config(epochs=2), run_dir, resume=True)
    assert any("resuming" in line and "784-32-2 VAE" in line for line in lines)
    # and it resumes exactly: the same two epochs as a run never interrupted
    straight, _ = run(tiny_config(epochs=2), tmp_path / "straight")
    np.testing.assert_array_equal(resumed.model.flat_params, straight.model.flat_params)

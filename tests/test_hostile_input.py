"""Issue 27, item 7: hostile input. Checkpoints and run folders edited to finite but impossible values,
numbers too large for any float or int64, work too big for memory, and what a disk or a kill leaves."""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpyvae import checkpoint, memory, rundir
from numpyvae.optim import Adam
from numpyvae.rundir import ConfigError, RunError, TrainConfig, read_metrics, write_config, write_metrics
from numpyvae.vae import VAE

from test_cli import TINY, assert_one_line_error, environment, run_main
from test_nothing_lost import edit_checkpoint, snapshot, train_tiny


def edit_config(path, old, new):
    """Replace `old` with `new` in the JSON config a checkpoint embeds (any length)."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["config"] = np.array(str(arrays["config"]).replace(old, new))
    assert str(arrays["config"]).count(new) == 1
    np.savez(path, **arrays)


def interrupted(capsys, small_data, run_dir, monkeypatch, *extra, at_step=6, epochs=3):
    """A run stopped by Ctrl-C after step `at_step` (4 steps per epoch), saved mid-epoch."""
    real_step, steps = Adam.step, []

    def step(self):
        real_step(self)
        steps.append(1)
        if len(steps) == at_step:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(Adam, "step", step)
    status, _, err = run_main(capsys, "train", "--epochs", epochs, *TINY, "--data-dir", small_data.data_dir,
                              "--run-dir", run_dir, "--no-figures", *extra)
    monkeypatch.setattr(Adam, "step", real_step)
    assert status == 130, err
    return run_dir


def resume_refused(capsys, run_dir, *fragments):
    before = snapshot(run_dir)
    status, out, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--no-figures")
    assert status == 1, out + err
    assert_one_line_error(err, "numpyvae train: error:", *fragments)
    assert snapshot(run_dir) == before


# -- silently wrong: a checkpoint edited to finite but impossible values ---------------------------

@pytest.mark.parametrize("changes, message", [
    # epoch 2 so far: 32 images at ~540 nats each; 33,595 per image is no epoch of this run
    ({"running": [33595.0 * 32, 1.0, 32.0]}, "loss so far is 33595.03 per image, epoch 1's was"),
    ({"epoch_seconds": 1e12}, "took 1e+12 seconds, more than 100 days"),
])
def test_an_edited_unfinished_epoch_is_refused(small_data, capsys, tmp_path, monkeypatch, changes, message):
    run_dir = interrupted(capsys, small_data, tmp_path / "run", monkeypatch)
    edit_checkpoint(run_dir / checkpoint.FILENAME, **changes)
    resume_refused(capsys, run_dir, message)


def test_an_unedited_iwae_run_resumes_mid_epoch(small_data, capsys, tmp_path, monkeypatch):
    """The checks below refuse edits, not the checkpoints training writes."""
    run_dir = interrupted(capsys, small_data, tmp_path / "run", monkeypatch, "--objective", "iwae", "--samples", "2")
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--no-figures")
    assert status == 0, err
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3]


def test_an_iwae_bound_above_its_elbo_is_refused(small_data, capsys, tmp_path, monkeypatch):
    run_dir = interrupted(capsys, small_data, tmp_path / "run", monkeypatch, "--objective", "iwae", "--samples", "2")
    with np.load(run_dir / checkpoint.FILENAME) as data:
        running = data["running"].copy()
    running[3] = running[0] + running[1] + 5000.0          # a negative bound above the negative ELBO
    edit_checkpoint(run_dir / checkpoint.FILENAME, running=running)
    resume_refused(capsys, run_dir, "exceeds its ELBO sum")


def test_an_iwae_bound_far_from_the_last_epoch_is_refused(small_data, capsys, tmp_path, monkeypatch):
    run_dir = interrupted(capsys, small_data, tmp_path / "run", monkeypatch, "--objective", "iwae", "--samples", "2")
    with np.load(run_dir / checkpoint.FILENAME) as data:
        running = data["running"].copy()
    running[3] = -16389.0 * running[2]
    edit_checkpoint(run_dir / checkpoint.FILENAME, running=running)
    resume_refused(capsys, run_dir, "IWAE loss so far is -16389.00 per image")


def test_an_epoch_counter_edited_upwards_is_refused(small_data, capsys, tmp_path):
    """Epochs counted with no learning and no row: the config's epochs raised too, so only the rows tell."""
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    big = 2 ** 62
    edit_checkpoint(run_dir / checkpoint.FILENAME, epoch=big, adam_t=2 ** 63 - 1, step=2 ** 63 - 1)
    edit_config(run_dir / checkpoint.FILENAME, '"epochs": 1', f'"epochs": {big + 5}')
    config = rundir.read_config(run_dir)
    write_config(run_dir, TrainConfig(**{**config.__dict__, "epochs": big + 5}))
    resume_refused(capsys, run_dir, f"finished {big} epochs but 1 are recorded")


def test_a_full_disk_while_saving_leaves_metrics_agreeing_with_the_checkpoint(small_data, capsys, tmp_path,
                                                                              monkeypatch):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    real_save = checkpoint.save

    def full(path, config, model, optimizer, epoch, *args, **kwargs):
        if epoch == 2:
            raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        return real_save(path, config, model, optimizer, epoch, *args, **kwargs)
    monkeypatch.setattr(checkpoint, "save", full)
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--epochs", 3, "--no-figures")
    assert status == 1 and "No space left on device" in err
    assert checkpoint.load(run_dir / checkpoint.FILENAME).epoch == 1
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]


def test_adam_refuses_a_state_no_adam_could_reach():
    model = VAE(6, 5, 3)
    for key, value, message in (("t", -1, "'t'"), ("t", 2.5, "'t'"),
                                ("v", -np.ones(model.num_params), "'v' has negative"),
                                ("m", np.full(model.num_params, np.nan), "'m' holds NaN")):
        state = Adam(model).state_dict()
        state[key] = value
        with pytest.raises(ValueError, match=message):
            Adam(model).load_state_dict(state)


# -- tracebacks: numbers too large for a float or an int64 --------------------------------------------

HUGE = 10 ** 400


@pytest.mark.parametrize("name", ["lr", "beta", "warmup_epochs"])
def test_a_float_setting_of_400_digits_is_a_value_error(name):
    with pytest.raises(ConfigError, match=f"{name} must be a finite number, not an integer of 401 digits"):
        TrainConfig(**{name: HUGE}).validate()


@pytest.mark.parametrize("call", ["Adam lr", "Adam eps", "loss_and_grads beta", "loss beta"])
def test_the_python_api_refuses_400_digits_with_a_value_error(call):
    """10**400 is an int no float holds: math.isfinite raised OverflowError, not the documented ValueError."""
    model = VAE(6, 5, 3, dtype=np.float64)
    x = np.full((2, 6), 0.5)
    attempt = {"Adam lr": lambda: Adam(model, lr=HUGE), "Adam eps": lambda: Adam(model, eps=HUGE),
               "loss_and_grads beta": lambda: model.loss_and_grads(x, beta=HUGE),
               "loss beta": lambda: model.loss(x, beta=HUGE)}[call]
    with pytest.raises(ValueError, match="must be a finite"):
        attempt()


def test_a_huge_float_setting_in_config_json_or_the_checkpoint_is_one_line_naming_the_file(small_data, capsys,
                                                                                          tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    text = (run_dir / "config.json").read_text()
    (run_dir / "config.json").write_text(text.replace('"lr": 0.001', f'"lr": {"9" * 400}'))
    for args in (["evaluate", run_dir], ["train", "--run-dir", run_dir, "--resume"], ["figures", run_dir]):
        status, _, err = run_main(capsys, *args)
        assert status == 1
        assert_one_line_error(err, "config.json: lr must be a finite number, not an integer of 400 digits")
    (run_dir / "config.json").write_text(text)
    edit_config(run_dir / checkpoint.FILENAME, '"lr": 0.001', f'"lr": {"9" * 400}')
    status, _, err = run_main(capsys, "evaluate", run_dir)
    assert status == 1
    assert_one_line_error(err, "checkpoint.npz", "lr must be a finite number")


def test_config_json_errors_name_the_file(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    text = (run_dir / "config.json").read_text()
    (run_dir / "config.json").write_text(text.replace('"batch_size": 16', '"batch_size": 0'))
    status, _, err = run_main(capsys, "evaluate", run_dir)
    assert status == 1
    assert_one_line_error(err, f"{run_dir / 'config.json'}: batch_size must be at least 1")


@pytest.mark.parametrize("flags", [["--batch-size", 2 ** 63], ["--objective", "iwae", "--samples", 2 ** 63]])
def test_an_integer_past_int64_is_refused_in_one_line(small_data, capsys, tmp_path, flags):
    status, _, err = run_main(capsys, "train", "--epochs", 1, "--hidden-dim", 32, "--latent-dim", 2, *flags,
                              "--data-dir", small_data.data_dir, "--run-dir", tmp_path / "run", "--no-figures")
    assert status == 1
    assert_one_line_error(err, "must be at most 2**63-1")
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_data_is_one_batch_of_all_of_it(small_data, capsys, tmp_path):
    out = train_tiny(capsys, small_data, tmp_path / "run", "--batch-size", 2 ** 62)
    assert "60 training images, 1 steps per epoch" in out
    assert checkpoint.load(tmp_path / "run" / checkpoint.FILENAME).adam["t"] == 1


def test_an_iwae_run_whose_metrics_lack_the_bound_is_refused_before_training(small_data, capsys, tmp_path,
                                                                             monkeypatch):
    run_dir = interrupted(capsys, small_data, tmp_path / "run", monkeypatch, "--objective", "iwae", "--samples", "2")
    rows = [{key: value for key, value in row.items() if key not in rundir.IWAE_COLUMNS}
            for row in read_metrics(run_dir)]
    write_metrics(run_dir, rows)
    steps = []
    monkeypatch.setattr(Adam, "step", lambda self: steps.append(1))
    resume_refused(capsys, run_dir, "the rows lack the IWAE columns")
    assert steps == []


# -- stuck runs and waste ------------------------------------------------------------------------------

def test_an_iwae_run_killed_during_its_first_save_can_start_again(small_data, capsys, tmp_path):
    folder = tmp_path / "killed"
    folder.mkdir()
    config = TrainConfig(epochs=1, batch_size=16, hidden_dim=32, latent_dim=2, objective="iwae", samples=2,
                         data_dir=str(small_data.data_dir))
    write_config(folder, config)
    write_metrics(folder, [], iwae=True)
    (folder / ".checkpoint.npz.0123456789ab.tmp").write_bytes(b"half")
    train_tiny(capsys, small_data, folder, "--objective", "iwae", "--samples", 2)
    assert checkpoint.load(folder / checkpoint.FILENAME).epoch == 1


def test_samples_too_many_for_memory_are_refused_before_the_first_step(small_data, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "host_free_bytes", lambda: 200 * 2 ** 20)      # a machine with 200 MB free
    run_dir = tmp_path / "run"
    status, _, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--objective", "iwae", "--samples", 2000,
                              "--data-dir", small_data.data_dir, "--run-dir", run_dir, "--no-figures")
    assert status == 1
    assert_one_line_error(err, "a training step of 16 images x 2000 samples needs about", "200 MB is free",
                          "try a smaller --samples")
    assert not run_dir.exists()


def test_a_run_out_of_memory_before_its_first_step_resumes_with_fewer_samples(small_data, capsys, tmp_path,
                                                                               monkeypatch):
    run_dir = tmp_path / "run"
    from numpyvae import train
    monkeypatch.setattr(train.Trainer, "run", lambda self, *args: (_ for _ in ()).throw(MemoryError()))
    status, _, _ = run_main(capsys, "train", "--epochs", 1, *TINY, "--objective", "iwae", "--samples", 50,
                            "--data-dir", small_data.data_dir, "--run-dir", run_dir, "--no-figures")
    assert status == 1 and checkpoint.load(run_dir / checkpoint.FILENAME).adam["t"] == 0
    monkeypatch.undo()
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--samples", 2, "--no-figures")
    assert status == 0, err
    assert rundir.read_config(run_dir).samples == 2


def test_the_gpu_floor_counts_every_decoded_row():
    model = VAE(784, 400, 20)
    # per row: the hidden layer and the logits, each with its gradient, then the logits' gradient
    # and the likelihood's cache of them (the ReLU is not counted: it may work in place)
    assert memory.decoder_numbers_per_row(model.spec, model.network) == 2 * 400 + 2 * 784 + 2 * 784


@pytest.mark.parametrize("settings", [{"hidden_dims": (64,), "latent_dim": 4},
                                      {"arch": "conv", "hidden_dims": (8, 16), "latent_dim": 2}])
@pytest.mark.parametrize("objective, batch, samples", [("iwae", 4, 50), ("elbo", 200, 1)])
def test_the_step_estimate_is_the_peak_a_real_first_step_reaches(settings, objective, batch, samples):
    import tracemalloc
    model = VAE(**settings, seed=0)
    estimate = memory.step_bytes(model, batch, samples, objective)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784), dtype=np.float32)
    shape = (samples, batch, model.latent_dim) if objective == "iwae" else (batch, model.latent_dim)
    eps = rng.standard_normal(shape).astype(np.float32)
    tracemalloc.start()
    try:
        model.loss_and_grads(x, eps=eps, objective=objective)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.8 * peak <= estimate <= 1.25 * peak


# -- messages --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds\n"
     "1,1,1,0,1,1,0,1\n3,1,1,0,1,1,0,1\n", "a row for epoch 3 where epoch 2 should be"),
    ("epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds\n"
     "1,nan,1,0,1,1,0,1\n", "train_loss of NaN or Inf in epoch 1"),
    ("epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds\n"
     "1,1,1,0,1,1,0,-4\n", "says epoch 1 took -4 seconds"),
    ("epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds\n"
     "1,1,1,0,1,1,0,1e12\n", "says epoch 1 took 1e\\+12 seconds"),
    ("epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds\n"
     "1,33595,280,20,300,280,20,1\n", "epoch 1's train loss is 33595, but its recon and KL add up to 300"),
])
def test_gaps_and_nan_rows_in_metrics_are_refused(tmp_path, text, message):
    (tmp_path / "metrics.csv").write_text(text)
    with pytest.raises(RunError, match=message):
        read_metrics(tmp_path)


def test_saved_to_shows_a_newline_in_the_folder_name_escaped(small_data, capsys, tmp_path, monkeypatch):
    real_step, steps = Adam.step, []

    def step(self):
        real_step(self)
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(Adam, "step", step)
    status, _, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir,
                              "--run-dir", tmp_path / "my\nrun", "--no-figures")
    assert status == 130
    assert_one_line_error(err, "saved to " + str(tmp_path) + "/my\\nrun/checkpoint.npz")


# -- Ctrl-C at the first and the last moment ----------------------------------------------------------

CONSOLE_SCRIPT = "import sys\nfrom numpyvae.entry import run\nsys.exit(run())\n"   # what pip writes, in essence
INTERRUPT_IMPORT = """\
import os, signal, sys
class Interrupt:      # Ctrl-C lands while cli.py is being imported
    def find_spec(self, name, path=None, target=None):
        if name == "numpyvae.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
"""
INTERRUPT_SHUTDOWN = """\
import atexit, os, signal, time
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(1)))   # Ctrl-C while Python shuts down
"""


def test_the_console_script_is_the_entry_that_handles_ctrl_c():
    import configparser
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "numpyvae = numpyvae.entry:run" in setup["options.entry_points"]["console_scripts"]


@pytest.mark.parametrize("before, message", [
    (INTERRUPT_IMPORT, "numpyvae: interrupted"),
    (INTERRUPT_SHUTDOWN, "numpyvae: SIGINT arrived after the command had finished (with exit status 0)"),
])
def test_ctrl_c_while_cli_imports_or_after_the_command_is_one_line_and_130(tmp_path, before, message):
    done = subprocess.run([sys.executable, "-c", before + CONSOLE_SCRIPT, "--version"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=environment())
    assert done.returncode == 130, done.stderr
    assert_one_line_error(done.stderr, message)


# -- generate decodes in chunks ---------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [{"hidden_dims": (32,), "latent_dim": 2},
                                      {"arch": "conv", "hidden_dims": (4, 8), "latent_dim": 2, "num_classes": 10}])
def test_generate_decodes_in_chunks_the_images_one_pass_would_make(settings, monkeypatch):
    from numpyvae import generate
    from numpyvae.network import widest_row
    model = VAE(**settings, seed=0)
    whole, labels = generate.generate(model, 25, seed=3)
    budget = 4 * widest_row(model.spec, model.network)            # 4 images per chunk
    rows = []
    real_decode = VAE.decode
    monkeypatch.setattr(VAE, "decode", lambda self, z, y=None: rows.append(len(z)) or real_decode(self, z, y))
    chunked, chunked_labels = generate.generate(model, 25, seed=3, max_elements=budget)
    assert rows == [4] * 6 + [1]
    assert np.array_equal(chunked, whole)
    assert (labels is None and chunked_labels is None) or np.array_equal(labels, chunked_labels)
    expected = model.backend.to_host(model.sample(25, rng=model.backend.rng(3), y=labels))
    assert np.array_equal(whole.reshape(25, -1), expected)    # the draws model.sample makes


@pytest.mark.parametrize("flag, value, message", [("--iw-samples", 10 ** 9, "must be at most 100,000"),
                                                  ("--samples", 10 ** 9, "must be at most 10,000")])
def test_evaluate_refuses_sample_counts_that_would_run_for_hours_silently(capsys, tmp_path, flag, value, message):
    status, _, err = run_main(capsys, "evaluate", tmp_path, flag, value)
    assert status == 2
    assert_one_line_error(err, f"argument {flag}: {message}")


def test_figures_remove_the_temporary_pngs_a_killed_drawing_left(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    figures = run_dir / "figures"
    figures.mkdir()
    old, fresh = figures / ".samples.png.0123456789ab.tmp", figures / ".loss.png.abcdefabcdef.tmp"
    mine = figures / ".notes.txt.0123456789ab.tmp"
    for path in (old, fresh, mine):
        path.write_bytes(b"\x89PNG half")
    an_hour_ago = os.path.getmtime(old) - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(mine, (an_hour_ago, an_hour_ago))
    status, _, err = run_main(capsys, "figures", run_dir)
    assert status == 0, err
    assert not old.exists()
    assert fresh.exists() and mine.exists()     # a write that may be under way, and a file not a PNG's


def test_figures_draw_only_the_epochs_the_checkpoint_holds(small_data, capsys, tmp_path, monkeypatch):
    from numpyvae import plots
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    rows = read_metrics(run_dir)
    write_metrics(run_dir, rows + [{**rows[0], "epoch": 2}])      # a row whose checkpoint was never saved
    drawn = []
    monkeypatch.setattr(plots, "make_all", lambda model, images, labels, metrics, out, *objective: drawn.append(metrics) or [])
    status, _, err = run_main(capsys, "figures", run_dir)
    assert status == 0, err
    assert [row["epoch"] for row in drawn[0]] == [1]


def test_a_read_only_run_folder_is_named_not_its_hidden_files(small_data, capsys, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    (run_dir / ".checkpoint.npz.0123456789ab.tmp").write_bytes(b"half")     # what a killed save left
    real_unlink = os.unlink

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(run_dir)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", read_only)
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--epochs", 2, "--no-figures")
    assert status == 1
    assert_one_line_error(err, f"cannot write in {run_dir}: Permission denied")
    assert ".tmp" not in err
    monkeypatch.undo()

    def no_lock(path, *args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(rundir, "open", no_lock, raising=False)
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--epochs", 2, "--no-figures")
    assert status == 1
    assert_one_line_error(err, f"cannot write in {run_dir}: Read-only file system")
    assert ".lock" not in err


def test_a_resume_refused_for_memory_changes_nothing(small_data, capsys, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir, "--objective", "iwae", "--samples", 2)
    before = snapshot(run_dir)
    monkeypatch.setattr(memory, "host_free_bytes", lambda: 1000)     # bytes
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--epochs", 2, "--no-figures")
    assert status == 1
    assert_one_line_error(err, "a training step of 16 images x 2 samples needs about")
    assert snapshot(run_dir) == before


def test_a_newline_in_a_run_folder_is_escaped_in_every_message_about_it(small_data, capsys, tmp_path):
    run_dir = tmp_path / "my\nrun"
    train_tiny(capsys, small_data, run_dir)
    for args, message in ((["train", "--run-dir", run_dir, "--no-figures"], "my\\nrun already holds a run"),
                          (["evaluate", tmp_path / "no\nrun"], "no run directory " + str(tmp_path) + "/no\\nrun")):
        status, _, err = run_main(capsys, *args)
        assert status == 1
        assert_one_line_error(err, message)
    (run_dir / checkpoint.FILENAME).unlink()
    status, _, err = run_main(capsys, "evaluate", run_dir)
    assert status == 1
    assert_one_line_error(err, "no checkpoint at " + str(tmp_path) + "/my\\nrun/checkpoint.npz")


def test_generate_removes_what_a_killed_write_of_its_file_left(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    out = tmp_path / "out"
    out.mkdir()
    left, other = out / ".new.png.0123456789ab.tmp", out / ".other.png.0123456789ab.tmp"
    for path in (left, other):
        path.write_bytes(b"half")
        os.utime(path, (1e9, 1e9))                 # 2001: long abandoned
    status, _, err = run_main(capsys, "generate", run_dir, "-n", 4, "--out", out / "new.png")
    assert status == 0, err
    assert not left.exists() and other.exists()    # only the file it writes is its business

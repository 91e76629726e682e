"""Issue 20: nothing lost, nothing silently wrong. A folder's own files, figures over other files, values
that make no sense, signals at any moment, and messages that stay one line."""
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpyvae import checkpoint, cli, generate
from numpyvae.atomicfile import atomic_write
from numpyvae.optim import Adam
from numpyvae.rundir import TrainConfig, build_model, read_metrics, write_config, write_metrics
from numpyvae.vae import VAE

from test_cli import TINY, assert_one_line_error, command, environment, run_main


def train_tiny(capsys, small_data, run_dir, *extra, epochs=1):
    status, out, err = run_main(capsys, "train", "--epochs", epochs, *TINY, "--data-dir", small_data.data_dir,
                                "--run-dir", run_dir, "--no-figures", *extra)
    assert status == 0, err
    return out


def snapshot(directory):
    """{relative path: bytes} of every file under `directory`, hidden ones included."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


# -- 1. a new run never overwrites a folder's own files -------------------------------------------

@pytest.mark.parametrize("own", [
    {"config.json": b'{"title": "my thesis"}\n'},
    {"metrics.csv": b"epoch,accuracy\n1,0.9\n"},
    {"figures/samples.png": b"\x89PNG\r\n\x1a\nmine"},
    {"notes.txt": b"keep me"},
    {".lock": b"", "data.bin": b"\x00\x01"},
])
def test_a_new_run_refuses_a_folder_with_files_of_its_own_and_touches_nothing(small_data, capsys, tmp_path,
                                                                             monkeypatch, own):
    folder = tmp_path / "mine"
    for name, data in own.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    before = snapshot(folder)
    monkeypatch.chdir(folder)
    status, out, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir,
                                "--run-dir", ".", "--no-figures")
    assert status == 1 and out == ""
    assert_one_line_error(err, "numpyvae train: error:", "a new run starts only in")
    assert snapshot(folder) == before                       # no .lock, no config.json, nothing
    assert sorted(p.name for p in folder.iterdir()) == sorted({Path(name).parts[0] for name in own})


def test_a_new_run_starts_over_a_run_that_stopped_before_its_first_checkpoint(small_data, capsys, tmp_path):
    """What a run killed outright before its first checkpoint leaves (config, empty metrics, lock,
    a temporary file) is recognized as numpyvae's own, and a new run may start there."""
    folder = tmp_path / "killed"
    folder.mkdir()
    config = TrainConfig(epochs=1, batch_size=16, hidden_dim=32, latent_dim=2, data_dir=str(small_data.data_dir))
    write_config(folder, config)
    write_metrics(folder, [])
    (folder / ".lock").touch()
    (folder / ".checkpoint.npz.0123456789ab.tmp").write_bytes(b"half")
    train_tiny(capsys, small_data, folder)
    assert checkpoint.load(folder / checkpoint.FILENAME).epoch == 1
    assert not (folder / ".checkpoint.npz.0123456789ab.tmp").exists()
    # but a config.json that is not a numpyvae config, beside the same files, is someone else's
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"epochs": 3, "my_setting": true}')
    status, _, err = run_main(capsys, "train", "--run-dir", other, "--data-dir", small_data.data_dir)
    assert status == 1
    assert_one_line_error(err, "is not a numpyvae run's")
    assert sorted(p.name for p in other.iterdir()) == ["config.json"]


# -- 2. show-data --out never writes a PNG over a file numpyvae did not draw ---------------------

def test_show_data_out_must_be_a_png_and_never_replaces_a_checkpoint(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    before = (run_dir / checkpoint.FILENAME).read_bytes()
    status, _, err = run_main(capsys, "show-data", "-n", 4, "--data-dir", small_data.data_dir,
                              "--out", run_dir / checkpoint.FILENAME)
    assert status == 2
    assert_one_line_error(err, "--out: must name a .png file")
    assert (run_dir / checkpoint.FILENAME).read_bytes() == before


def test_a_figure_replaces_only_a_png_numpyvae_drew(small_data, capsys, tmp_path):
    theirs = tmp_path / "holiday.png"
    theirs.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)            # a PNG, but not numpyvae's
    status, _, err = run_main(capsys, "show-data", "-n", 4, "--data-dir", small_data.data_dir, "--out", theirs)
    assert status == 1
    assert_one_line_error(err, "holiday.png exists and is not a figure numpyvae drew")
    assert theirs.read_bytes() == b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    ours = tmp_path / "grid.png"
    for n in (4, 8):                                                     # drawn, then redrawn over itself
        status, _, err = run_main(capsys, "show-data", "-n", n, "--data-dir", small_data.data_dir, "--out", ours)
        assert status == 0, err
        from numpyvae.pngfile import is_ours
        assert is_ours(ours)


def test_figures_and_generate_never_draw_over_a_picture_of_your_own(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    out = tmp_path / "pictures"
    out.mkdir()
    (out / "reconstructions.png").write_bytes(b"my own reconstructions")
    (out / "new.png").write_bytes(b"my own new picture")
    status, _, err = run_main(capsys, "figures", run_dir, "--out", out)
    assert status == 1
    assert_one_line_error(err, "reconstructions.png exists and is not a figure numpyvae drew")
    status, _, err = run_main(capsys, "generate", run_dir, "-n", 4, "--out", out / "new.png")
    assert status == 1
    assert_one_line_error(err, "new.png exists and is not a figure numpyvae drew")
    assert snapshot(out) == {"reconstructions.png": b"my own reconstructions", "new.png": b"my own new picture"}


# -- 3. a signal during the last epoch's test pass is not swallowed --------------------------------

def test_sigterm_during_the_last_test_pass_exits_143_without_drawing(small_data, capsys, tmp_path, monkeypatch):
    from numpyvae import evaluate
    real = evaluate.negative_elbo

    def terminated_test_pass(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluate, "negative_elbo", terminated_test_pass)
    run_dir = tmp_path / "run"
    status, out, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir,
                                "--run-dir", run_dir)
    assert status == 143
    assert_one_line_error(err, "terminated (SIGTERM) after the last epoch (1); the run is complete",
                          f"numpyvae figures {run_dir}")
    assert not (run_dir / "figures").exists()
    assert checkpoint.load(run_dir / checkpoint.FILENAME).epoch == 1


# -- 4. a checkpoint whose values make no sense, CRCs valid ----------------------------------------

def edit_checkpoint(path, **changes):
    """Rewrite the checkpoint at `path` with some members changed: a whole, well-formed file."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        arrays[key] = np.asarray(value, dtype=arrays[key].dtype)
    with atomic_write(path) as file:
        np.savez(file, **arrays)


def interrupted_run(capsys, small_data, tmp_path, monkeypatch):
    """A run stopped by Ctrl-C at step 2 of epoch 2 (4 steps per epoch), saved mid-epoch."""
    real_step, steps = Adam.step, []

    def step(self):
        real_step(self)
        steps.append(1)
        if len(steps) == 6:
            os.kill(os.getpid(), signal.SIGINT)      # the step finishes, then the state is saved
    monkeypatch.setattr(Adam, "step", step)
    run_dir = tmp_path / "run"
    status, _, err = run_main(capsys, "train", "--epochs", 3, *TINY, "--data-dir", small_data.data_dir,
                              "--run-dir", run_dir, "--no-figures")
    monkeypatch.setattr(Adam, "step", real_step)
    assert status == 130, err
    saved = checkpoint.load(run_dir / checkpoint.FILENAME)
    assert (saved.epoch, saved.step_in_epoch) == (1, 2)
    return run_dir


@pytest.mark.parametrize("changes, message", [
    ({"adam_lr": 0.002}, "Adam's lr is 0.002, but the run trains with 0.001"),
    ({"adam_eps": 1e300}, "Adam's eps is 1e+300"),
    ({"adam_beta1": 0.5}, "Adam's beta1 is 0.5"),
    ({"seed": 7}, "its seed is 7"),
    ({"step_in_epoch": 9, "adam_t": 13, "step": 13}, "step 9 of an epoch of 4 steps"),
    ({"running": [1e8, 2.0, 32.0], "step_in_epoch": 0, "adam_t": 4, "step": 4}, "at an epoch boundary"),
    ({"running": [1.0, 2.0, 1.0]}, "counts 1 images, but its 2 steps of 16 saw 32"),
    ({"running": [1.0, -5.0, 16.0]}, "KL sum is -5.0"),
    ({"epoch_seconds": -3.0}, "took -3.0 seconds"),
    ({"epoch": 3, "adam_t": 14, "step": 14}, "begun 4 epochs of a run of 3"),
])
def test_a_checkpoint_with_impossible_values_is_refused_in_one_line(small_data, capsys, tmp_path, monkeypatch,
                                                                    changes, message):
    run_dir = interrupted_run(capsys, small_data, tmp_path, monkeypatch)
    edit_checkpoint(run_dir / checkpoint.FILENAME, **changes)
    before = snapshot(run_dir)
    status, out, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--no-figures")
    assert status == 1, out
    assert_one_line_error(err, "numpyvae train: error:", message)
    assert snapshot(run_dir) == before


def test_an_epoch_boundary_checkpoint_with_sums_of_an_unfinished_epoch_is_refused(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    edit_checkpoint(run_dir / checkpoint.FILENAME, running=[5e8, 1.0, 1.0])
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--epochs", 2)
    assert status == 1
    assert_one_line_error(err, "at an epoch boundary but holds sums or seconds")
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]


# -- 5. evaluate --json prints valid JSON or fails -----------------------------------------------

def test_evaluate_of_parameters_that_overflow_fails_instead_of_printing_nan(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    with np.load(run_dir / checkpoint.FILENAME) as data:
        params = data["params"]
    edit_checkpoint(run_dir / checkpoint.FILENAME, params=np.full_like(params, 1e30))   # finite, absurd
    for json_flag in (["--json"], []):
        status, out, err = run_main(capsys, "evaluate", run_dir, "--samples", 1, "--iw-samples", 2, *json_flag)
        assert status == 1 and out == ""
        assert_one_line_error(err, "numpyvae evaluate: error:", "NaN or Inf", "cannot be evaluated")


# -- 6. config JSON that breaks the parser -----------------------------------------------------

@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"epochs": ' + "9" * 5000 + "}"],
                         ids=["nested-100000-deep", "integer-of-5000-digits"])
def test_config_json_too_deep_or_too_long_a_number_is_one_line(small_data, capsys, tmp_path, text):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    (run_dir / "config.json").write_text(text)
    for args in (["evaluate", run_dir], ["train", "--run-dir", run_dir, "--resume"]):
        status, _, err = run_main(capsys, *args)
        assert status == 1
        assert_one_line_error(err, "config.json is not valid JSON")


def test_a_checkpoint_config_nested_too_deep_is_one_line(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    edit_checkpoint(run_dir / checkpoint.FILENAME)
    with np.load(run_dir / checkpoint.FILENAME) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["config"] = np.array("[" * 100000 + "]" * 100000)
    np.savez(run_dir / checkpoint.FILENAME, **arrays)
    status, _, err = run_main(capsys, "evaluate", run_dir)
    assert status == 1
    assert_one_line_error(err, "its config is not valid JSON")


# -- 7. generate --class with digits that int() cannot read ---------------------------------------

@pytest.mark.parametrize("name", ["²", "①", "7" * 5000, "٣"],
                         ids=["superscript", "circled", "5000-digits", "arabic-indic"])
def test_class_names_that_only_look_like_digits_are_refused_in_one_line(name):
    with pytest.raises(generate.GenerateError, match="unknown class"):
        generate.parse_class(name, 10)


# -- 8. and 14. run folder names with bytes that are not UTF-8, newlines, tabs, spaces, globs ------

def test_generate_from_a_run_folder_whose_name_is_not_utf8(small_data, capsys, tmp_path):
    run_dir = tmp_path / os.fsdecode(b"run-\xff\xfe")
    train_tiny(capsys, small_data, run_dir, "--conditional")
    status, out, err = run_main(capsys, "generate", run_dir, "-n", 4, "--out", run_dir / "new.png")
    assert status == 0 and err == "", err
    from numpyvae.pngfile import is_ours
    assert is_ours(run_dir / "new.png")
    assert out.strip().endswith("new.png") and "\\xff\\xfe" in out


@pytest.mark.parametrize("name", ["my run\nwith\tbreaks", "runs [*] and ?", "it's $HOME"])
def test_interrupted_message_is_one_line_whose_hint_a_shell_runs_as_is(small_data, capsys, tmp_path, monkeypatch,
                                                                      name):
    from numpyvae import evaluate
    real = evaluate.negative_elbo

    def interrupted_test_pass(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluate, "negative_elbo", interrupted_test_pass)
    run_dir = tmp_path / name
    status, _, err = run_main(capsys, "train", "--epochs", 2, *TINY, "--data-dir", small_data.data_dir,
                              "--run-dir", run_dir, "--no-figures")
    assert status == 130
    assert_one_line_error(err, "interrupted after epoch 1", "Continue with: numpyvae train --run-dir")
    hint = err.split("Continue with: numpyvae train --run-dir ", 1)[1].rsplit(" --resume", 1)[0]
    echoed = subprocess.run(["bash", "-c", f"printf %s {hint}"], capture_output=True, text=True, check=True)
    assert echoed.stdout == str(run_dir)


# -- 9. a run whose input size does not match the data ---------------------------------------------

def test_a_run_made_for_other_images_is_refused_by_evaluate_figures_and_generate(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = TrainConfig(epochs=1, input_dim=100, hidden_dim=8, latent_dim=2, data_dir=str(small_data.data_dir))
    model = build_model(config)
    write_config(run_dir, config)
    write_metrics(run_dir, [])
    from dataclasses import asdict
    checkpoint.save(run_dir / checkpoint.FILENAME, asdict(config), model, Adam(model, lr=config.lr), 0)
    for args in (["evaluate", run_dir], ["figures", run_dir], ["generate", run_dir, "--out", tmp_path / "x.png"]):
        status, _, err = run_main(capsys, *args)
        assert status == 1, args
        assert_one_line_error(err, "the run's model takes 100 pixels per image, but the images are 28 x 28 = 784")
    assert not (tmp_path / "x.png").exists() and not (run_dir / "figures").exists()


# -- 10., 11. and 12. signals at any moment: one line, the right status, nothing left behind -------

def test_ctrl_c_while_the_command_starts_is_never_a_traceback(tmp_path):
    """SIGINT at moments spread over the first 0.4 s of `python -m numpyvae`: while NumPy imports,
    arguments parse, data loads. A Ctrl-C inside Python's own start-up, before numpyvae's first line
    runs, is Python's to report; from there on it is one line and status 130."""
    ours = str(Path(cli.__file__).parent)
    for delay in np.linspace(0.0, 0.4, 21):
        process = subprocess.Popen(command() + ["show-data", "--data-dir", tmp_path / "none", "--out",
                                                tmp_path / "x.png"], cwd=tmp_path, env=environment(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert ours not in err, (delay, err)                # no traceback through numpyvae's code
        if "Traceback" in err or "Fatal Python error" in err:
            continue                                        # in Python's own start-up (site, runpy)
        assert process.returncode in (1, 130, -signal.SIGINT), (delay, err)   # 1: it had failed (no data)
        if process.returncode != -signal.SIGINT:            # -2: before Python's handler was in place
            assert_one_line_error(err, "interrupted" if process.returncode == 130 else "error")


SWALLOWED = """\
import os, signal, sys, time, weakref
from numpyvae.signals import signals_raise
class Thing:
    pass
try:
    with signals_raise():
        thing = Thing()
        def callback(ref):              # an exception raised in here cannot propagate: Python prints it
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))
        ref = weakref.ref(thing, callback)
        del thing
        time.sleep(5)
    print("the signal was lost")
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_that_lands_where_no_exception_can_propagate_is_not_lost(tmp_path):
    """Python prints a KeyboardInterrupt raised in a weakref callback (importlib has them) and goes on:
    signals_raise sends the signal again, so the command still stops."""
    result = subprocess.run([sys.executable, "-c", SWALLOWED], cwd=tmp_path, env=environment(),
                            capture_output=True, text=True, timeout=60)
    assert (result.stdout, result.stderr) == ("interrupted\n", "")


# A bootstrap as test_cli's, with `when` deciding where the process sends itself SIGTERM.
SELF_TERMINATE = """\
import functools, json, os, signal, sys, time
from numpyvae import datasets
load = functools.partial(datasets.load_fashion_mnist, system_dir=None,
                         checksums=json.loads(os.environ["SMALL_CHECKSUMS"]))
when = sys.argv.pop(1)
def loading(*args, **kwargs):
    if when == "loading":
        os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)
    return load(*args, **kwargs)
datasets.load_fashion_mnist = loading
from matplotlib.figure import Figure
real_savefig = Figure.savefig
def savefig(self, file, *args, **kwargs):
    if when == "png":
        file.write(b"half a PNG"); file.flush(); os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)
    return real_savefig(self, file, *args, **kwargs)
Figure.savefig = savefig
from numpyvae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def self_terminating(small, when, *args, cwd):
    result = subprocess.run([sys.executable, "-c", SELF_TERMINATE, when] + [str(a) for a in args], cwd=cwd,
                            env=environment(small), capture_output=True, text=True, timeout=120)
    return result.returncode, result.stderr


def test_sigterm_while_loading_data_cleans_up_like_ctrl_c(small_data, tmp_path):
    run_dir = tmp_path / "runs" / "new"
    status, err = self_terminating(small_data, "loading", "train", *TINY, "--data-dir", small_data.data_dir,
                                   "--run-dir", run_dir, cwd=tmp_path)
    assert status == 143
    assert_one_line_error(err, "numpyvae train: terminated (SIGTERM)")
    assert not (tmp_path / "runs").exists()                   # no folder, no .lock


def test_sigterm_while_writing_a_png_leaves_no_temporary_file(small_data, tmp_path):
    status, err = self_terminating(small_data, "png", "show-data", "-n", 4, "--data-dir", small_data.data_dir,
                                   "--out", tmp_path / "grid.png", cwd=tmp_path)
    assert status == 143
    assert_one_line_error(err, "numpyvae show-data: terminated (SIGTERM)")
    assert [p.name for p in tmp_path.iterdir() if p.name != small_data.data_dir.name] == []


# -- 13. a batch too large to fit: resume may change it while no step has been taken --------------

def test_a_run_out_of_memory_before_its_first_step_resumes_with_a_smaller_batch(small_data, capsys, tmp_path,
                                                                                 monkeypatch):
    def out_of_memory(self, *args, **kwargs):
        raise MemoryError
    real = VAE.loss_and_grads
    monkeypatch.setattr(VAE, "loss_and_grads", out_of_memory)
    run_dir = tmp_path / "run"
    status, _, err = run_main(capsys, "train", "--epochs", 1, "--batch-size", 1000000000, "--hidden-dim", 32,
                              "--latent-dim", 2, "--data-dir", small_data.data_dir, "--run-dir", run_dir)
    assert status == 1
    assert_one_line_error(err, "out of memory", "may resume with a smaller --batch-size")
    monkeypatch.setattr(VAE, "loss_and_grads", real)
    status, out, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--batch-size", 16, "--no-figures")
    assert status == 0, err
    assert json.loads((run_dir / "config.json").read_text())["batch_size"] == 16
    saved = checkpoint.load(run_dir / checkpoint.FILENAME)
    assert saved.epoch == 1 and saved.adam["t"] == 4                  # 60 images in batches of 16
    # once a step is taken, the batch size defines the run again
    status, _, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume", "--epochs", 2, "--batch-size", 8)
    assert status == 1
    assert_one_line_error(err, "cannot resume with different settings", "batch_size is 8")


# -- 15. the Python API refuses what cannot be pixels or Adam settings -----------------------------

@pytest.mark.parametrize("x, beta, error, message", [
    (np.full((2, 6), 255.0), 1.0, ValueError, "pixels in \\[0, 1\\]"),
    (np.full((2, 6), 255, dtype=np.uint8), 1.0, ValueError, "divide 0-255 images by 255"),
    (np.full((2, 6), np.nan), 1.0, ValueError, "pixels in \\[0, 1\\]"),
    (np.full((2, 6), -0.5), 1.0, ValueError, "pixels in \\[0, 1\\]"),
    (np.full((2, 6), 0.5 + 0.5j), 1.0, TypeError, "real numbers"),
    (np.full((2, 6), 0.5), -1.0, ValueError, "beta must be a finite number >= 0"),
    (np.full((2, 6), 0.5), float("nan"), ValueError, "beta must be a finite number >= 0"),
])
@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli", "gaussian"])
@pytest.mark.parametrize("method", ["loss", "loss_and_grads"])
def test_vae_refuses_what_cannot_be_pixels_or_a_kl_weight(x, beta, error, message, likelihood, method):
    model = VAE(6, 5, 3, likelihood)
    with pytest.raises(error, match=message):
        getattr(model, method)(x, beta=beta)


def test_vae_checks_the_values_of_the_first_batch_and_of_every_converted_one():
    model = VAE(6, 5, 3)
    good = np.full((2, 6), 0.5, dtype=np.float32)
    model.loss_and_grads(good)                                   # first batch: scanned
    with pytest.raises(ValueError):
        model.loss_and_grads(np.full((2, 6), 255.0))             # float64 for a float32 model: converted, scanned
    with pytest.raises(ValueError):
        model.loss(np.full((2, 6), 3, dtype=np.uint8))
    assert np.isfinite(float(model.loss(good)[0]))


@pytest.mark.parametrize("settings, error", [
    ({"eps": 0.0}, ValueError), ({"eps": -1e-8}, ValueError), ({"eps": float("nan")}, ValueError),
    ({"lr": float("inf")}, ValueError), ({"betas": (0.9,)}, TypeError),
])
def test_adam_refuses_settings_that_would_write_nan_parameters(settings, error):
    with pytest.raises(error):
        Adam(VAE(6, 5, 3), **settings)


# -- small: messages that name the target, long names, parent folders, figures on a full disk -------

def test_a_failed_write_names_the_target_not_the_hidden_temporary_file(tmp_path):
    target = tmp_path / "data.bin"

    def reject(temp_path):
        raise ValueError(f"{temp_path} fails verification")
    with pytest.raises(ValueError) as refused:
        with atomic_write(target, check=reject) as file:
            file.write(b"x")
    assert str(refused.value) == f"{target} fails verification"

    class ShortWrites:                                            # NumPy's own OSError for a short write
        def write(self, data):
            raise OSError("78400 requested and 468 written")
    with pytest.raises(OSError) as failed:
        with atomic_write(target) as file:
            ShortWrites().write(b"x")
    assert str(failed.value) == f"cannot write {target} (78400 requested and 468 written)"
    assert list(tmp_path.iterdir()) == []


def test_a_valid_254_character_name_can_be_written(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    for suffix in (".npy", ".png"):
        out = tmp_path / ("n" * (254 - len(suffix)) + suffix)
        status, _, err = run_main(capsys, "generate", run_dir, "-n", 2, "--out", out)
        assert status == 0, err
        assert out.is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_generate_makes_missing_folders_for_npy_as_for_png(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(capsys, small_data, run_dir)
    for suffix in (".npy", ".png"):
        out = tmp_path / "new" / suffix[1:] / f"images{suffix}"
        status, _, err = run_main(capsys, "generate", run_dir, "-n", 2, "--out", out)
        assert status == 0, err
        assert out.is_file()


def test_a_full_disk_while_drawing_after_training_is_a_warning_not_a_failure(small_data, capsys, tmp_path,
                                                                             monkeypatch):
    from numpyvae import plots

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "cannot write figures/samples.png: No space left on device")
    monkeypatch.setattr(plots, "make_all", full_disk)
    run_dir = tmp_path / "run"
    status, out, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir,
                                "--run-dir", run_dir)
    assert status == 0 and "epoch 1/1" in out
    assert_one_line_error(err, "warning: figures not drawn", "No space left", "the run is complete",
                          f"numpyvae figures {run_dir}")
    assert checkpoint.load(run_dir / checkpoint.FILENAME).epoch == 1


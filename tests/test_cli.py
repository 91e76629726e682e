"""The `numpyvae` command: real subprocess runs for exit codes, Ctrl-C and output; in-process for the rest."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numpyvae import checkpoint, cli, rundir, train
from numpyvae.optim import Adam

TINY = ["--batch-size", "16", "--hidden-dim", "32", "--latent-dim", "2"]

# Runs the real `numpyvae` entry point, with the loader pointed at the small generated dataset
# (its checksums come in through the environment; nothing else differs from `python -m numpyvae`).
BOOTSTRAP = """\
import functools, json, os, sys
from numpyvae import datasets
datasets.load_fashion_mnist = functools.partial(datasets.load_fashion_mnist, system_dir=None,
                                                checksums=json.loads(os.environ["SMALL_CHECKSUMS"]))
from numpyvae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def command(small=None):
    return [sys.executable, "-c", BOOTSTRAP] if small else [sys.executable, "-m", "numpyvae"]


def environment(small=None):
    # the subprocess must import the numpyvae under test, not whichever one is installed (an editable
    # install may point at another checkout): put this one's directory first on its path
    here = str(Path(cli.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    if small:
        env["SMALL_CHECKSUMS"] = json.dumps(small.checksums)
    return env


def numpyvae(*args, cwd, small=None, timeout=120):
    """Run the command in a subprocess; return (exit status, stdout, stderr)."""
    result = subprocess.run(command(small) + [str(a) for a in args], cwd=cwd, env=environment(small),
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def assert_one_line_error(stderr, *fragments):
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def run_main(capsys, *args):
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


# -- real subprocesses ------------------------------------------------------------------------

def test_help_lists_every_command(tmp_path):
    status, out, err = numpyvae("--help", cwd=tmp_path)
    assert status == 0 and err == ""
    for name in ("train", "evaluate", "figures", "gradcheck", "download", "show-data"):
        assert name in out


@pytest.mark.parametrize("args, status, fragments", [
    (["train", "--batch-size", "0"], 2, ["numpyvae train: error: argument --batch-size: must be at least 1, got 0"]),
    (["train", "--bogus"], 2, ["unrecognized arguments: --bogus"]),
    (["train", "--backend", "cupy"], 1, ["numpyvae train: error: --backend cupy cannot run:", "--backend numpy"]),
    (["evaluate", "no-such-run"], 1, ["numpyvae evaluate: error: no run directory no-such-run"]),
])
def test_bad_input_exits_non_zero_with_one_line(tmp_path, args, status, fragments):
    got, out, err = numpyvae(*args, cwd=tmp_path)
    assert got == status
    assert_one_line_error(err, *fragments)
    assert not (tmp_path / "runs").exists()


def test_train_evaluate_figures_end_to_end(small_data, tmp_path):
    run_dir = tmp_path / "run"
    status, out, err = numpyvae("train", "--epochs", 2, *TINY, "--data-dir", small_data.data_dir,
                                "--run-dir", run_dir, cwd=tmp_path, small=small_data)
    assert status == 0, err
    assert err == ""                                 # no progress bar when stderr is not a terminal
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch")] == ["1/2", "2/2"]
    assert "figures: 8 PNG files" in out
    assert len(list((run_dir / "figures").glob("*.png"))) == 8

    status, out, err = numpyvae("evaluate", run_dir, "--json", "--samples", 3, "--iw-samples", 20,
                                cwd=tmp_path, small=small_data)
    assert status == 0 and err == ""
    results = json.loads(out)
    assert results["epoch"] == 2 and results["test_images"] == 20
    assert results["elbo_samples"] == 3 and results["iw_samples"] == 20
    assert results["test_loss"] == pytest.approx(results["test_recon"] + results["test_kl"], rel=1e-6)
    assert 0 < results["iwae_nll"] < results["test_loss"]

    (run_dir / checkpoint.FILENAME).write_bytes(b"\x00" * 100)
    status, _, err = numpyvae("evaluate", run_dir, cwd=tmp_path, small=small_data)
    assert status == 1
    assert_one_line_error(err, "numpyvae evaluate: error:", "is corrupt or not a numpyvae checkpoint")


def signal_training(small_data, run_dir, signum):
    """Start a long `numpyvae train`, send it `signum` once it is under way; return (exit status, stderr)."""
    args = ["train", "--epochs", "1000", "--batch-size", "4", "--hidden-dim", "32", "--latent-dim", "2",
            "--data-dir", small_data.data_dir, "--run-dir", run_dir, "--no-figures",
            "--threads", "1"]    # a fixed count: "auto" follows the load, and results with it (threads.py)
    process = subprocess.Popen(command(small_data) + [str(a) for a in args], cwd=run_dir.parent,
                               env=environment(small_data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:                      # wait until training is under way
        if line.startswith("epoch"):
            break
    time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def test_ctrl_c_saves_exits_cleanly_and_resumes_exactly(small_data, tmp_path):
    """A real SIGINT at a random moment; resuming then gives the very parameters of an unbroken run."""
    run_dir = tmp_path / "run"
    status, err = signal_training(small_data, run_dir, signal.SIGINT)
    assert status == 130, err
    assert_one_line_error(err, "numpyvae train: interrupted", "saved to", "--resume")
    saved = checkpoint.load(run_dir / checkpoint.FILENAME)
    assert saved.epoch >= 1

    # continue two epochs past the interruption, and compare with a run that never stopped
    epochs = saved.epoch + 2
    config = rundir.read_config(run_dir)
    status = cli.main(["train", "--run-dir", str(run_dir), "--resume", "--epochs", str(epochs), "--no-figures",
                       "--threads", "1"])
    assert status == 0
    reference = train.train(train.replace(config, epochs=epochs), tmp_path / "reference",
                            log=lambda line: None, progress=False, threads=1)
    resumed = checkpoint.load(run_dir / checkpoint.FILENAME)
    assert resumed.epoch == epochs
    assert np.array_equal(resumed.params, reference.model.flat_params)
    assert ([r["test_loss"] for r in rundir.read_metrics(run_dir)]
            == [r["test_loss"] for r in rundir.read_metrics(tmp_path / "reference")])


# -- in process ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["train", "--epochs", "-1"], "argument --epochs: must be at least 0, got -1"),
    (["train", "--batch-size", "-5"], "argument --batch-size: must be at least 1, got -5"),
    (["train", "--batch-size", "many"], "argument --batch-size: expected an integer, got 'many'"),
    (["train", "--lr", "0"], "argument --lr: must be more than 0, got 0"),
    (["train", "--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["train", "--likelihood", "poisson"], "argument --likelihood: invalid choice: 'poisson'"),
    (["train", "--dtype", "float16"], "argument --dtype: invalid choice"),
    (["train", "--backend", "tpu"], "argument --backend: invalid choice"),
    (["evaluate"], "the following arguments are required: RUN_DIR"),
    (["evaluate", "run", "--iw-samples", "0"], "argument --iw-samples: must be at least 1, got 0"),
    (["gradcheck", "--entries", "0"], "argument --entries: must be at least 1"),
    (["train", "--hidden-dim", "32", "--hidden-dims", "64,64"], "not allowed with argument --hidden-dim"),
    (["gradcheck", "--hidden-dims", "5", "--hidden-dim", "7"], "not allowed with argument --hidden-dims"),
    (["show-data", "--split", "validation"], "argument --split: invalid choice"),
    # a flag the command does not take is reported as the command's, pointing at the command's --help
    (["gradcheck", "--epochs=3"],
     "numpyvae gradcheck: error: unrecognized arguments: --epochs=3 (see numpyvae gradcheck --help)"),
    # train's --objective and --samples: gradcheck checks every objective, so they would choose nothing; said so,
    # not "unrecognized arguments: --objective" with "iwae" silently taken for a RUN_DIR
    (["gradcheck", "--objective", "iwae"], "argument --objective: gradcheck checks every objective"),
    (["gradcheck", "--arch", "conv", "--samples", "5"], "argument --samples: gradcheck checks every objective"),
    (["train", "--epochs", "1", "extra"], "numpyvae train: error: unrecognized arguments: extra"),
])
def test_bad_command_lines(capsys, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(capsys, *args)
    assert status == 2 and out == ""
    assert_one_line_error(err, fragment)


def test_resume_takes_the_runs_settings_and_refuses_other_ones(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    base = ["--data-dir", small_data.data_dir, "--run-dir", run_dir, "--no-figures"]
    assert run_main(capsys, "train", "--epochs", 1, *TINY, *base)[0] == 0
    status, _, err = run_main(capsys, "train", "--epochs", 2, "--hidden-dim", 64, "--run-dir", run_dir, "--resume")
    assert status == 1
    assert_one_line_error(err, "cannot resume with different settings", "hidden_dims is (64,)", "hidden_dims (32,)")
    status, out, err = run_main(capsys, "train", "--epochs", 2, "--run-dir", run_dir, "--resume", "--no-figures")
    assert status == 0 and err == "" and "epoch 2/2" in out and "784-32-2" in out
    status, out, err = run_main(capsys, "train", "--run-dir", run_dir, "--resume")
    assert status == 0 and "nothing to do" in out
    status, _, err = run_main(capsys, "train", "--epochs", 1, *TINY, *base)
    assert status == 1
    assert_one_line_error(err, "already holds a run; continue it with --resume")


def test_resume_without_a_run(capsys, tmp_path):
    status, _, err = run_main(capsys, "train", "--run-dir", tmp_path / "nothing", "--resume")
    assert status == 1
    assert_one_line_error(err, "no run directory")


def test_data_that_cannot_be_found(small_data, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    status, _, err = run_main(capsys, "train", "--data-dir", tmp_path / "empty", "--run-dir", tmp_path / "run")
    assert status == 1
    assert_one_line_error(err, "numpyvae train: error: Fashion-MNIST train", "not in", "numpyvae download")
    status, _, err = run_main(capsys, "show-data", "--data-dir", tmp_path / "empty")
    assert status == 1
    assert_one_line_error(err, "numpyvae show-data: error:")


def test_a_run_directory_that_is_not_one(capsys, tmp_path):
    for name in ("evaluate", "figures"):
        status, _, err = run_main(capsys, name, tmp_path)
        assert status == 1
        assert_one_line_error(err, f"numpyvae {name}: error:", "is not a numpyvae run directory")


def test_nan_loss_stops_with_a_message_and_status_1(small_data, capsys, tmp_path, monkeypatch):
    real_step = Adam.step

    def poisoning_step(self):
        real_step(self)
        if self.t == 6:
            self.model.flat_params[:] = np.inf
    monkeypatch.setattr(Adam, "step", poisoning_step)
    status, out, err = run_main(capsys, "train", "--epochs", 3, *TINY, "--data-dir", small_data.data_dir,
                                "--run-dir", tmp_path / "run")
    assert status == 1 and "epoch 1/3" in out
    assert_one_line_error(err, "NaN or Inf in epoch 2", "last good checkpoint (epoch 1) is kept")
    assert not (tmp_path / "run" / "figures").exists()


def test_evaluate_prints_labelled_numbers(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir, "--run-dir", run_dir,
             "--no-figures")
    status, out, err = run_main(capsys, "evaluate", run_dir, "--samples", 2, "--iw-samples", 10)
    assert status == 0 and err == ""
    assert "negative ELBO" in out and "recon" in out and "KL" in out and "(mean over 2 posterior samples" in out
    # Bernoulli over grey pixels is no density: the number is reported, but not called a bound
    assert "IWAE estimate (bernoulli is no density over grey pixels" in out and "k = 10 importance samples" in out
    assert "IWAE bound" not in out


def test_evaluate_calls_the_iwae_number_a_bound_where_the_likelihood_is_a_density(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_main(capsys, "train", "--epochs", 1, *TINY, "--binarize", "--data-dir", small_data.data_dir,
             "--run-dir", run_dir, "--no-figures")
    status, out, err = run_main(capsys, "evaluate", run_dir, "--samples", 2, "--iw-samples", 10, "--json")
    assert status == 0 and json.loads(out)["is_bound"] is True
    status, out, err = run_main(capsys, "evaluate", run_dir, "--samples", 2, "--iw-samples", 10)
    assert "IWAE bound, -log p(x) <=" in out


def test_continuous_bernoulli_trains_from_the_command_line_and_is_a_bound_on_grey_pixels(small_data, capsys,
                                                                                          tmp_path):
    run_dir = tmp_path / "run"
    status, _, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--likelihood", "continuous-bernoulli",
                              "--data-dir", small_data.data_dir, "--run-dir", run_dir, "--no-figures")
    assert status == 0, err
    status, out, err = run_main(capsys, "evaluate", run_dir, "--samples", 2, "--iw-samples", 10, "--json")
    results = json.loads(out)
    assert status == 0 and results["likelihood"] == "continuous-bernoulli" and results["is_bound"] is True


def test_figures_command_redraws_everything(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir, "--run-dir", run_dir,
             "--no-figures")
    status, out, err = run_main(capsys, "figures", run_dir, "--out", tmp_path / "pictures")
    assert status == 0 and err == ""
    assert len(out.split()) == 8 and len(list((tmp_path / "pictures").glob("*.png"))) == 8


def test_gradcheck_quick_passes_and_fails_when_a_gradient_is_wrong(capsys, monkeypatch):
    status, out, _ = run_main(capsys, "gradcheck", "--quick")
    assert status == 0
    assert "small 6-5-3 VAE, bernoulli" in out and "784-400-20" not in out and "FAIL" not in out
    from numpyvae import layers
    real_backward = layers.relu_backward
    monkeypatch.setattr(layers, "relu_backward", lambda xp, dy, cache, out=None: real_backward(xp, dy, cache) * 1.01)
    status, out, _ = run_main(capsys, "gradcheck", "--quick", "--dtype", "float32")
    assert status == 1 and "FAIL" in out and "float32" in out


def test_download_reports_where_the_files_went_or_why_not(capsys, tmp_path, monkeypatch):
    from numpyvae import download
    monkeypatch.setattr(download, "download_fashion_mnist", lambda data_dir: [data_dir / "a.gz", data_dir / "b.gz"])
    status, out, _ = run_main(capsys, "download", "--data-dir", tmp_path)
    assert status == 0 and out.split() == [str(tmp_path / "a.gz"), str(tmp_path / "b.gz")]

    def offline(data_dir):
        raise download.DownloadError("could not reach the server (no network); or apt-get install ...")
    monkeypatch.setattr(download, "download_fashion_mnist", offline)
    status, _, err = run_main(capsys, "download", "--data-dir", tmp_path)
    assert status == 1
    assert_one_line_error(err, "numpyvae download: error: could not reach the server")


def test_show_data_draws_a_grid(small_data, capsys, tmp_path):
    out_path = tmp_path / "grid.png"
    status, out, err = run_main(capsys, "show-data", "--data-dir", small_data.data_dir, "--out", out_path, "-n", 10)
    assert status == 0 and out.strip() == str(out_path)
    assert out_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_numbers_too_large_to_work_are_refused_in_one_line(small_data, capsys, tmp_path):
    base = ["--data-dir", small_data.data_dir, "--run-dir", tmp_path / "run", "--no-figures"]
    status, _, err = run_main(capsys, "train", "--seed", 2 ** 63, *TINY, *base)
    assert status == 2
    assert_one_line_error(err, "argument --seed: must be at most 9223372036854775807")
    status, _, err = run_main(capsys, "train", "--hidden-dim", 99999999999, *base)
    assert status == 1
    assert_one_line_error(err, "numpyvae train: error: a 784-99999999999-20 VAE", "at most 100,000,000")
    assert not (tmp_path / "run").exists()
    status, out, _ = run_main(capsys, "train", "--help")
    assert "0 to 2**63-1" in " ".join(out.split())


def test_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path):
    def huge(args):
        raise MemoryError
    monkeypatch.setattr(cli, "cmd_gradcheck", huge)
    status, _, err = run_main(capsys, "gradcheck", "--quick")
    assert status == 1
    assert_one_line_error(err, "numpyvae gradcheck: error: out of memory")


def test_metrics_that_are_not_utf8_stop_figures_in_one_line(small_data, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir, "--run-dir", run_dir,
             "--no-figures")
    (run_dir / "metrics.csv").write_bytes(b"\xff\xfe" + (run_dir / "metrics.csv").read_bytes())
    status, _, err = run_main(capsys, "figures", run_dir, "--out", tmp_path / "pictures")
    assert status == 1
    assert_one_line_error(err, "numpyvae figures: error:", "metrics.csv is not UTF-8")


def test_sigterm_saves_like_ctrl_c_and_exits_143(small_data, tmp_path):
    """A batch system's preemption (SIGTERM) saves the state mid-epoch, says how to go on, exits 128 + 15."""
    run_dir = tmp_path / "run"
    status, err = signal_training(small_data, run_dir, signal.SIGTERM)
    assert status == 143, err
    assert_one_line_error(err, "numpyvae train: terminated (SIGTERM)", "saved to", "--resume")
    saved = checkpoint.load(run_dir / checkpoint.FILENAME)
    assert saved.epoch >= 1
    status = cli.main(["train", "--run-dir", str(run_dir), "--resume", "--epochs", str(saved.epoch + 1),
                       "--no-figures"])
    assert status == 0 and checkpoint.load(run_dir / checkpoint.FILENAME).epoch == saved.epoch + 1


def test_show_data_has_a_bounded_n(capsys, tmp_path):
    status, _, err = run_main(capsys, "show-data", "-n", 2000, "--out", tmp_path / "grid.png")
    assert status == 2
    assert_one_line_error(err, "argument -n: must be at most 100, got 2000")
    status, out, _ = run_main(capsys, "show-data", "--help")
    assert status == 0 and "1 to 100" in " ".join(out.split())


@pytest.mark.parametrize("args", [["train", "--run-dir", ""], ["evaluate", ""], ["figures", " "]])
def test_an_empty_run_directory_name_is_refused(capsys, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(capsys, *args)
    assert status == 2
    assert_one_line_error(err, "must name a directory")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_drawing_says_the_run_is_complete(small_data, capsys, tmp_path, monkeypatch):
    from numpyvae import plots

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(plots, "make_all", interrupted)
    run_dir = tmp_path / "run"
    status, out, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir,
                                "--run-dir", run_dir)
    assert status == 130 and "epoch 1/1" in out
    assert_one_line_error(err, "interrupted while drawing the figures", "the run is complete",
                          f"numpyvae figures {run_dir}")


# -- issue 19: a new user's finish: --version, help for every flag, progress, the banner ----------

def test_version(capsys):
    import numpyvae
    status, out, err = run_main(capsys, "--version")
    assert status == 0 and out.strip() == f"numpyvae {numpyvae.__version__}"


def test_every_flag_of_every_command_says_what_it_does():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help, f"numpyvae {name} {action.option_strings[0]} has no help text"


@pytest.mark.parametrize("text", ["0", "-2", "many"])
def test_threads_flag_refuses_bad_counts(capsys, text):
    status, _, err = run_main(capsys, "train", "--threads", text)
    assert status == 2
    assert_one_line_error(err, "argument --threads:")


def test_train_banner_says_conditional_and_threads(small_data, tmp_path, capsys):
    status, out, _ = run_main(capsys, "train", "--run-dir", tmp_path / "run", "--conditional", "--epochs", 1,
                              "--batch-size", 16, "--hidden-dim", 8, "--latent-dim", 2, "--no-figures",
                              "--threads", 1, "--data-dir", small_data.data_dir)
    assert status == 0
    banner = out.splitlines()[0]
    assert "conditional (10 classes) VAE" in banner and "BLAS threads: 1" in banner


def test_evaluate_and_gradcheck_report_progress_without_a_terminal(small_data, tmp_path, capsys, monkeypatch):
    from numpyvae import progress
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0)     # a line at every chunk, as a long wait would get
    run_dir = tmp_path / "run"
    status, _, _ = run_main(capsys, "train", "--run-dir", run_dir, "--epochs", 1, "--batch-size", 16,
                            "--hidden-dim", 8, "--latent-dim", 2, "--no-figures", "--data-dir", small_data.data_dir)
    assert status == 0
    status, out, err = run_main(capsys, "evaluate", run_dir, "--samples", 2, "--iw-samples", 5, "--json")
    assert status == 0 and json.loads(out)["iw_samples"] == 5
    lines = err.splitlines()                 # capsys is no terminal: plain lines, and one as each stage ends
    assert any(line.startswith("negative ELBO, 2 samples: done") for line in lines), err
    assert any(line.startswith("IWAE bound, k = 5: done") for line in lines), err
    status, out, err = run_main(capsys, "gradcheck", "--quick")
    assert status == 0
    assert sum(line.startswith("checked: ") for line in err.splitlines()) == out.count("\n\n")


def test_gradcheck_table_columns_line_up():
    from numpyvae import gradcheck, gradcheck_plan
    table = gradcheck.format_table([("layers and losses (float64, NumPy)", gradcheck_plan.plan()[0].run())])
    header, *rows = table.strip().splitlines()[1:]
    start = header.index("shape")
    for row in rows:
        assert row[start - 2:start] == "  " and row[start] != " ", row     # the name ends before "shape" begins


def test_gradcheck_names_the_flag_a_run_directory_fixes(capsys, tmp_path):
    """The refusal names the flag as typed (--conditional, --latent-dim), not argparse's internal name."""
    for flag, shown in ((["--conditional"], "--conditional"), (["--latent-dim", "3"], "--latent-dim")):
        status, _, err = run_main(capsys, "gradcheck", tmp_path, *flag)
        assert status == 1 and f"(the run fixes {shown})" in err


@pytest.mark.parametrize("error, expected", [
    (NotADirectoryError(20, "Not a directory", "gen.png/run"), "gen.png/run: Not a directory"),
    (PermissionError(13, "cannot write /sys/x.npz: Permission denied"), "cannot write /sys/x.npz: Permission denied"),
    # atomic_write's hidden temporary file is named as the file it was to become
    (NotADirectoryError(20, "Not a directory", "gen.png/.x.png.6686e557db7a.tmp"), "gen.png/x.png: Not a directory"),
    (OSError(18, "Invalid cross-device link", "a/.b.npz.0123456789ab.tmp", "a/b.npz"), "a/b.npz: Invalid cross-device"),
    (OSError("no errno at all"), "no errno at all"),
])
def test_an_os_error_reads_as_its_file_and_reason_without_errno(error, expected):
    text = cli._one_line(error)
    assert text.startswith(expected) and "[Errno" not in text and ".tmp" not in text, text


def test_a_file_in_the_path_of_an_output_is_one_line_naming_the_output(small_data, capsys, tmp_path):
    (tmp_path / "gen.png").write_bytes(b"mine")
    status, _, err = run_main(capsys, "show-data", "--data-dir", small_data.data_dir, "-n", 4,
                              "--out", tmp_path / "gen.png" / "x.png")
    assert status == 1
    assert_one_line_error(err, f"{tmp_path / 'gen.png' / 'x.png'}: Not a directory")
    assert "[Errno" not in err and (tmp_path / "gen.png").read_bytes() == b"mine"


def test_a_file_where_a_folder_should_be_made_is_named_as_such(tmp_path):
    (tmp_path / "gen.png").write_bytes(b"mine")
    error = FileExistsError(17, "File exists", str(tmp_path / "gen.png"))     # Path.mkdir(exist_ok=True)'s
    assert cli._one_line(error) == f"{tmp_path / 'gen.png'} exists and is not a folder"


def test_out_of_memory_advises_resuming_only_where_there_is_a_run_to_resume(tmp_path, monkeypatch, capsys):
    from numpyvae import reference_state

    def too_big(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(reference_state, "compute", too_big)
    status, _, err = run_main(capsys, "reference-state", "--out", tmp_path / "ref.npz", "--synthetic")
    assert status == 1
    assert_one_line_error(err, "numpyvae reference-state: error: out of memory")
    assert "resume" not in err and not list(tmp_path.iterdir())

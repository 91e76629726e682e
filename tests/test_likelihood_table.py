"""benchmarks/likelihood_table.py --smoke: the table's machinery end to end in seconds (not a timed test).

Rows train through `numpyvae train` in run directories of their own, are scored by `numpyvae evaluate`,
cached, and pick up where they stopped when the script is run again.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from numpyvae import checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "likelihood_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("likelihood_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke(tmp_path, data_dir, rows):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--rows", rows, "--runs-dir", str(tmp_path),
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return done.stdout, json.loads((tmp_path / "smoke" / "likelihood_table.json").read_text()), \
        (tmp_path / "smoke" / "likelihood_table.md").read_text()


def test_smoke_trains_evaluates_caches_and_says_what_it_cannot_run(real_fashion_mnist_dir, tmp_path):
    table = load_script()
    has_prior = not table.Numpyvae().missing_flags(table.BY_KEY["vamp"])       # this checkout's `numpyvae train`
    out, report, md = smoke(tmp_path, real_fashion_mnist_dir, "vae,vamp")
    vae = report["rows"]["vae"]
    assert vae["status"] == "done" and vae["epochs"] == 1 and report["k"] == 10 and report["smoke"] == 512
    evaluation = vae["evaluation"]
    assert evaluation["iw_samples"] == 10 and evaluation["test_images"] == 512 and evaluation["binarize"]
    assert evaluation["is_bound"] and evaluation["iwae_nll"] <= evaluation["test_loss"] + 0.5   # the bound is tighter
    assert f"| VAE (ELBO) | {evaluation['iwae_nll']:.2f} | {evaluation['test_loss']:.2f} |" in md
    config = json.loads((tmp_path / "smoke" / "vae" / "config.json").read_text())
    assert (config["hidden_dims"], config["latent_dim"], config["lr"], config["batch_size"]) == \
        ([300, 300], 50, 3e-4, 128)
    assert config["binarize"] and config["init_output_bias"] == "mean"
    if not has_prior:          # the VampPrior's flags are not in this numpyvae: one line, and the rest ran
        lines = [line for line in out.splitlines() if "VampPrior" in line]
        assert len(lines) == 1 and "needs a numpyvae with --prior" in lines[0]
        assert "| VampPrior, 500 pseudo-inputs |  |  |  |  |  | needs a numpyvae with --prior" in md
    else:
        assert report["rows"]["vamp"]["status"] == "done"
    assert "| IWAE, K = 50 |  |  |  |  |  | not yet run |" in md

    # run again: nothing is trained or evaluated twice
    before = (tmp_path / "smoke" / "vae" / checkpoint.FILENAME).stat().st_mtime_ns
    out, again, _ = smoke(tmp_path, real_fashion_mnist_dir, "vae")
    assert "training" not in out and "evaluating" not in out
    assert again["rows"]["vae"]["evaluation"] == evaluation
    assert (tmp_path / "smoke" / "vae" / checkpoint.FILENAME).stat().st_mtime_ns == before


def test_a_row_stopped_in_an_earlier_session_resumes_to_the_run_it_would_have_been(real_fashion_mnist_dir, tmp_path):
    """A run left at epoch 0 (a session that ended before its first epoch) is resumed, not restarted,
    and ends bit for bit where a run never stopped ends."""
    table = load_script()
    numpyvae = table.Numpyvae(table.SMOKE["images"], table.SMOKE["images"], str(real_fashion_mnist_dir))
    stopped = tmp_path / "stopped"
    assert numpyvae.train(stopped / "smoke" / "vae", table.BY_KEY["vae"], 0, "1") == 0
    out, report, _ = smoke(stopped, real_fashion_mnist_dir, "vae")
    assert "0 of 1 epochs done" in out and "resuming" in out and report["rows"]["vae"]["status"] == "done"
    smoke(tmp_path / "straight", real_fashion_mnist_dir, "vae")
    resumed, straight = (checkpoint.load(path / "smoke" / "vae" / checkpoint.FILENAME).params
                         for path in (stopped, tmp_path / "straight"))
    assert np.array_equal(resumed, straight)


def test_the_rows_are_the_issues_protocol():
    table = load_script()
    assert list(table.BY_KEY) == ["vae", "iwae5", "iwae50", "vamp", "vamp-iwae50"]
    flags = " ".join(table.PROTOCOL_FLAGS)
    for part in ("--hidden-dims 300,300", "--latent-dim 50", "--batch-size 128", "--lr 3e-4", "--binarize",
                 "--init-output-bias mean"):
        assert part in flags
    assert table.BY_KEY["vamp"].flags == ("--prior", "vamp", "--pseudo-inputs", "500")
    assert table.K_EVAL == 5000 and table.parse([]).epochs == 50


def test_a_sigterm_to_the_script_reaches_numpyvae_once_and_stops_the_script(tmp_path):
    """`timeout` or a batch system signals the script alone: the command it runs (in a session of its own,
    out of reach of the terminal's Ctrl-C) gets the signal passed on, so it saves and stops, never orphaned."""
    import signal
    import threading
    import time

    table = load_script()
    ready = tmp_path / "ready"
    child = ("import signal, sys, time, pathlib\n"
             "got = []\n"
             "signal.signal(signal.SIGTERM, lambda s, f: got.append(s))\n"
             f"pathlib.Path({str(ready)!r}).touch()\n"
             "deadline = time.time() + 30\n"
             "while not got and time.time() < deadline:\n"
             "    time.sleep(0.01)\n"
             "print('got', got, 'own session', __import__('os').getsid(0) == __import__('os').getpid())\n"
             "sys.exit(128 + got[0] if got else 0)\n")

    def signal_when_ready():
        while not ready.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=signal_when_ready, daemon=True).start()
    done, received = table.run_passing_signals([sys.executable, "-c", child], dict(os.environ), capture=True)
    assert received == [signal.SIGTERM] and done.returncode == 128 + signal.SIGTERM
    assert done.stdout.strip() == f"got [{int(signal.SIGTERM)}] own session True"
    assert signal.getsignal(signal.SIGTERM) is before           # this process's handler put back


def test_two_copies_with_disjoint_rows_keep_each_others_rows(tmp_path):
    # Each copy of the script read the report when it started; writing it back whole would erase the
    # rows the other copy finished since. `write` takes the others' rows from the file as it is now.
    table = load_script()
    paths = {rows: table.Results(tmp_path / "t.json", tmp_path / "t.md", list(rows)) for rows in [("vae",), ("vamp",)]}
    first = {"epochs": 50, "k": 5000, "threads": "1", "smoke": 0, "cpus": 2, "machine": "x86_64", "rows": {}}
    second = json.loads(json.dumps(first))                      # started from the same (empty) file
    first["rows"]["vae"] = {"status": "training", "epochs": 3}
    table.write(first, paths[("vae",)])
    second["rows"]["vamp"] = {"status": "training", "epochs": 1}
    table.write(second, paths[("vamp",)])
    first["rows"]["vae"]["epochs"] = 4
    table.write(first, paths[("vae",)])
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert rows == {"vae": {"status": "training", "epochs": 4}, "vamp": {"status": "training", "epochs": 1}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.md"]   # no lock file left behind


def test_seconds_per_epoch_is_the_median_so_a_paused_epoch_counts_once(tmp_path):
    table = load_script()
    lines = ["epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds"]
    lines += [f"{e},1,1,0,1,1,0,{s}" for e, s in enumerate([10.0, 9.0, 6428.6, 11.0], start=1)]
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert table.epochs_done(tmp_path) == (4, 10.5)


def test_readme_and_chapter_7_state_the_committed_tables_numbers():
    """The bounds, ELBOs and active units README and docs/iwae.md quote are those of the committed results."""
    root = SCRIPT.parents[1]
    report = json.loads((root / "benchmarks" / "results" / "likelihood_table.json").read_text())
    rows = {key: entry["evaluation"] for key, entry in report["rows"].items()}
    assert set(rows) == {"vae", "iwae5", "iwae50", "vamp", "vamp-iwae50"} and report["epochs"] == 50
    chapter = (root / "docs" / "iwae.md").read_text()
    for evaluation in rows.values():
        numbers = [f"{evaluation['iwae_nll']:.2f}", f"{evaluation['test_loss']:.2f}", f"{evaluation['active_units']}"]
        assert all(number in chapter for number in numbers), numbers
    readme = " ".join((root / "README.md").read_text().split())
    for key in ("vae", "iwae50", "vamp", "vamp-iwae50"):
        assert f"{rows[key]['iwae_nll']:.2f}" in readme, key
    assert f"{rows['iwae50']['active_units']} active units of 50 against the VAE's {rows['vae']['active_units']}" in readme

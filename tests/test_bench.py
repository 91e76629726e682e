"""The benchmark script runs in --quick mode and writes well-formed results. It is not a timed test."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_backends.py"


RESULTS = SCRIPT.parent / "results"


def snapshot(directory):
    """{relative path: (size, mtime_ns, bytes)} of every file under directory."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """--quick as README shows it, without --out: it must write into a new temporary directory."""
    before = snapshot(RESULTS)
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert snapshot(RESULTS) == before           # the committed results are untouched
    out = Path(done.stderr.rsplit("wrote ", 1)[1].split()[0]).parent
    assert out.resolve() != RESULTS.resolve() and out.name.startswith("bench_backends_quick_")
    yield out, done
    for path in out.iterdir():
        path.unlink()
    out.rmdir()


def test_quick_writes_json_markdown_and_png(quick_results):
    out, _ = quick_results
    report = json.loads((out / "bench_backends.json").read_text())
    assert "numpy" in report["backends"]
    # every requested backend either ran or says why not (CuPy: no GPU here; torch: not installed)
    assert set(report["backends"]) | set(report["skipped"]) == {"numpy", "cupy", "torch"}
    assert all(why.startswith("not run: ") for why in report["skipped"].values())
    for row in report["rows"]:
        assert row["seconds_per_epoch"] > 0 and row["images_per_second"] > 0
        assert 0 < row["achieved_gflops"] and 0 < row["matmul_gflops"]
        assert row["epoch_over_matmul_floor"] > 0                     # the epoch against its own matmul floor
        assert row["peak_rss_bytes"] > 10 * 2 ** 20
        assert len(row["loss_mean"]) == report["config"]["epochs"]
        assert all(0 < loss < 1000 for loss in row["loss_mean"])       # per image, in nats
    for table in report["scaling"].values():
        for runs in table.values():
            assert all(entry["images_per_second"] > 0 for entry in runs.values())
    markdown = (out / "bench_backends.md").read_text()
    assert "| numpyvae, NumPy float32 |" in markdown and "s/epoch" in markdown
    assert "epoch / matmul floor" in markdown
    # a smoke test says so, and judges no speed target on its few steps; a full run would
    assert "Smoke test (--quick)" in markdown and "Speed target" not in markdown and "measured 0" not in markdown
    assert "Speed targets: " in report_markdown({**report, "quick": False})
    assert "pip install -e '.[cuda]'" in markdown and "'numpyvae[cuda]'" not in markdown   # no index has numpyvae
    assert (out / "bench_backends.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_prints_the_table_and_names_skipped_backends(quick_results):
    _, done = quick_results
    assert "| backend |" in done.stdout
    assert "cupy" in done.stderr or "CuPy" in done.stdout


def test_quick_says_it_is_a_smoke_test_and_shows_progress(quick_results):
    _, done = quick_results
    lines = done.stderr.splitlines()
    assert lines[0].startswith("smoke test (--quick)") and "no speed target is checked" in lines[0]
    # a line before each worker starts (no silent wait while one runs) and one when it ends
    assert any(line.startswith("  train numpy round 1/1: running (worker ") for line in lines)
    assert "checking which backends can run" in done.stderr and "drawing the figure..." in done.stderr


def test_the_loss_curves_have_whole_epoch_ticks(quick_results):
    out, _ = quick_results
    report = json.loads((out / "bench_backends.json").read_text())
    figure = draw(report)
    ticks = figure.axes[1].get_xticks()
    assert len(ticks) and all(tick == int(tick) for tick in ticks)


def test_matmul_overlap_script_writes_both_environments(tmp_path):
    pytest.importorskip("threadpoolctl", reason="the overlap benchmark sets BLAS threads through threadpoolctl")
    script = SCRIPT.parent / "bench_matmul_overlap.py"
    out = tmp_path / "overlap.md"
    done = subprocess.run([sys.executable, str(script), "--rounds", "1", "--block", "0.001", "--out", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "## With the environment as CI has it" in text and "## Side note" in text
    assert text.count("| heads forward, h W_mu + h W_logvar") == 2


def test_busy_load_quick_starts_and_stops_its_competing_processes(tmp_path):
    """--busy-load --quick writes its table; the busy loops it started are gone when it returns."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--busy-load", "--quick", "--max-seconds", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "busy_load.json").read_text())
    assert report["loads"] == ["0", "1"] and "auto" in report["settings"] and "1" in report["settings"]
    for by_setting in report["results"].values():
        for runs in by_setting.values():
            assert runs and all(run["epoch_seconds"][0] > 0 and "loadavg_before" in run for run in runs)
    text = (tmp_path / "busy_load.md").read_text()
    assert "| competing busy cores |" in text and "load average" in text
    assert "What auto costs where it keeps every thread" in text
    # --quick is a smoke test: no target is judged on it
    assert "Smoke test (--quick)" in text and "met" not in text and "Targets" not in text
    # it started a busy loop, and none outlives the benchmark
    assert len(report["busy_pids"]) == 1
    assert not any("getppid() == parent" in _cmdline(pid) for pid in report["busy_pids"])


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def test_the_matmul_shapes_are_read_off_the_network():
    sys.path.insert(0, str(SCRIPT.parent))
    from benchkit.matmul import matmul_flops, matmul_shapes, network_shapes
    assert sorted(network_shapes(128, {})) == sorted(matmul_shapes(128, 784, 400, 20))
    conv = network_shapes(1, {"arch": "conv"})
    # per image: conv1 2 * 32 * 9 * 196 per product, two products (its input is data: no dx), conv2 three
    # of 2 * 64 * 288 * 49, the heads and dec 3 + 3 + 3 (mu, logvar, dec) less none, deconvs as conv2, conv1
    expected = (2 * 2 * 32 * 9 * 196 + 3 * 2 * 64 * 288 * 49 + 3 * 3 * 2 * 3136 * 20
                + 3 * 2 * 64 * 288 * 49 + 3 * 2 * 32 * 9 * 196)
    assert matmul_flops(conv) == expected


def test_conv_rows_are_written_beside_the_dense_ones(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--arch", "conv", "--no-scaling",
                           "--backends", "numpy", "--out", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench_backends_conv.json").read_text())
    assert report["config"]["arch"] == "conv" and report["rows"][0]["peak_rss_bytes"] > 0
    assert "conv VAE (TensorFlow's CVAE shape" in (tmp_path / "bench_backends_conv.md").read_text()
    refused = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--arch", "conv"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "give --no-scaling with --arch conv" in refused.stderr


def draw(report):
    sys.path.insert(0, str(SCRIPT.parent))
    from benchkit.plot import draw
    return draw(report)


def report_markdown(report):
    sys.path.insert(0, str(SCRIPT.parent))
    from benchkit.report import markdown
    return markdown(report)


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (["--busy-load", "--busy-cores", "abc"], "argument --busy-cores: expected whole numbers separated by commas"),
    (["--threads", "0"], "argument --threads: must be at least 1, got 0"),
    (["--out", "FILE"], "exists and is not a directory"),
    (["--images", "0"], "argument --images: must be at least 1, got 0"),
    (["--images", "-5"], "argument --images: must be at least 1, got -5"),
    (["--busy-load", "--max-seconds", "nan"], "argument --max-seconds: must be a finite number more than 0"),
    (["--busy-load", "--busy-cores", "1,100000"], "argument --busy-cores: each count must be at most"),
    (["--out", ""], "argument --out: must name a directory"),
    (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["--arch", "conv"], "give --no-scaling with --arch conv"),
])
def test_bad_arguments_are_one_line_before_any_work(tmp_path, args, message):
    (tmp_path / "FILE").write_text("mine")
    args = [str(tmp_path / "FILE") if arg == "FILE" else arg for arg in args]
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]          # no temporary folder made
    assert (tmp_path / "FILE").read_text() == "mine"


def test_sigterm_stops_the_worker_and_leaves_no_empty_folder(tmp_path):
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--quick", "--backends", "numpy", "--threads", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        for line in process.stderr:
            if "running (worker " in line:
                worker = int(line.split("running (worker ")[1].split(")")[0])
                break
        else:
            pytest.fail("no worker started")
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
        process.wait()
    assert "terminated (SIGTERM); workers stopped" in rest and "Traceback" not in rest
    assert not Path(f"/proc/{worker}").exists() or "Z" in _state(worker)
    assert list(tmp_path.iterdir()) == []


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"

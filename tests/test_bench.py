"""The benchmark script runs in --quick mode and writes well-formed results. It is not a timed test."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_backends.py"


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


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
    assert "epoch / matmul floor" in markdown and "Targets (issue #9)" in markdown
    assert (out / "bench_backends.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_prints_the_table_and_names_skipped_backends(quick_results):
    _, done = quick_results
    assert "| backend |" in done.stdout
    assert "cupy" in done.stderr or "CuPy" in done.stdout


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

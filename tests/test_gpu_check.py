"""benchmarks/gpu_check.sh, rehearsed without a GPU, so that a typo cannot cost a lease on one (issue 17).

The rehearsal runs every step of the script (fake device for CuPy, PyTorch on the CPU, small models):
every code path of the GPU run except the device calls themselves. Not a timed test.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "step-vs-numpy", "fused-kernels", "gradcheck", "train10", "resume", "suite", "bench"]   # as recorded
RESULT_FILES = {"summary.tsv", "gpu_check.log", "metrics.csv", "resume.json", "bench_gpu.json", "bench_gpu.md",
                "bench_gpu.png"}


def run_script(*args, env=None, timeout=900):
    environment = {k: v for k, v in os.environ.items() if k != "OUT"}
    environment.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=environment)


def summary(out):
    lines = (out / "summary.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["step", "status", "exit", "seconds", "note"]
    return {fields[0]: fields[1:] for fields in (line.split("\t") for line in lines[1:])}


def test_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, real_fashion_mnist_dir):
    """The whole rehearsal, once: it trains on the real Fashion-MNIST (skipped where it is not installed)."""
    out = tmp_path_factory.mktemp("gpu-check")
    done = run_script("--rehearse", "--out", str(out), env={"NUMPYVAE_DATA_DIR": str(real_fashion_mnist_dir)})
    return out, done


def test_rehearsal_runs_every_step_and_passes(rehearsal):
    out, done = rehearsal
    assert done.returncode == 0, (out / "gpu_check.log").read_text()[-4000:]
    steps = summary(out)
    assert list(steps) == STEPS
    assert all(status == "pass" and code == "0" for status, code, *_ in steps.values())
    assert "0 step(s) failed or not run" in done.stdout


def test_rehearsal_writes_what_the_device_tool_can_bring_back(rehearsal):
    """At most 8 files in the output folder, no subfolders, names of letters, digits, '.', '_' and '-'."""
    out, _ = rehearsal
    names = {path.name for path in out.iterdir()}
    assert names == RESULT_FILES
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) and (out / name).is_file() for name in names)
    assert len(names) <= 8


def test_rehearsal_results_are_well_formed(rehearsal):
    out, _ = rehearsal
    report = json.loads((out / "bench_gpu.json").read_text())
    assert report["rehearse"] is True
    dense = {"numpyvae-cupy", "torch-eager", "torch-graph", "numpyvae-numpy"}
    assert set(report["rows"]) == dense | {f"{name}-conv" for name in dense}     # this checkout has the conv VAE
    for row in report["rows"].values():
        assert "error" not in row, row.get("error")
        assert row["seconds_per_epoch"] > 0 and row["us_per_step"] > 0 and row["achieved_tflops"] > 0
        assert set(row["scaling"]) == {str(b) for b in report["config"]["batches"]
                                       if b <= report["config"]["cpu_max_batch"] or row["row"] != "numpyvae-numpy"}
        assert all(0 < loss < 1000 for loss in row["epoch_loss"])
    assert report["gemm"]["seconds"] and all(s > 0 for s in report["gemm"]["seconds"].values())
    # a conv row's rate counts the conv VAE's own products, and is never set against the dense model's cuBLAS
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from benchkit.matmul import matmul_flops, network_shapes
    conv, config = report["rows"]["numpyvae-numpy-conv"], report["config"]
    per_step = conv["achieved_tflops"] * 1e12 * conv["seconds_per_epoch"] / conv["steps_per_epoch"]
    conv_flops = matmul_flops(network_shapes(config["batch"], {"arch": "conv", "latent_dim": config["latent_dim"]}))
    assert per_step == pytest.approx(conv_flops) and "cublas_tflops" not in conv
    markdown = (out / "bench_gpu.md").read_text()
    assert "REHEARSAL" in markdown and "| numpyvae, CuPy |" in markdown and "Scaling with batch size" in markdown
    assert (out / "bench_gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resume = json.loads((out / "resume.json").read_text())
    assert resume["passed"] and resume["bit_exact"] and resume["interrupted_exit"] == 130
    assert (out / "metrics.csv").read_text().startswith("epoch,")


def test_help_prints_the_header():
    done = run_script("--help", timeout=30)
    assert done.returncode == 0 and "Steps, in order" in done.stdout and "set -u" not in done.stdout


def test_a_failing_step_is_recorded_and_the_next_still_runs(tmp_path):
    """Every step fails here (python3 is `false`); each is recorded, the log is written, the exit status is not 0."""
    done = run_script("--rehearse", "--only", "env,gradcheck", env={"OUT": str(tmp_path), "PYTHON": "false"},
                      timeout=120)
    assert done.returncode != 0
    steps = summary(tmp_path)
    assert list(steps) == ["env", "gradcheck"]
    assert [steps[name][0] for name in steps] == ["FAIL", "FAIL"]
    assert "==== gradcheck: FAIL" in (tmp_path / "gpu_check.log").read_text()


def test_a_step_past_the_budget_is_not_run_and_fails_the_call(tmp_path):
    done = run_script("--rehearse", "--only", "env", "--budget", "0", "--out", str(tmp_path), timeout=60)
    assert done.returncode != 0
    assert summary(tmp_path)["env"][0] == "not run"


def test_a_step_over_its_limit_is_stopped_with_its_children(tmp_path):
    """A step's time limit ends the whole step, python children included, and says 'timeout'."""
    sleeper = tmp_path / "python3"
    sleeper.write_text("#!/bin/sh\nsleep 300\n")
    sleeper.chmod(0o755)
    out = tmp_path / "out"
    done = run_script("--rehearse", "--only", "gradcheck", "--budget", "25", "--out", str(out),
                      env={"PYTHON": str(sleeper)}, timeout=90)
    assert done.returncode != 0
    assert summary(out)["gradcheck"][:2] == ["timeout", "124"]


def test_a_gpu_test_that_skips_fails_when_a_gpu_is_required(tmp_path):
    """NUMPYVAE_REQUIRE_GPU=1 (set by gpu_check.sh on the GPU) turns a skipped gpu-marked test into a failure."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_gpu.py").write_text(
        "import pytest\n\n@pytest.mark.gpu\ndef test_on_gpu():\n    pytest.skip('no device here')\n\n"
        "def test_on_cpu():\n    pytest.skip('unrelated')\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "markers=gpu", "-rf", "--tb=short", "-o", "console_output_style=classic", str(tmp_path)]
    plain = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "NUMPYVAE_REQUIRE_GPU": "0"})
    assert plain.returncode == 0, plain.stdout
    required = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "NUMPYVAE_REQUIRE_GPU": "1"})
    assert required.returncode == 1
    assert "1 failed, 1 skipped" in required.stdout
    assert "NUMPYVAE_REQUIRE_GPU=1, but this GPU test skipped: no device here" in required.stdout


def test_rehearsal_report_shows_a_failed_row_and_the_rest(rehearsal):
    """A row that fails on the GPU (say, a graph capture) is reported with its error; the other rows still compare."""
    out, _ = rehearsal
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu
    report = json.loads((out / "bench_gpu.json").read_text())
    report["rows"]["torch-graph"] = {"error": "Traceback ...\nRuntimeError: operation not permitted when stream is capturing"}
    text = bench_gpu.markdown(report)
    assert "| PyTorch CUDA, one CUDA graph per step | failed: RuntimeError: operation not permitted" in text
    cupy_line = next(line for line in text.splitlines() if line.startswith("| numpyvae, CuPy |"))
    assert cupy_line.endswith(" | - |") and cupy_line.count("|") == 12   # no graph row to compare with


def test_a_spent_budget_skips_the_rows_left_and_still_writes_the_report(tmp_path):
    """bench_gpu --budget: rows that would not fit are listed as skipped, never killed mid-write."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--rehearse", "--budget", "25",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert report["rows"] == {} and set(report["skipped"]) == {"numpyvae-cupy", "torch-eager", "torch-graph",
                                                               "numpyvae-numpy"}
    assert "--budget was spent" in (tmp_path / "bench_gpu.md").read_text()

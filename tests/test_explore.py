"""`numpyvae explore`: the exported site, its JavaScript forward pass against numpyvae's (Node), and the
page in a real browser (Chromium, through Playwright).

Without Node, Chromium or Playwright these tests skip, saying which is missing; under CI (CI=true),
whose .ci/run installs them, they fail instead.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from numpyvae import explore, losses
from numpyvae.vae import VAE
from test_cli import TINY, assert_one_line_error, run_main

REPO = Path(__file__).resolve().parent.parent
NODE_TEST = REPO / "tests" / "js" / "explorer.test.mjs"
CHROMIUM = "/usr/bin/chromium"


def need(ok, reason):
    """Skip with the reason, or under CI fail with it: CI installs everything these tests need."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


# -- small models of every kind ------------------------------------------------------------------------

DENSE = dict(arch="dense", input_shape=(1, 8, 8), hidden_dims=(16, 12), latent_dim=3)
# 7 -> 4 -> 2 and back: the first transposed convolution needs output_padding 1, the second 0
CONV = dict(arch="conv", input_shape=(1, 7, 7), hidden_dims=(3, 4), latent_dim=3)
MODELS = {f"{arch}-{'conditional' if classes else 'plain'}-{likelihood}": dict(settings, num_classes=classes,
                                                                                likelihood=likelihood)
          for arch, settings in (("dense", DENSE), ("conv", CONV)) for classes in (0, 3)
          for likelihood in losses.LIKELIHOODS}


def small_model(settings, seed=0):
    """A float32 model with weights 3 times PyTorch's initial range, so its logits spread over both sides of
    the continuous Bernoulli's series boundary (0.4) and its ReLUs cut."""
    model = VAE(**settings, seed=seed)
    model.flat_params *= 3
    return model


def write_parity_case(folder, model, rows=4, seed=1):
    """Export `model` into `folder` and write cases.json: fixed z, x and labels, and numpyvae's outputs for them."""
    rng = np.random.default_rng(seed)
    explore.write_site(folder, model)
    z = (1.5 * rng.standard_normal((rows, model.latent_dim))).astype(np.float32)
    x = rng.random((rows, model.input_dim), dtype=np.float32)
    x[0] = 0                                                       # a blank drawing, as the page starts
    labels = rng.integers(0, model.num_classes, rows) if model.conditional else None
    mu, logvar = model.encode(x, labels)
    logits = model.decode_logits(z, labels)
    case = {"z": z.tolist(), "x": x.tolist(), "labels": None if labels is None else labels.tolist(),
            "decode": model.decode(z, labels).tolist(), "mu": mu.tolist(), "logvar": logvar.tolist()}
    (Path(folder) / "cases.json").write_text(json.dumps(case))
    return logits


def test_node_forward_pass_equals_numpyvae(tmp_path):
    """decode and encode of every layer kind, both architectures, plain and conditional, every likelihood."""
    node = shutil.which("node")
    need(node is not None, "node is not installed (the JavaScript forward pass is checked under Node 20)")
    cases = tmp_path / "cases"
    for name, settings in MODELS.items():
        logits = write_parity_case(cases / name, small_model(settings))
        # the continuous Bernoulli's mean has two branches: the cases must reach both
        assert (np.abs(logits) < losses.SERIES_BELOW).any() and (np.abs(logits) > 1).any(), name
    done = subprocess.run([node, "--test", str(NODE_TEST)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMPYVAE_EXPLORER_CASES": str(cases)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"# pass {len(MODELS) + 1}" in done.stdout and "# fail 0" in done.stdout, done.stdout[-2000:]


def test_node_test_fails_on_a_wrong_forward_pass(tmp_path):
    """The Node test can fail: one weight changed after numpyvae's outputs were written is caught."""
    node = shutil.which("node")
    need(node is not None, "node is not installed (the JavaScript forward pass is checked under Node 20)")
    folder = tmp_path / "cases" / "conv"
    write_parity_case(folder, small_model(MODELS["conv-conditional-continuous-bernoulli"]))
    manifest = json.loads((folder / "model.json").read_text())
    weights = folder / manifest["weights"]["file"]
    data = bytearray(weights.read_bytes())
    offset = next(t["offset"] for t in manifest["weights"]["tensors"] if t["name"] == "dec.deconv2.W")
    data[offset:offset + 4] = np.float32(np.frombuffer(data[offset:offset + 4], "<f4")[0] + 0.01).tobytes()
    weights.write_bytes(bytes(data))
    done = subprocess.run([node, "--test", str(NODE_TEST)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMPYVAE_EXPLORER_CASES": str(tmp_path / "cases")})
    assert done.returncode != 0 and "decode, row" in done.stdout, done.stdout[-2000:]


# -- the command and its bad input --------------------------------------------------------------------

@pytest.fixture
def run_dir(small_data, capsys, tmp_path):
    """A one-epoch 784-32-2 run on the small dataset (20 test images)."""
    path = tmp_path / "run"
    status, _, err = run_main(capsys, "train", "--epochs", 1, *TINY, "--data-dir", small_data.data_dir,
                              "--run-dir", path, "--no-figures")
    assert status == 0, err
    return path


def read_manifest(site):
    return json.loads((Path(site) / explore.MANIFEST).read_text())


def test_explore_writes_the_site_with_the_map_and_kl(run_dir, capsys, tmp_path):
    site = tmp_path / "site"
    status, out, err = run_main(capsys, "explore", run_dir, "--out", site)
    assert status == 0 and err == "", err
    assert str(site) in out
    manifest = read_manifest(site)
    assert sorted(p.name for p in site.iterdir()) == sorted(
        [*explore.ASSETS, explore.MANIFEST, manifest["weights"]["file"], manifest["map"]["file"]])
    assert manifest["map"]["count"] == 20 and len(manifest["map"]["labels"]) == 20 and len(manifest["kl"]) == 2
    # the weights file is every parameter, float32 little-endian, at the offsets the manifest gives
    from numpyvae.rundir import load_run
    _, model, _ = load_run(run_dir)
    data = (site / manifest["weights"]["file"]).read_bytes()
    assert len(data) == manifest["weights"]["bytes"] == 4 * model.num_params
    for tensor in manifest["weights"]["tensors"]:
        values = np.frombuffer(data, "<f4", count=int(np.prod(tensor["shape"])), offset=tensor["offset"])
        np.testing.assert_array_equal(values.reshape(tensor["shape"]), model.params[tensor["name"]])
    assert [layer["kind"] for layer in manifest["network"]["decoder"]] == ["linear", "relu", "linear"]
    # run again over its own site: allowed, and the same files
    assert run_main(capsys, "explore", run_dir, "--out", site)[0] == 0
    assert read_manifest(site) == manifest


def test_a_folder_that_is_not_a_run_is_refused(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    status, _, err = run_main(capsys, "explore", tmp_path / "empty", "--out", tmp_path / "site")
    assert status == 1
    assert_one_line_error(err, "not a numpyvae run directory")
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("foreign", ["notes.txt", "index.html", "weights-0123456789ab.bin/"])
def test_an_out_folder_with_files_not_the_explorers_is_refused_and_left_alone(run_dir, capsys, tmp_path, foreign):
    site = tmp_path / "site"
    site.mkdir()
    if foreign.endswith("/"):
        (site / foreign).mkdir()                   # the explorer's name, but a folder
    else:
        (site / foreign).write_text("mine\n")      # an index.html that numpyvae did not write
    before = {p.name: p.is_file() and p.read_bytes() for p in site.iterdir()}
    status, _, err = run_main(capsys, "explore", run_dir, "--out", site)
    assert status == 1
    assert_one_line_error(err, "not the explorer's", foreign.rstrip("/"))
    assert {p.name: p.is_file() and p.read_bytes() for p in site.iterdir()} == before


def test_a_model_whose_images_the_page_cannot_draw_is_refused(tmp_path):
    for shape in [(12,), (3, 8, 8), (1, 8, 200)]:
        model = VAE(input_shape=shape, hidden_dims=(4,), latent_dim=2)
        with pytest.raises(explore.ExploreError, match="draws grey images of shape"):
            explore.write_site(tmp_path / "site", model)
        assert not (tmp_path / "site").exists()


def test_without_the_test_set_the_page_says_so(run_dir, capsys, tmp_path):
    site = tmp_path / "site"
    status, _, err = run_main(capsys, "explore", run_dir, "--out", site, "--data-dir", tmp_path / "nowhere")
    assert status == 0
    assert err.count("\n") == 1 and "warning: the page has no map" in err
    manifest = read_manifest(site)
    assert manifest["map"]["count"] == 0 and "test set was not found" in manifest["map"]["missing"]
    assert manifest["kl"] is None


def test_a_failed_rewrite_leaves_the_old_site_whole(tmp_path, monkeypatch):
    """model.json is written last and names its weights by hash: a write that fails before it leaves the
    old model.json and the weights it names."""
    site = tmp_path / "site"
    explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"]))
    old = read_manifest(site)
    real_write = explore._write

    def fail_on_manifest(path, data):
        if Path(path).name == explore.MANIFEST:
            raise OSError("disk full")
        real_write(path, data)
    monkeypatch.setattr(explore, "_write", fail_on_manifest)
    with pytest.raises(OSError):
        explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"], seed=1))
    assert read_manifest(site) == old
    assert (site / old["weights"]["file"]).stat().st_size == old["weights"]["bytes"]


def test_serve_answers_on_localhost_and_stops_cleanly_on_ctrl_c(run_dir, tmp_path):
    import signal
    import sys
    import urllib.request

    site = tmp_path / "site"
    process = subprocess.Popen([sys.executable, "-m", "numpyvae", "explore", str(run_dir), "--out", str(site),
                                "--serve", "--data-dir", str(tmp_path / "nowhere")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        url = lines[1].split("serving at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:"), lines
        with urllib.request.urlopen(url + "model.json", timeout=30) as response:
            assert json.loads(response.read())["format"] == explore.FORMAT
        with urllib.request.urlopen(url, timeout=30) as response:
            assert explore.FORMAT in response.read().decode()
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped serving" in out and "Traceback" not in err

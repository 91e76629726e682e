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

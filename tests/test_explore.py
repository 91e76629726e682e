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
from conftest import BROWSER_ARGS, CHROMIUM, need
from test_cli import TINY, assert_one_line_error, run_main

REPO = Path(__file__).resolve().parent.parent
NODE_TEST = REPO / "tests" / "js" / "explorer.test.mjs"


# -- small models of every kind ------------------------------------------------------------------------

DENSE = dict(arch="dense", input_shape=(1, 8, 8), hidden_dims=(16, 12), latent_dim=3)
# 7 -> 4 -> 2 and back: the first transposed convolution needs output_padding 1, the second 0
CONV = dict(arch="conv", input_shape=(1, 7, 7), hidden_dims=(3, 4), latent_dim=3)
MODELS = {f"{arch}-{'conditional' if classes else 'plain'}-{likelihood}": dict(settings, num_classes=classes,
                                                                                likelihood=likelihood)
          for arch, settings in (("dense", DENSE), ("conv", CONV)) for classes in (0, 3)
          for likelihood in losses.LIKELIHOODS}
MODELS.update({f"{arch}-vampprior": dict(settings, prior="vamp", pseudo_inputs=3) for arch, settings in (("dense", DENSE),
                                                                                                   ("conv", CONV))})


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
        if "likelihood" in settings:
            assert (np.abs(logits) < losses.SERIES_BELOW).any() and (np.abs(logits) > 1).any(), name
    done = subprocess.run([node, "--test", str(NODE_TEST)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMPYVAE_EXPLORER_CASES": str(cases)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"# pass {len(MODELS) + 2}" in done.stdout and "# fail 0" in done.stdout, done.stdout[-2000:]


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


def test_an_unfinished_write_of_the_explorer_is_its_own(tmp_path):
    """A site whose last rewrite was killed holds atomic_write's temporary files: rewriting it is allowed."""
    site = tmp_path / "site"
    explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"]))
    (site / ".model.json.0123456789ab.tmp").write_text("{")
    (site / ".weights-0123456789ab.bin.0123456789ab.tmp").write_bytes(b"\0")
    explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"], seed=1))
    (site / ".notes.txt.0123456789ab.tmp").write_text("mine")
    with pytest.raises(explore.ExploreError, match="notes.txt"):
        explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"]))


def test_a_rewrite_removes_the_temporary_files_a_killed_write_abandoned(tmp_path):
    """kill -9 cannot remove atomic_write's temporary file (a weights file is MBs): the next rewrite does,
    once it is old enough that no writer can still be alive; a fresh one may be another writer's, and stays."""
    site = tmp_path / "site"
    explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"]))
    abandoned = [site / ".model.json.0123456789ab.tmp", site / ".weights-0123456789ab.bin.0123456789ab.tmp",
                 site / ".index.html.0123456789ab.tmp"]
    for path in abandoned:
        path.write_bytes(b"\0")
        os.utime(path, (1, 1))                      # untouched since 1970
    fresh = site / ".map-0123456789ab.bin.0123456789ab.tmp"
    fresh.write_bytes(b"\0")
    explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"], seed=1))
    assert not any(path.exists() for path in abandoned) and fresh.exists()


def test_an_out_folder_that_cannot_be_made_is_one_plain_line(run_dir, capsys, tmp_path):
    (tmp_path / "picture.png").write_bytes(b"mine")
    status, _, err = run_main(capsys, "explore", run_dir, "--out", tmp_path / "picture.png" / "site")
    assert status == 1
    assert_one_line_error(err, "cannot make the folder --out", "picture.png/site", "Not a directory")
    assert "[Errno" not in err and (tmp_path / "picture.png").read_bytes() == b"mine"


def test_an_old_weights_file_another_explore_removed_meanwhile_is_no_error(tmp_path, monkeypatch):
    """Two explores of one --out folder both clear out the binary files their model.json does not name: the
    one that comes second finds a file listed and already gone, and must still finish."""
    site = tmp_path / "site"
    explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"]))
    stale = site / "weights-000000000000.bin"
    stale.write_bytes(b"\0")
    real_iterdir, calls = Path.iterdir, []

    def listed_then_removed(self):
        entries = list(real_iterdir(self))
        calls.append(self)
        if len(calls) == 2 and stale.exists():      # the clean-up's listing: the other explore unlinks it now
            stale.unlink()
        return iter(entries)
    monkeypatch.setattr(Path, "iterdir", listed_then_removed)
    explore.write_site(site, small_model(MODELS["dense-plain-bernoulli"], seed=1))
    assert len(calls) == 2 and not stale.exists()


def test_a_model_whose_images_the_page_cannot_draw_is_refused(tmp_path):
    for shape in [(12,), (3, 8, 8), (1, 8, 200)]:
        model = VAE(input_shape=shape, hidden_dims=(4,), latent_dim=2)
        with pytest.raises(explore.ExploreError, match="draws grey images of shape"):
            explore.write_site(tmp_path / "site", model)
        assert not (tmp_path / "site").exists()


def make_run(run_dir, **settings):
    """A run directory of a fresh model with `settings`, as train leaves it after its first checkpoint."""
    from dataclasses import asdict

    from numpyvae import checkpoint
    from numpyvae.optim import Adam
    from numpyvae.rundir import TrainConfig, build_model, write_config, write_metrics

    run_dir.mkdir()
    config = TrainConfig(epochs=1, **settings)
    model = build_model(config)
    write_config(run_dir, config)
    write_metrics(run_dir, [])
    checkpoint.save(run_dir / checkpoint.FILENAME, asdict(config), model, Adam(model, lr=config.lr), 0)
    return run_dir


def test_a_run_whose_images_the_page_cannot_draw_is_refused_in_one_line(small_data, capsys, tmp_path):
    run_dir = make_run(tmp_path / "run", input_dim=12, hidden_dim=8, latent_dim=2, data_dir=str(small_data.data_dir))
    status, _, err = run_main(capsys, "explore", run_dir, "--out", tmp_path / "site")
    assert status == 1
    assert_one_line_error(err, "draws grey images of shape (1, H, W)", "input_shape (12,)")
    assert not (tmp_path / "site").exists()


def test_a_run_made_for_other_images_gets_a_page_without_a_map(small_data, capsys, tmp_path):
    run_dir = make_run(tmp_path / "run", input_dim=100, hidden_dim=8, latent_dim=2, data_dir=str(small_data.data_dir))
    status, _, err = run_main(capsys, "explore", run_dir, "--out", tmp_path / "site")
    assert status == 0
    assert_one_line_error(err, "warning: the page has no map", "the test images are 28 x 28, but the model reads "
                                                                 "1 x 10 x 10")
    assert read_manifest(tmp_path / "site")["input_shape"] == [1, 10, 10]


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
    assert "needs it served (--serve)" not in lines[0], lines      # it is being served: no hint to serve it


# -- the page in a real browser ------------------------------------------------------------------------

class Site:
    """An exported site served on 127.0.0.1, the model behind it and the test images of its map."""

    def __init__(self, folder, model, images, labels):
        self.folder, self.model, self.images, self.labels = folder, model, images, labels
        self.server = explore.make_server(folder)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["conv-plain-continuous-bernoulli", "dense-conditional-bernoulli"])
def site(request, tmp_path):
    from conftest import make_fashion_like
    settings = dict(MODELS[request.param], input_shape=(1, 28, 28), hidden_dims=(4, 8) if "conv" in request.param
                    else (32,), latent_dim=4, num_classes=10 if "conditional" in request.param else 0)
    model = small_model(settings)
    images, labels = make_fashion_like(per_class=15, seed=3)
    explore.write_site(tmp_path / "site", model, images, labels, about="a test model")
    served = Site(tmp_path / "site", model, images, labels)
    yield served
    served.close()


class Page:
    """A browser tab on the explorer that records every console error and every request."""

    def __init__(self, browser, url):
        self.url, self.errors, self.requests = url, [], []
        self.page = browser.new_page(viewport={"width": 1440, "height": 1000})
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(url)
        self.page.wait_for_function("window.numpyvae !== undefined")
        self.page.evaluate("() => window.numpyvae.ready.then(() => true)")

    def canvas(self, selector):
        """The canvas's pixels, as drawn: its red channel (the page draws grey), rows of columns."""
        return np.array(self.page.evaluate("""(selector) => {
            const canvas = document.querySelector(selector);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            return Array.from({length: canvas.height}, (_, i) =>
                Array.from({length: canvas.width}, (_, j) => data[4 * (i * canvas.width + j)]));
        }""", selector))

    def view(self, what, *args):
        return self.page.evaluate(f"(args) => window.numpyvae.view.{what}(...args)", list(args))


def expected_grey(model, z, label):
    """The grey levels the page must draw for numpyvae's decode of z: 255 (1 - p), dark on white."""
    y = None if not model.conditional else np.array([label])
    p = model.decode(np.asarray(z, dtype=np.float32)[None], y)[0].reshape(model.input_shape[1:])
    return 255 * (1 - p.astype(np.float64))


def assert_drawn(page, selector, model, z, label):
    drawn = page.canvas(selector)
    worst = np.abs(drawn - expected_grey(model, z, label)).max()
    assert worst <= 1, f"{selector} is off numpyvae's decode by {worst} grey levels"


def test_the_page_draws_what_numpyvae_decodes(browser, site):
    """Move a slider, pick a class, click a map point, draw a stroke: each drawn as numpyvae computes it."""
    page = Page(browser, site.server.url)
    model, manifest = site.model, read_manifest(site.folder)
    label = 0
    if model.conditional:
        label = 3
        page.page.select_option("#class", str(label))
    # the first slider is the coordinate of the largest KL
    j = int(np.argmax(manifest["kl"]))
    first = page.page.locator("#sliders input").first
    assert first.get_attribute("id") == f"slider-{j}"
    first.fill("1.25")
    z = np.zeros(model.latent_dim)
    z[j] = 1.25
    np.testing.assert_allclose(page.view("z"), z)
    assert_drawn(page, "#decoded", model, z, label)
    assert page.page.evaluate("() => window.numpyvae.decode([0, 0, 0, 0], 0) instanceof Float32Array")

    # a click on a test point decodes its latent mean (with its label, for a conditional model)
    x = site.images.reshape(len(site.images), -1).astype(np.float32) / np.float32(255)
    mu, _ = model.encode(x, site.labels.astype(np.int64) if model.conditional else None)
    box = page.page.locator("#map").bounding_box()
    clicked = []
    for i in (7, 42):
        px, py = page.view("mapPosition", i)
        page.page.mouse.click(box["x"] + px, box["y"] + py)
        np.testing.assert_allclose(page.view("z"), mu[i], rtol=0, atol=1e-6)
        label = int(site.labels[i]) if model.conditional else 0
        assert page.view("label") == label
        assert_drawn(page, "#decoded", model, mu[i], label)
        clicked.append(mu[i])
    # and between the last two points clicked: t = 0.5 is their midpoint
    assert page.page.locator("#interpolation canvas").count() == 9
    page.page.locator("#t").fill("0.5")
    np.testing.assert_allclose(page.view("z"), (clicked[0] + clicked[1]) / 2, atol=1e-6)

    # a stroke on the drawing canvas goes through the encoder
    pad = page.page.locator("#drawing").bounding_box()
    page.page.mouse.move(pad["x"] + 0.3 * pad["width"], pad["y"] + 0.2 * pad["height"])
    page.page.mouse.down()
    for step in range(1, 11):
        page.page.mouse.move(pad["x"] + (0.3 + 0.04 * step) * pad["width"],
                             pad["y"] + (0.2 + 0.06 * step) * pad["height"])
    page.page.mouse.up()
    drawing = np.array(page.view("drawing"), dtype=np.float32)
    assert drawing.max() > 0.9 and (drawing > 0.5).sum() >= 10
    y = np.array([label]) if model.conditional else None
    mu_drawn, logvar_drawn = (a[0] for a in model.encode(drawing[None], y))
    encoded = page.page.evaluate("(label) => { const api = window.numpyvae, e = api.encode(api.view.drawing(), label);"
                                 " return [Array.from(e.mu), Array.from(e.logvar)]; }", label)
    np.testing.assert_allclose(encoded[0], mu_drawn, atol=1e-5)
    np.testing.assert_allclose(encoded[1], logvar_drawn, atol=1e-5)
    assert_drawn(page, "#reconstruction", model, mu_drawn, label)
    assert np.abs(page.canvas("#drawing") - 255 * (1 - drawing.reshape(28, 28))).max() <= 1

    assert page.errors == []
    assert all(url.startswith(site.server.url) or url.startswith("data:") for url in page.requests), page.requests
    page.page.close()


def test_a_page_without_a_map_of_other_sized_images_works(browser, tmp_path):
    """A 1x10x12 gaussian model exported with no test set: the sliders and the drawing still work."""
    model = small_model(dict(MODELS["dense-plain-gaussian"], input_shape=(1, 10, 12)))
    explore.write_site(tmp_path / "site", model, missing="no test set in this test")
    served = Site(tmp_path / "site", model, None, None)
    try:
        page = Page(browser, served.server.url)
        assert "No map: no test set in this test." in page.page.inner_text("#map-caption")
        page.page.locator("#slider-2").fill("-2")
        assert_drawn(page, "#decoded", model, [0, 0, -2], 0)
        page.page.locator("#map").click()                         # nothing to click: nothing happens
        assert page.view("z") == [0, 0, -2]
        assert page.canvas("#drawing").shape == (10, 12)
        assert page.errors == []
        page.page.close()
    finally:
        served.close()


def test_the_page_says_why_it_cannot_start(browser, tmp_path):
    """A site whose weights file is gone: the page says so, and ready rejects."""
    explore.write_site(tmp_path / "site", small_model(MODELS["dense-plain-gaussian"]))
    (tmp_path / "site" / read_manifest(tmp_path / "site")["weights"]["file"]).unlink()
    served = Site(tmp_path / "site", None, None, None)
    try:
        page = browser.new_page()
        page.goto(served.server.url)
        page.wait_for_function("window.numpyvae !== undefined")
        message = page.evaluate("() => window.numpyvae.ready.then(() => 'resolved', (error) => error.message)")
        assert "404" in message
        assert "cannot start" in page.inner_text("#problem")
        page.close()
    finally:
        served.close()


# -- the screenshot in README (docs/figures/explorer.png) --------------------------------------------------

# Two strokes and a bar: a pair of trousers, in fractions of the drawing canvas
TROUSERS = [[(0.36, 0.12), (0.64, 0.12)], [(0.38, 0.12), (0.34, 0.88)], [(0.62, 0.12), (0.66, 0.88)]]


def show_off(page, first_class=0, second_class=9):
    """Click the most typical test point of two classes (the nearest to its class's median on the map),
    stop a third of the way between them, and draw a pair of trousers."""
    manifest = read_manifest_from(page)
    xy, labels = np.array(manifest["map"]["xy"]), np.array(manifest["map"]["labels"])
    box = page.page.locator("#map").bounding_box()
    for c in (first_class, second_class):
        members = np.flatnonzero(labels == c)
        i = int(members[np.argmin(np.linalg.norm(xy[members] - np.median(xy[members], axis=0), axis=1))])
        px, py = page.view("mapPosition", i)
        page.page.mouse.click(box["x"] + px, box["y"] + py)
    page.page.locator("#t").fill("0.35")
    pad = page.page.locator("#drawing").bounding_box()
    for stroke in TROUSERS:
        (x0, y0), (x1, y1) = stroke
        page.page.mouse.move(pad["x"] + x0 * pad["width"], pad["y"] + y0 * pad["height"])
        page.page.mouse.down()
        for s in range(1, 21):
            page.page.mouse.move(pad["x"] + (x0 + (x1 - x0) * s / 20) * pad["width"],
                                 pad["y"] + (y0 + (y1 - y0) * s / 20) * pad["height"])
        page.page.mouse.up()


def read_manifest_from(page):
    return page.page.evaluate("() => fetch('model.json').then((response) => response.json())")


def test_the_screenshot_shows_a_page_with_everything_on_it(browser, site, tmp_path):
    page = Page(browser, site.server.url)
    show_off(page)
    page.page.screenshot(path=tmp_path / "explorer.png", full_page=True)
    assert (tmp_path / "explorer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.page.locator("#interpolation canvas").count() == 9 and np.array(page.view("drawing")).max() > 0.9
    assert page.errors == []


def screenshot(run_dir, path, data_dir=None):
    """Export the run in `run_dir`, show it off in Chromium and save the page as the PNG `path`."""
    import tempfile
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        explore.explore(run_dir, Path(folder) / "site", data_dir=data_dir)
        served = Site(Path(folder) / "site", None, None, None)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = Page(browser, served.server.url)
            show_off(page)
            page.page.screenshot(path=path, full_page=True)
            assert page.errors == [], page.errors
        finally:
            browser.close()
            served.close()


if __name__ == "__main__":
    # python tests/test_explore.py RUN_DIR OUT.png: the screenshot in README, of runs/default
    import sys
    screenshot(sys.argv[1], sys.argv[2])

"""`numpyvae explore`: a trained run as a static web page whose model runs in the browser.

    numpyvae explore runs/default --out runs/default/explorer [--serve]

writes into the --out folder everything the page needs, and nothing from the network:

    index.html, explorer.js, forward.js, style.css   the page, copied as they are from numpyvae/explorer/
    model.json        what the page runs: the network as a layer description (read from the model's own
                      layer lists, network.py), each tensor's name, shape and byte offset in the weights
                      file, the likelihood, the KL of each latent coordinate and the map
    weights-HASH.bin  every parameter end to end, in flat-buffer order, little-endian float32
    map-HASH.bin      the map's points: the latent means (N, Z) of N test images, little-endian float32

forward.js is a hand-written forward pass of every layer kind in LAYER_KINDS, driven by that
description; tests/js/explorer.test.mjs holds it to VAE.decode and VAE.encode under Node.

A site is rewritten file by file, each atomically, model.json last: the binary files' names carry
a hash of their contents, so a page loading while the site is rewritten reads the old model.json
with the old weights or the new one with the new, never a mix. An --out folder is used only when
it is missing, empty, or holds nothing but an explorer's files; anything else in it is refused.

Shapes: N = map points, D = pixels, Z = latent.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import math
import re
from pathlib import Path

import numpy as np

from numpyvae import datasets, losses
from numpyvae.atomicfile import atomic_write, remove_abandoned_temp_files, temp_name_pattern
from numpyvae.datafiles import CLASS_NAMES
from numpyvae.conv import Conv2d, ConvTranspose2d
from numpyvae.layers import Flatten, Linear, ReLU, Reshape
from numpyvae.messages import shown
from numpyvae.rundir import RunError, load_run

FORMAT, VERSION = "numpyvae-explorer", 2     # model.json's "format"; every text file of a site names it (2: the prior)
ASSETS_DIR = Path(__file__).parent / "explorer"
ASSETS = ("index.html", "explorer.js", "forward.js", "style.css")
MANIFEST = "model.json"
BINARY_NAME = re.compile(r"(weights|map)-[0-9a-f]{12}\.bin")   # weights-HASH.bin, map-HASH.bin
MAP_POINTS = 3000          # test images on the map: enough to see the classes, little to download (about 0.3 MB)
MAX_SIDE = 128             # the page draws (1, H, W) images up to this side; its drawing canvas is H x W
CHUNK = 1000               # images encoded at a time
# the layer kinds a description may hold: forward.js has a function for each (and for "sigmoid")
LAYER_KINDS = ("linear", "relu", "reshape", "flatten", "conv2d", "conv_transpose2d")


class ExploreError(RunError):
    """The run cannot be explored, or the --out folder cannot take the site; the message says why."""


# -- the network, as the page reads it --------------------------------------------------------------

def describe_layer(layer):
    """One entry of a layer list as JSON: its kind (a function in forward.js) and its settings."""
    if isinstance(layer, Linear):
        return {"kind": "linear", "name": layer.name, "in": layer.fan_in, "out": layer.fan_out}
    if isinstance(layer, ReLU):
        return {"kind": "relu", "name": layer.name}
    if isinstance(layer, Reshape):            # Flatten too: both only rename the entries of a row
        return {"kind": "flatten" if isinstance(layer, Flatten) else "reshape", "name": layer.name,
                "shape": list(layer.shape)}
    if isinstance(layer, (Conv2d, ConvTranspose2d)):
        described = {"kind": "conv2d" if isinstance(layer, Conv2d) else "conv_transpose2d", "name": layer.name,
                     "in_channels": layer.in_channels, "out_channels": layer.out_channels,
                     "kernel_size": layer.kernel_size, "stride": layer.stride, "padding": layer.padding}
        if isinstance(layer, ConvTranspose2d):
            described["output_padding"] = layer.output_padding
        return described
    raise ExploreError(f"the explorer has no JavaScript for layer {layer.name!r} ({type(layer).__name__}); "
                       f"it runs {', '.join(LAYER_KINDS)}")


def describe_likelihood(name):
    """The likelihood's mean as the page computes it, with the constants losses.py computes it from."""
    described = {"name": name}
    if name == "continuous-bernoulli":
        # E[x | l] = sigmoid(l) - d log C / dl; below |l| = series_below, d log C / dl is its Taylor series
        described.update(series_below=losses.SERIES_BELOW, dlog_c_series=list(losses.DLOG_C_SERIES))
    elif name not in ("bernoulli", "gaussian"):          # both show sigmoid(logits)
        raise ExploreError(f"the explorer has no JavaScript for the mean of likelihood {name!r}")
    return described


def check_drawable(input_shape):
    """Refuse (ExploreError) a model whose images the page cannot draw: it draws grey (1, H, W) images."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[0] != 1 or max(shape[1:]) > MAX_SIDE:
        raise ExploreError(f"the explorer draws grey images of shape (1, H, W) with sides up to {MAX_SIDE}; "
                           f"this run's model reads input_shape {shape}")


def network_description(model):
    """The model's four layer lists (network.py) as JSON, wired as vae.py wires them."""
    mu_head, logvar_head = model.heads              # vae.py reads the heads in this order
    return {"features": [describe_layer(layer) for layer in model.features],
            "encoder": [describe_layer(layer) for layer in model.encoder],
            "heads": {"mu": describe_layer(mu_head), "logvar": describe_layer(logvar_head)},
            "decoder": [describe_layer(layer) for layer in model.decoder]}


def weights_file(model):
    """(bytes of every parameter, little-endian float32, end to end; [{name, shape, offset}] in bytes)."""
    tensors, pieces, offset = [], [], 0
    for name, shape in model.shapes.items():                     # flat-buffer order
        values = np.ascontiguousarray(model.backend.to_host(model.params[name]), dtype="<f4")
        tensors.append({"name": name, "shape": list(shape), "offset": offset})
        pieces.append(values.tobytes())
        offset += values.nbytes
    return b"".join(pieces), tensors


# -- the map and the KL of each coordinate ------------------------------------------------------------

def encode_means(model, images, labels=None):
    """uint8 images (N, ...) (and labels, for a conditional model) -> (mu, logvar) on the host, float64, (N, Z)."""
    mus, logvars = [], []
    for start in range(0, len(images), CHUNK):
        x = datasets.to_pixels(images[start:start + CHUNK], model.dtype)                    # (chunk, D)
        y = None if not model.conditional else np.asarray(labels[start:start + CHUNK], dtype=np.int64)
        mu, logvar = model.encode(model.backend.to_device(x, dtype=model.dtype), y)
        mus.append(model.backend.to_host(mu))
        logvars.append(model.backend.to_host(logvar))
    return np.concatenate(mus).astype(np.float64), np.concatenate(logvars).astype(np.float64)


def map_plane(mu):
    """The plane the map shows: (xy (N, 2), mean (Z,), axes (2, Z), explained (2,)), xy = (mu - mean) axes^T.

    Z > 2: the two principal axes of the latent means (PCA), so a click at xy decodes mean + xy axes,
    the point of that plane. Z = 2: the latent plane itself; Z = 1: the line z1, drawn at height 0.
    """
    Z = mu.shape[1]
    if Z <= 2:
        axes = np.eye(2, Z)
        return mu @ axes.T, np.zeros(Z), axes, np.array([1.0, 0.0] if Z == 1 else [0.5, 0.5])
    mean = mu.mean(axis=0)
    _, singular, axes = np.linalg.svd(mu - mean, full_matrices=False)     # axes (Z, Z), rows by variance
    variance = singular ** 2
    return (mu - mean) @ axes[:2].T, mean, axes[:2], variance[:2] / max(variance.sum(), 1e-300)


def map_data(model, images, labels, points=MAP_POINTS):
    """(the map and KL entries of model.json, map-file bytes) from the first `points` test images."""
    images, labels = np.asarray(images)[:points], np.asarray(labels)[:points]
    mu, logvar = encode_means(model, images, labels)                      # (N, Z) each
    kl = losses.gaussian_kl_per_latent(np, mu, logvar)[0].mean(axis=0)   # (Z,) nats per image
    xy, mean, axes, explained = map_plane(mu)
    entry = {"count": len(mu), "labels": labels.astype(int).tolist(),
             "xy": np.round(xy, 4).tolist(), "mean": mean.tolist(), "axes": axes.tolist(),
             "explained": explained.tolist(),
             "about": f"the latent means of the first {len(mu):,} test images"
                      + (f", PCA to 2-D ({100 * explained.sum():.0f}% of their variance)" if mu.shape[1] > 2 else "")}
    return entry, kl.tolist(), np.ascontiguousarray(mu, dtype="<f4").tobytes()


def load_test_set(config, data_dir=None):
    """(images, labels, None) of the run's test set, or (None, None, why not) where it cannot be had."""
    try:
        images, labels = datasets.load_fashion_mnist("test", data_dir if data_dir is not None else config.data_dir,
                                                     download=False)
    except datasets.DataError as error:
        return None, None, f"the test set was not found ({error})"
    if math.prod(images.shape[1:]) != math.prod(config.input_shape):
        return None, None, (f"the test images are {' x '.join(map(str, images.shape[1:]))}, but the model reads "
                            f"{' x '.join(map(str, config.input_shape))}")
    return images, labels, None


# -- the site ------------------------------------------------------------------------------------------

def _is_explorers(entry):
    """Whether `entry`, a file in an --out folder, is one an explorer wrote (or was writing)."""
    name = entry.name
    if not entry.is_file() or entry.is_symlink():
        return False
    if name.startswith(".") and name.endswith(".tmp"):          # atomic_write's .NAME.RANDOM.tmp, left by a kill
        target = name[1:].rsplit(".", 2)[0]
        return bool(temp_name_pattern(target).fullmatch(name)
                    and (target in ASSETS + (MANIFEST,) or BINARY_NAME.fullmatch(target)))
    if BINARY_NAME.fullmatch(name):
        return True
    if name in ASSETS + (MANIFEST,):
        with open(entry, "rb") as file:      # each text file of a site names FORMAT near its top
            return FORMAT.encode() in file.read(400)
    return False


def check_out_dir(out):
    """Refuse (ExploreError) an --out folder that holds anything but an explorer's files; touch nothing."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ExploreError(f"--out {shown(out)} exists and is not a folder; choose another --out")
    for entry in sorted(out.iterdir()):
        if not _is_explorers(entry):
            raise ExploreError(f"--out {shown(out)} holds {entry.name!r}, which is not the explorer's: the explorer "
                               f"writes only into a missing or empty folder or one it wrote; choose another --out")


def _write(path, data):
    with atomic_write(path) as file:
        file.write(data)


def describe_prior(model):
    """p(z) as the page samples it: an equal-weight mixture of diagonal Gaussians (priors.Prior.mixture), one
    component, N(0, I), for the standard normal; a VampPrior's are the encoder's posteriors at its pseudo-inputs."""
    means, logvars = model.prior.mixture(model)
    rounded = lambda a: [[float(f"{v:.7g}") for v in row] for row in a]        # noqa: E731 (float32's digits)
    return {"name": model.spec.prior, "description": type(model.prior).description,
            "means": rounded(means), "logvars": rounded(logvars)}


def _hashed(kind, data):
    return f"{kind}-{hashlib.sha256(data).hexdigest()[:12]}.bin"


def write_site(out, model, images=None, labels=None, about=None, missing=None, points=MAP_POINTS):
    """Write the explorer of `model` into folder `out`; return model.json's path.

    images, labels: test images (N, ...) uint8 and their labels, for the map and the KL order; without
    them the page has no map and keeps the coordinates in their order, and `missing` says why.
    about: a few words on where the model comes from (the run, its epoch), shown on the page.
    """
    check_drawable(model.input_shape)
    network = network_description(model)
    likelihood = describe_likelihood(model.likelihood)
    check_out_dir(out)
    out = Path(out)
    weights, tensors = weights_file(model)
    manifest = {
        "format": FORMAT, "version": VERSION,
        "title": model.spec.describe(), "about": about or "",
        "input_shape": list(model.input_shape), "latent_dim": model.latent_dim, "num_classes": model.num_classes,
        # the data's classes, for the map's labels; a conditional model's labels are the same classes
        "class_names": list(CLASS_NAMES) + [f"class {c}" for c in range(len(CLASS_NAMES), model.num_classes)],
        "likelihood": likelihood, "network": network, "prior": describe_prior(model),
        "weights": {"file": _hashed("weights", weights), "dtype": "float32", "byte_order": "little",
                    "bytes": len(weights), "tensors": tensors},
    }
    files = {manifest["weights"]["file"]: weights}
    if images is not None and len(images):
        entry, kl, mu = map_data(model, images, labels, points)
        entry["file"] = _hashed("map", mu)
        manifest.update(map=entry, kl=kl)
        files[entry["file"]] = mu
    else:
        manifest.update(map={"count": 0, "missing": missing or "no test images were given"}, kl=None)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:          # a file where a folder of the path should be, a folder it may not write in
        raise ExploreError(f"cannot make the folder --out {shown(out)}: {error.strerror or error}") from None
    for name in ASSETS:
        _write(out / name, (ASSETS_DIR / name).read_bytes())
    for name, data in files.items():
        if not (out / name).is_file():      # the name is its contents' hash: the same name, the same bytes
            _write(out / name, data)
    _write(out / MANIFEST, (json.dumps(manifest, separators=(",", ":")) + "\n").encode())
    for entry in out.iterdir():             # the files an older model.json read
        if BINARY_NAME.fullmatch(entry.name) and entry.name not in files:
            entry.unlink(missing_ok=True)   # another explore of this folder may have removed it first
    for suffix in ASSETS + (MANIFEST, ".bin"):  # what writes killed outright (kill -9) left, once surely abandoned
        remove_abandoned_temp_files(out, suffix)
    return out / MANIFEST


def explore(run_dir, out, data_dir=None, backend="numpy"):
    """Write the explorer of the run in `run_dir` into `out`; return (model.json's path, why the map is missing)."""
    config, model, saved = load_run(run_dir, backend=backend)
    check_drawable(model.input_shape)                  # before the test set is read: say it first
    images, labels, missing = load_test_set(config, data_dir)
    where = f"epoch {saved.epoch}" + (f", step {saved.step_in_epoch}" if saved.step_in_epoch else "")
    about = f"{Path(run_dir).name or run_dir} after {where}"
    return write_site(out, model, images, labels, about=about, missing=missing), missing


# -- serving it on this machine ------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site's files, never cached (a rewritten site shows at once), with no log line per request."""
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".json": "application/json", ".bin": "application/octet-stream", ".css": "text/css"}

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):
        pass


class LocalServer(http.server.ThreadingHTTPServer):
    daemon_threads = True      # a browser's open connection must not keep Ctrl-C from ending the process

    def handle_error(self, request, client_address):
        pass                   # a browser closing a connection early is no error of ours


def make_server(directory, port=0):
    """An HTTP server for `directory` on 127.0.0.1 (port 0: a free one); its address is server.url."""
    server = LocalServer(("127.0.0.1", port), functools.partial(QuietHandler, directory=str(directory)))
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    return server


def serve(directory, announce=print):
    """Serve `directory` on 127.0.0.1 until KeyboardInterrupt; announce(url) once it is listening."""
    server = make_server(directory)
    try:
        announce(server.url)
        server.serve_forever()
    finally:
        server.server_close()

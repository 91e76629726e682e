"""Pictures of a trained VAE, written as PNG files with no display needed.

    reconstructions.png  test images above their reconstructions
    samples.png          new clothes: decoded draws z ~ p(z) from the model's prior, the draws
                         `numpyvae generate` makes (a row per class for a conditional VAE)
    pseudo_inputs.png    (a VampPrior only) its learned pseudo-inputs above the decoded means of
                         the mixture components they make
    latent_offset.png    the seed's sweep: a test image's code with one offset added to every coordinate
    traversal.png        one latent coordinate at a time swept from -3 to 3, the rest held at 0
    interpolation.png    decoded straight lines in latent space between two test images
    latent_space.png     the test set's latent means in 2-D (PCA when Z > 2), coloured by class
    manifold.png         (Z = 2 only) the decoder over a grid of the whole latent plane
    loss_curves.png      train and test loss, reconstruction and KL per epoch, from metrics.csv

matplotlib is imported inside the functions and only its object-oriented API is used (a
Figure rendered by Agg, no pyplot): nothing global changes, and `import numpyvae.plots`
stays cheap. Every PNG is written atomically, at a fixed size (no "tight" cropping).
Images of clothes are drawn dark on white, as `numpyvae show-data` draws the data.

A conditional VAE is shown each image with its own label; where the figure decodes codes that
belong to no test image (traversal, manifold) it decodes them as SHOWN_CLASS, named in the title.
Every title ends with a line naming the model (describe): its sizes, likelihood and, for a run
trained on the IWAE bound, the objective and K; that run's loss curves plot the bound it trained on.

Shapes: N = images, D = pixels (side * side), Z = latent.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from numpyvae.datasets import CLASS_NAMES, to_pixels
from numpyvae.losses import gaussian_kl_per_latent
from numpyvae.objectives import get_objective
from numpyvae.pngfile import save_figure

DPI = 100
SEED = 0                 # the prior draws in samples.png
CHUNK = 1000             # images encoded at a time
OFFSETS = np.linspace(-3, 3, 7)        # latent_offset.png: added to every coordinate of a code
TRAVERSAL = np.linspace(-3, 3, 9)      # traversal.png: values given to one coordinate
MAX_TRAVERSED = 10                     # traversal.png shows the most used coordinates, at most this many
INTERPOLATION_STEPS = 9                # decoded points from one image's code to the other's, ends included
MANIFOLD_GRID = 15                     # manifold.png: MANIFOLD_GRID x MANIFOLD_GRID decoded points
SCATTER_POINTS = 5000                  # latent_space.png draws at most this many test images
SHOWN_CLASS = 0                        # the class a conditional VAE's traversal and manifold are decoded as


def figure_size(name, latent_dim):
    """(width, height) in inches of figure `name`; at DPI it gives the PNG's size in pixels."""
    traversed = min(latent_dim, MAX_TRAVERSED)
    return {
        "reconstructions": (8.0, 6.0),
        "pseudo_inputs": (8.0, 6.0),
        "samples": (7.0, 7.6),
        "latent_offset": (8.0, 6.6),
        "traversal": (8.0, 1.6 + 0.75 * traversed),
        "interpolation": (9.0, 4.2),
        "latent_space": (8.0, 6.4),
        "manifold": (8.0, 8.4),
        "loss_curves": (11.0, 3.8),
    }[name]


def pixel_size(name, latent_dim):
    """(width, height) of figure `name` in pixels."""
    width, height = figure_size(name, latent_dim)
    return round(width * DPI), round(height * DPI)


# -- helpers ------------------------------------------------------------------------------------

def _figure(name, latent_dim):
    from matplotlib.figure import Figure     # here, not at import time; Figure.savefig renders with Agg
    return Figure(figsize=figure_size(name, latent_dim), dpi=DPI, layout="constrained")


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, path, DPI)      # marked as numpyvae's; never over a file it did not draw


def _to_images(model, pixels):
    """(N, D) backend or host pixels -> (N, side, side) host array."""
    pixels = model.backend.to_host(pixels)
    side = math.isqrt(pixels.shape[1])
    return pixels.reshape(-1, side, side)


def _conditioned(model, labels, n):
    """The labels a model needs for n images: None for a plain VAE; `labels` (or SHOWN_CLASS) broadcast to n."""
    if not model.conditional:
        return None
    labels = SHOWN_CLASS if labels is None else labels
    return np.broadcast_to(np.asarray(labels, dtype=np.int64), (n,))


def _decode(model, z, labels=None):
    """Host codes (N, Z) (and labels, for a conditional VAE) -> host images (N, side, side)."""
    z = np.asarray(z)
    images = model.decode(model.backend.to_device(z, dtype=model.dtype), _conditioned(model, labels, len(z)))
    return _to_images(model, images)


def _encode(model, images, labels=None):
    """Host uint8 images (and labels) -> (mu, logvar) on the host, each (N, Z), CHUNK images at a time."""
    mus, logvars = [], []
    labels = _conditioned(model, labels, len(images))
    for start in range(0, len(images), CHUNK):
        x = model.backend.to_device(to_pixels(images[start:start + CHUNK]), dtype=model.dtype)  # (chunk, D)
        mu, logvar = model.encode(x, None if labels is None else labels[start:start + CHUNK])
        mus.append(model.backend.to_host(mu))
        logvars.append(model.backend.to_host(logvar))
    return np.concatenate(mus), np.concatenate(logvars)


def _encode_means(model, images, labels=None):
    return _encode(model, images, labels)[0]


def mosaic(images, pad=2, fill=0.0):
    """(R, C, side, side) images -> one (R * (side + pad) + pad, C * (side + pad) + pad) array, in a frame of `fill`."""
    rows, columns, side, _ = images.shape
    step = side + pad
    out = np.full((rows * step + pad, columns * step + pad), fill, dtype=np.float32)
    for r in range(rows):
        for c in range(columns):
            out[pad + r * step: pad + r * step + side, pad + c * step: pad + c * step + side] = images[r, c]
    return out


def _show_grid(ax, images, row_labels=None, column_labels=None):
    """Draw (R, C, side, side) images in [0, 1] as one picture, with labels at the row and column centres."""
    rows, columns, side, _ = images.shape
    pad = 2
    ax.imshow(mosaic(images, pad), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    centre = pad + side / 2 - 0.5
    ax.set_xticks([centre + c * (side + pad) for c in range(columns)] if column_labels is not None else [])
    ax.set_yticks([centre + r * (side + pad) for r in range(rows)] if row_labels is not None else [])
    if column_labels is not None:
        ax.set_xticklabels(column_labels)
    if row_labels is not None:
        ax.set_yticklabels(row_labels)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def one_per_class(labels, count):
    """`count` indices: the first image of each class in class order, then the second of each, then any."""
    labels = np.asarray(labels)
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(len(CLASS_NAMES)) if (labels == c).any()]
    seconds = [int(np.flatnonzero(labels == c)[1]) for c in range(len(CLASS_NAMES)) if (labels == c).sum() > 1]
    return (firsts + seconds + list(range(len(labels))))[:count]


# -- the figures --------------------------------------------------------------------------------

def reconstructions(model, images, path, columns=8, pairs=3, labels=None, about=None):
    """Test images above their reconstructions, decoded from the posterior means: `pairs` pairs of rows."""
    n = min(len(images), columns * pairs) // columns * columns              # whole rows only
    images = np.asarray(images)[:n]
    labels = None if labels is None else np.asarray(labels)[:n]
    shown = to_pixels(images).reshape(-1, columns, *_side(model))                # (pairs, C, side, side)
    rebuilt = _decode(model, _encode_means(model, images, labels), labels)
    return _above_their_decodings(model, "reconstructions", shown, rebuilt, ("test image", "reconstruction"),
                                  "Test images and their reconstructions (decoded from the posterior mean)",
                                  f"{n} test images, in dataset order", path, about)


def samples(model, path, rows=8, columns=8, seed=SEED, about=None):
    """New images: decoded z ~ p(z), the model's prior; for a conditional VAE, a row per class.

    The codes are model.prior_noise's from the backend's generator at `seed`: the draws
    `numpyvae generate -n 64 --seed 0` decodes, on every prior (a VampPrior's mixture included).
    """
    if model.conditional:
        rows = model.num_classes
    z = model.backend.to_host(model.prior_noise(rows * columns, model.backend.rng(seed)))   # (N, Z)
    labels = np.repeat(np.arange(rows), columns) if model.conditional else None
    grid = _decode(model, z, labels).reshape(rows, columns, *_side(model))
    figure = _figure("samples", model.latent_dim)
    ax = figure.subplots()
    if model.conditional:
        _show_grid(ax, grid, row_labels=[class_name(c) for c in range(rows)])
        _title(ax, model, f"New clothes of every class: z ~ {model.prior.formula} decoded with the row's class",
               about)
    else:
        _show_grid(ax, grid)
        _title(ax, model, f"New clothes from the prior: decoder means for z ~ {model.prior.formula}", about)
    ax.set_xlabel(f"{rows * columns} independent draws of z (seed {seed})")
    return _save(figure, path)


def pseudo_inputs(model, inputs, path, columns=8, pairs=3, about=None):
    """A VampPrior's pseudo-inputs u_k (K, D) above the decoder's means at their components' means m_k,
    the first `pairs` rows of `columns`: what each component of the learned prior stands for."""
    total = len(inputs)
    columns = min(columns, total)
    inputs = np.asarray(inputs)[:min(total, columns * pairs) // columns * columns]   # whole rows only
    shown = inputs.reshape(-1, columns, *_side(model))                         # (rows, C, side, side)
    means = model.prior.mixture(model)[0][:len(inputs)]                        # (n, Z): m_k, host
    decoded = _decode(model, means)                                            # the decoder at each m_k
    return _above_their_decodings(model, "pseudo_inputs", shown, decoded, ("pseudo-input", "decoded"),
                                  "The learned prior: pseudo-inputs u_k, and the decoder at their codes m_k",
                                  f"components 1 to {len(inputs)} of {total}; p(z) is their mixture, "
                                  f"(1/K) sum_k q(z | u_k)", path, about)


def _above_their_decodings(model, name, shown, decoded, names, title, xlabel, path, about=None):
    """Figure `name`: each row of images `shown` (R, C, side, side) above the row of their `decoded` images
    (R * C, side, side), the two kinds of row named `names`."""
    grid = np.stack([shown, decoded.reshape(shown.shape)], axis=1).reshape(-1, *shown.shape[1:])   # (2R, C, ...)
    figure = _figure(name, model.latent_dim)
    ax = figure.subplots()
    _show_grid(ax, grid, row_labels=list(names) * len(shown))
    _title(ax, model, title, about)
    ax.set_xlabel(xlabel)
    return _save(figure, path)


def class_name(index):
    return CLASS_NAMES[index] if index < len(CLASS_NAMES) else f"class {index}"


def image_grid(images, path, title, labels=None):
    """Any number of (N, side, side) images in a grid (`numpyvae generate`); classes taking turns get a column each."""
    n, side = len(images), images.shape[1]
    turns = labels is not None and len(set(labels.tolist())) > 1
    columns = min(n, len(set(labels.tolist()))) if turns else min(n, max(1, math.ceil(math.sqrt(n))))
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, side, side), dtype=np.float32)          # blank cells are white
    padded[:n] = images
    from matplotlib.figure import Figure
    figure = Figure(figsize=(1.0 + 0.75 * columns, 1.2 + 0.75 * rows), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    _show_grid(ax, padded.reshape(rows, columns, side, side),
               column_labels=[class_name(int(c)) for c in labels[:columns]] if turns else None)
    ax.set_title(title, fontsize=9)
    return _save(figure, path)


def latent_offset(model, images, labels, path, count=6, offsets=OFFSETS, about=None):
    """The seed's sweep: decode mu(x) + t * (1, ..., 1) for offsets t, for one test image per row."""
    chosen = one_per_class(labels, count)
    classes = np.asarray(labels)[chosen]
    mu = _encode_means(model, np.asarray(images)[chosen], classes)               # (count, Z)
    z = mu[:, None, :] + np.asarray(offsets)[None, :, None]                      # (count, T, Z)
    decoded = _decode(model, z.reshape(-1, model.latent_dim), np.repeat(classes, len(offsets)))
    decoded = decoded.reshape(len(chosen), len(offsets), *_side(model))
    originals = to_pixels(np.asarray(images)[chosen]).reshape(len(chosen), 1, *_side(model))
    grid = np.concatenate([originals, decoded], axis=1)
    figure = _figure("latent_offset", model.latent_dim)
    ax = figure.subplots()
    _show_grid(ax, grid, row_labels=[CLASS_NAMES[int(labels[i])] for i in chosen],
               column_labels=["original"] + [f"{t:+g}" for t in offsets])
    _title(ax, model, "Latent offset sweep: decode(mu(x) + t), t added to every coordinate of the code", about)
    ax.set_xlabel("offset t added to each of the latent coordinates")
    ax.set_ylabel("test image (its class)")
    return _save(figure, path)


def latent_usage(model, images, labels=None):
    """Mean KL per latent coordinate over `images`, (Z,): how much each coordinate is used."""
    mu, logvar = (a.astype(np.float64) for a in _encode(model, images, labels))
    return gaussian_kl_per_latent(np, mu, logvar)[0].mean(axis=0)


def traversal(model, images, path, values=TRAVERSAL, max_dims=MAX_TRAVERSED, labels=None, about=None):
    """One row per latent coordinate (the most used first): decode z = value * e_j, all others 0."""
    usage = latent_usage(model, images, labels)
    dims = np.argsort(-usage, kind="stable")[:max_dims]
    z = np.zeros((len(dims), len(values), model.latent_dim))
    for row, j in enumerate(dims):
        z[row, :, j] = values
    grid = _decode(model, z.reshape(-1, model.latent_dim)).reshape(len(dims), len(values), *_side(model))
    figure = _figure("traversal", model.latent_dim)
    ax = figure.subplots()
    _show_grid(ax, grid, row_labels=[f"z{j + 1} (KL {usage[j]:.2f})" for j in dims],
               column_labels=[f"{v:+g}" for v in values])
    shown = "" if len(dims) == model.latent_dim else f"\nthe {len(dims)} most used of {model.latent_dim} coordinates"
    _title(ax, model, f"Latent traversal: one coordinate swept, the others held at 0{shown}{_as_class(model)}",
           about)
    ax.set_xlabel("value of the swept coordinate")
    ax.set_ylabel("coordinate (mean KL per test image, nats)")
    return _save(figure, path)


def interpolation(model, images, labels, path, pairs=5, steps=INTERPOLATION_STEPS, about=None):
    """Decoded points on the straight line between the latent means of two test images of different classes."""
    chosen = one_per_class(labels, 2 * pairs)
    starts, ends = chosen[0::2], chosen[1::2]
    pairs = min(len(starts), len(ends))
    images = np.asarray(images)
    labels = np.asarray(labels)
    class_a, class_b = labels[starts[:pairs]], labels[ends[:pairs]]
    mu_a, mu_b = _encode_means(model, images[starts[:pairs]], class_a), _encode_means(model, images[ends[:pairs]], class_b)
    t = np.linspace(0, 1, steps)[None, :, None]
    z = (1 - t) * mu_a[:, None, :] + t * mu_b[:, None, :]                        # (pairs, steps, Z)
    # a conditional VAE decodes each row as image A's class: the line then moves only the style
    decoded = _decode(model, z.reshape(-1, model.latent_dim), np.repeat(class_a, steps))
    decoded = decoded.reshape(pairs, steps, *_side(model))
    first = to_pixels(images[starts[:pairs]]).reshape(pairs, 1, *_side(model))
    last = to_pixels(images[ends[:pairs]]).reshape(pairs, 1, *_side(model))
    grid = np.concatenate([first, decoded, last], axis=1)
    figure = _figure("interpolation", model.latent_dim)
    ax = figure.subplots()
    names = [f"{CLASS_NAMES[int(labels[a])]} to {CLASS_NAMES[int(labels[b])]}" for a, b in zip(starts, ends)]
    _show_grid(ax, grid, row_labels=names[:pairs],
               column_labels=["image A"] + [f"{v:.2g}" for v in t.ravel()] + ["image B"])
    _title(ax, model, "Interpolation: decode((1 - t) mu(A) + t mu(B)) between two test images", about)
    ax.set_xlabel("t, the fraction of the way from A's latent mean to B's")
    return _save(figure, path)


def pca(points):
    """(N, Z) -> (N, 2) projection on the two principal axes, and the fraction of variance each explains."""
    centred = points - points.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    explained = variance[:2] / max(variance.sum(), 1e-300)
    return centred @ axes[:2].T, explained


def latent_space(model, images, labels, path, max_points=SCATTER_POINTS, about=None):
    """The test set's latent means as points, coloured by class; PCA to 2-D when Z > 2."""
    images, labels = np.asarray(images)[:max_points], np.asarray(labels)[:max_points]
    mu = _encode_means(model, images, labels).astype(np.float64)
    if model.latent_dim == 1:
        points, axis_labels = np.column_stack([mu[:, 0], np.zeros(len(mu))]), ("z1", "(none: Z = 1)")
    elif model.latent_dim == 2:
        points, axis_labels = mu, ("z1", "z2")
    else:
        points, explained = pca(mu)
        axis_labels = tuple(f"principal component {i + 1} ({100 * e:.0f}% of the variance)"
                            for i, e in enumerate(explained))
    figure = _figure("latent_space", model.latent_dim)
    ax = figure.subplots()
    for c, name in enumerate(CLASS_NAMES):
        mask = labels == c
        if mask.any():                                 # "C0".."C9": matplotlib's ten default colours
            ax.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.6, color=f"C{c}", label=name, linewidths=0)
    ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=4, frameon=False)
    how = "latent means" if model.latent_dim <= 2 else f"{model.latent_dim}-D latent means, PCA"
    _title(ax, model, f"{len(images)} test images in latent space ({how})", about)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    return _save(figure, path)


def manifold(model, path, size=MANIFOLD_GRID, limit=3.0, about=None):
    """(Z = 2) The decoder's output over a size x size grid of the latent plane, z1 across and z2 up."""
    if model.latent_dim != 2:
        raise ValueError(f"the manifold figure needs a 2-D latent space, not {model.latent_dim}-D")
    values = np.linspace(-limit, limit, size)
    z1, z2 = np.meshgrid(values, values[::-1])                                   # z2 grows upwards
    grid = _decode(model, np.column_stack([z1.ravel(), z2.ravel()])).reshape(size, size, *_side(model))   # SHOWN_CLASS
    figure = _figure("manifold", model.latent_dim)
    ax = figure.subplots()
    every = max(1, size // 7)
    _show_grid(ax, grid, row_labels=[f"{v:+.1f}" if i % every == 0 else "" for i, v in enumerate(values[::-1])],
               column_labels=[f"{v:+.1f}" if i % every == 0 else "" for i, v in enumerate(values)])
    _title(ax, model, f"The learned manifold: decoder means over a grid of the 2-D latent space{_as_class(model)}",
           about)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    return _save(figure, path)


def loss_curves(metrics, path, latent_dim=0, about=None, samples=None):
    """Train and test loss, reconstruction and KL per epoch (nats per image), from metrics.csv's rows.

    about: what the title says of the model (describe(model)), if given. An IWAE run's rows (with
    train_iwae, test_iwae) have the loss panel plot the negative bound it trained on, K = samples,
    with the negative ELBO faint beside it for comparison.
    """
    figure = _figure("loss_curves", latent_dim)
    axes = figure.subplots(1, 3)
    epochs = [row["epoch"] for row in metrics]
    iwae = bool(metrics) and "train_iwae" in metrics[0]
    bound = f"IWAE-{samples}" if samples else "IWAE"
    loss_title = (f"Negative {bound} bound (trained on)\nand negative ELBO (faint)" if iwae
                  else "Negative ELBO = reconstruction + KL")
    for ax, (key, title) in zip(axes, (("loss", loss_title), ("recon", "Reconstruction term"), ("kl", "KL term"))):
        if key == "loss" and iwae:
            for split, style in (("train", "o-"), ("test", "s--")):
                ax.plot(epochs, [row[f"{split}_iwae"] for row in metrics], style, label=f"{split} {bound}",
                        markersize=4)
            for split, style in (("train", "o-"), ("test", "s--")):
                ax.plot(epochs, [row[f"{split}_loss"] for row in metrics], style, label=f"{split} ELBO",
                        markersize=3, alpha=0.35, color="grey")
        else:
            for split, style in (("train", "o-"), ("test", "s--")):
                ax.plot(epochs, [row[f"{split}_{key}"] for row in metrics], style, label=split, markersize=4)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.grid(alpha=0.3)
        if not metrics:
            ax.text(0.5, 0.5, "no finished epochs yet", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize="small")
            if len(epochs) <= 12:
                ax.set_xticks(epochs)              # one tick per epoch while they fit
    test = ("test: the ELBO at one fixed posterior sample per image, the bound at K fixed ones" if iwae
            else "test uses one fixed posterior sample per image")
    figure.suptitle(f"Training curves (per-image averages; {test})" + (f"\n{about}" if about else ""), wrap=True)
    return _save(figure, path)


def describe(model, objective="elbo", samples=1):
    """What a figure's title says of the model: its sizes, whether it is conditional, what it was
    trained on (when not the ELBO) and its likelihood."""
    goal = get_objective(objective)
    trained = f"\ntrained on the {goal.title(samples)} samples per image" if goal.takes_samples else ""
    return f"{model.spec.describe()}, {model.likelihood} likelihood{trained}"


def _as_class(model):
    """The line a conditional VAE's title adds where it decodes codes of no test image ("" for a plain VAE)."""
    return f"\nevery image decoded as class {class_name(SHOWN_CLASS)}" if model.conditional else ""


def _title(ax, model, text, about=None):
    """A figure's title, with last lines naming the model it shows (`about`, else describe(model)).

    wrap=True: a line too long for the figure is broken at the figure's edge, never cut off there.
    """
    ax.set_title(f"{text}\n{about or describe(model)}", wrap=True)


def _side(model):
    side = math.isqrt(model.input_dim)
    return side, side


def make_all(model, images, labels, metrics, out_dir, objective="elbo", k=1):
    """Every figure for a model, its test images and labels, and its metrics rows, into out_dir. Returns the paths.

    objective, k: what the run trained on, its TrainConfig's objective and samples (K), named in every title.
    """
    out_dir = Path(out_dir)
    images, labels = np.asarray(images), np.asarray(labels)
    if math.isqrt(model.input_dim) ** 2 != model.input_dim:
        raise ValueError(f"pictures need square images; this model takes {model.input_dim} pixels")
    about = describe(model, objective, k)
    paths = [
        reconstructions(model, images, out_dir / "reconstructions.png", labels=labels, about=about),
        samples(model, out_dir / "samples.png", about=about),
        latent_offset(model, images, labels, out_dir / "latent_offset.png", about=about),
        traversal(model, images, out_dir / "traversal.png", labels=labels, about=about),
        interpolation(model, images, labels, out_dir / "interpolation.png", about=about),
        latent_space(model, images, labels, out_dir / "latent_space.png", about=about),
    ]
    if model.latent_dim == 2:
        paths.append(manifold(model, out_dir / "manifold.png", about=about))
    inputs = model.prior.inputs(model)
    if inputs is not None:
        paths.append(pseudo_inputs(model, inputs, out_dir / "pseudo_inputs.png", about=about))
    paths.append(loss_curves(metrics, out_dir / "loss_curves.png", model.latent_dim, about=about,
                             samples=k if get_objective(objective).takes_samples else None))
    return paths

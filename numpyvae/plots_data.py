"""A first look at the data: a PNG grid of images, each titled with its class name."""
from __future__ import annotations

import math

import numpy as np

from numpyvae.datasets import CLASS_NAMES
from numpyvae.pngfile import check_replaceable, save_figure


def save_data_grid(images, labels, path, n=40, columns=10, class_names=CLASS_NAMES):
    """Write the first `n` images as a PNG grid, `columns` wide, each titled with its class name.

    Args:
        images: (N, 28, 28) uint8 host array (or (N, 784): each row is shown as a square).
        labels: (N,) integer class indices into class_names.
        path:   where the PNG goes (written atomically: temp file, then rename).
    """
    # matplotlib only here, and no pyplot: a Figure with no global state works headless
    # (the Agg renderer) and leaves the caller's own matplotlib backend alone.
    from matplotlib.figure import Figure

    check_replaceable(path)              # before drawing: a file numpyvae did not draw is never replaced
    images = np.asarray(images)[:n]
    labels = np.asarray(labels)[:n]
    side = math.isqrt(images[0].size)
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(1.3 * columns, 1.5 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i].reshape(side, side), cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(class_names[int(labels[i])], fontsize=8)
    save_figure(figure, path, dpi=100)

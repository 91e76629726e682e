"""The benchmark's figure: epoch times, loss curves, and images per second against batch size."""
from __future__ import annotations

import numpy as np

from benchkit.config import LABELS


def plot(report, path):
    """Draw the figure of `report` into the PNG file `path`."""
    figure = draw(report)                 # first: it picks the Agg backend before pyplot loads
    import matplotlib.pyplot as plt
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw(report):
    """The figure of `report`: a matplotlib Figure (the caller saves and closes it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    rows = report["rows"]
    table = report["scaling"].get("batch", {})
    figure, axes = plt.subplots(1, 3 if table else 2, figsize=(15 if table else 10, 4.2))   # no scaling: no panel
    names = [row["label"] for row in rows]
    axes[0].barh(names, [row["seconds_per_epoch"] for row in rows], color="C0")
    for i, row in enumerate(rows):
        axes[0].plot([row["seconds_per_epoch_min"], row["seconds_per_epoch_max"]], [i, i], color="k")
    axes[0].set_xlabel("seconds per epoch (median, min-max)")
    axes[0].set_title("Epoch time")
    for row in rows:
        epochs = np.arange(1, len(row["loss_mean"]) + 1)
        line, = axes[1].plot(epochs, row["loss_mean"], marker="o", label=row["label"])
        axes[1].fill_between(epochs, row["loss_min"], row["loss_max"], color=line.get_color(), alpha=0.2)
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))     # epochs are whole: no tick at 1.5
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("train loss per image (nats)")
    axes[1].set_title("Loss curves")
    axes[1].legend()
    if not table:
        figure.tight_layout()
        return figure
    for name in report["backends"]:
        if name in table:
            values = sorted(int(v) for v in table[name])
            axes[2].plot(values, [table[name][str(v)]["images_per_second"] for v in values], marker="o",
                         label=LABELS[name])
    axes[2].set_xscale("log", base=2)
    axes[2].set_xlabel(f"batch size (hidden {report['config']['hidden_dim']})")
    axes[2].set_ylabel("images per second")
    axes[2].set_title("Scaling with batch size")
    axes[2].legend()
    figure.tight_layout()
    return figure

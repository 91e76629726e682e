"""Every figure: a valid PNG of the size plots.py declares, with a title and labelled axes, written atomically."""
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from numpyvae import plots
from numpyvae.vae import VAE

FIGURES = ["reconstructions", "samples", "latent_offset", "traversal", "interpolation", "latent_space",
           "loss_curves"]
METRICS = [{"epoch": e, "train_loss": 300.0 - e, "train_recon": 280.0 - e, "train_kl": 20.0,
            "test_loss": 301.0 - e, "test_recon": 281.0 - e, "test_kl": 20.0, "seconds": 1.0} for e in (1, 2, 3)]


def png_size(path):
    """(width, height) from a PNG's header, after checking the signature and the header chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    header = data[16:29]
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(kind + header)
    assert data.endswith(b"IEND\xaeB`\x82"), f"{path} is cut short"
    return struct.unpack(">II", header[:8])


def is_a_name(text):
    """True for tick text that says what a row or column is ("reconstruction"), False for "" or a number ("−2.5")."""
    try:
        float(text.replace("\u2212", "-"))                    # matplotlib writes minus signs as U+2212
    except ValueError:
        return bool(text)
    return False


@pytest.fixture
def images_and_labels(small_fashion_mnist):
    return small_fashion_mnist.test


@pytest.mark.parametrize("latent_dim, prior", [(2, "normal"), (5, "normal"), (5, "vamp")])
def test_every_figure_is_a_png_of_the_declared_size(images_and_labels, tmp_path, latent_dim, prior):
    images, labels = images_and_labels
    model = VAE(784, 32, latent_dim, prior=prior, pseudo_inputs=20 if prior == "vamp" else 500, seed=0)
    paths = plots.make_all(model, images, labels, METRICS, tmp_path / "figures")
    expected = (FIGURES[:-1] + (["manifold"] if latent_dim == 2 else []) + (["pseudo_inputs"] if prior == "vamp" else [])
                + ["loss_curves"])
    assert [p.name for p in paths] == [f"{name}.png" for name in expected]
    assert sorted(os.listdir(tmp_path / "figures")) == sorted(f"{name}.png" for name in expected)  # no temp files
    for name, path in zip(expected, paths):
        assert png_size(path) == plots.pixel_size(name, latent_dim), name
        assert path.stat().st_size < 1_000_000       # an untrained decoder draws noise, the worst case for PNG


def test_the_readmes_figures_are_modest():
    """docs/figures holds one figure of each kind from the quality run; each must stay small for the README."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "figures"
    pngs = sorted(docs.glob("*.png"))
    if not pngs:
        pytest.skip(f"no figures in {docs}")
    assert {p.stem for p in pngs} >= set(FIGURES) | {"manifold"}
    for path in pngs:
        png_size(path)
        assert path.stat().st_size < 300_000, path.name


def test_declared_sizes():
    assert plots.pixel_size("samples", 20) == (700, 760)
    assert plots.pixel_size("loss_curves", 20) == (1100, 380)
    assert plots.pixel_size("traversal", 2) == (800, 310)               # one row per latent coordinate...
    assert plots.pixel_size("traversal", 20) == plots.pixel_size("traversal", 10) == (800, 910)   # ...up to 10


def test_every_figure_has_a_title_and_labelled_axes(images_and_labels, tmp_path, monkeypatch):
    images, labels = images_and_labels
    drawn = drawn_figures(monkeypatch)
    plots.make_all(VAE(784, 16, 2, seed=1), images, labels, METRICS, tmp_path)
    assert sorted(drawn) == sorted(FIGURES + ["manifold"])
    for name, figure in drawn.items():
        titled = figure._suptitle is not None or all(ax.get_title() for ax in figure.axes)
        assert titled, f"{name} has no title"
        for ax in figure.axes:
            # an axis that shows ticks says what they are: a label, or ticks that are names (not bare numbers)
            for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
                if axis.get_ticklocs().size:
                    assert label or any(is_a_name(t.get_text()) for t in axis.get_ticklabels()), name
        assert any(ax.get_xlabel() for ax in figure.axes), f"{name} has no axis label"
    assert [t.get_text() for t in drawn["latent_space"].axes[0].get_legend().get_texts()] == list(plots.CLASS_NAMES)
    assert drawn["latent_space"].axes[0].get_xlabel() == "z1"
    assert "principal component" not in drawn["latent_space"].axes[0].get_xlabel()


def test_latent_space_uses_pca_above_two_dimensions(images_and_labels, tmp_path, monkeypatch):
    images, labels = images_and_labels
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
    plots.latent_space(VAE(784, 16, 6, seed=0), images, labels, tmp_path / "x.png")
    assert drawn[0].axes[0].get_xlabel().startswith("principal component 1 (")


def test_pca_finds_the_direction_of_most_variance():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((500, 4)) * np.array([0.1, 5.0, 0.2, 1.0])
    projected, explained = plots.pca(points)
    assert abs(np.corrcoef(projected[:, 0], points[:, 1])[0, 1]) > 0.99
    assert explained[0] > 0.9 and explained[0] > explained[1]


def test_the_manifold_needs_two_latent_dimensions(tmp_path):
    with pytest.raises(ValueError, match="2-D latent space"):
        plots.manifold(VAE(784, 8, 3), tmp_path / "m.png")


def test_loss_curves_with_no_finished_epoch(tmp_path):
    path = plots.loss_curves([], tmp_path / "loss_curves.png")
    assert png_size(path) == plots.pixel_size("loss_curves", 0)


def test_a_failed_figure_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise RuntimeError("renderer crashed")
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        plots.samples(VAE(784, 8, 2), tmp_path / "samples.png")
    assert os.listdir(tmp_path) == []


def test_importing_is_cheap_and_drawing_needs_no_display(tmp_path):
    """No matplotlib on import; no pyplot (which picks a GUI backend) ever, even without a display."""
    code = ("import sys; import numpyvae.cli, numpyvae.train, numpyvae.evaluate, numpyvae.plots as plots; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported too early'; "
            "from numpyvae.vae import VAE; plots.samples(VAE(784, 8, 2), sys.argv[1]); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.png")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert png_size(tmp_path / "s.png") == plots.pixel_size("samples", 2)


@pytest.mark.parametrize("likelihood, conditional", [("continuous-bernoulli", 0), ("gaussian", 10)])
def test_every_figure_title_names_the_likelihood(images_and_labels, tmp_path, monkeypatch, likelihood, conditional):
    """A figure taken out of its run directory still says which model drew it."""
    images, labels = images_and_labels
    titles = {}
    real_save = plots._save

    def keep(figure, path):
        titles[path.stem] = " ".join([figure._suptitle.get_text() if figure._suptitle else ""]
                                     + [ax.get_title() for ax in figure.axes])
        return real_save(figure, path)
    monkeypatch.setattr(plots, "_save", keep)
    model = VAE(784, 16, 2, likelihood=likelihood, num_classes=conditional, seed=1)
    plots.make_all(model, images, labels, METRICS, tmp_path)
    assert sorted(titles) == sorted(FIGURES + ["manifold"])
    for name, title in titles.items():
        assert f"{likelihood} likelihood" in title, f"{name}: {title!r}"
        assert ("conditional" in title) == bool(conditional), f"{name}: {title!r}"


IWAE_METRICS = [dict(row, train_iwae=row["train_loss"] - 4, test_iwae=row["test_loss"] - 3.5) for row in METRICS]


def drawn_figures(monkeypatch):
    """name -> Figure of every figure plots draws while the dict is in use (each still written, as ever)."""
    drawn = {}
    real_save = plots._save

    def keep(figure, path):
        drawn[path.stem] = figure
        return real_save(figure, path)
    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def title_texts(figure):
    return [text for text in [figure._suptitle] + [ax.title for ax in figure.axes] if text is not None and
            text.get_text()]


def test_no_title_is_cut_off_at_the_figures_edge(images_and_labels, tmp_path, monkeypatch):
    """The longest titles: a conditional model trained on the IWAE bound, Z = 2 (so the manifold too).
    A title line wider than the figure used to be cut ("...decoded a"), hiding the class it was decoded as."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    images, labels = images_and_labels
    drawn = drawn_figures(monkeypatch)
    for latent_dim in (2, 20):
        plots.make_all(VAE(784, 16, latent_dim, num_classes=10, seed=1), images, labels, IWAE_METRICS,
                       tmp_path / str(latent_dim), objective="iwae", k=50)
        for name, figure in drawn.items():
            canvas = FigureCanvasAgg(figure)
            canvas.draw()                              # the layout and the wrapping happen while drawing
            for text in title_texts(figure):
                box = text.get_window_extent(canvas.get_renderer())
                assert box.x0 >= 0 and box.x1 <= figure.bbox.width, f"{name}: {text.get_text()!r} is cut off"
        for name in ("traversal",) + (("manifold",) if latent_dim == 2 else ()):
            assert "decoded as class T-shirt/top" in drawn[name].axes[0].get_title(), name
        drawn.clear()


def test_an_iwae_runs_figures_name_the_objective_and_plot_its_bound(images_and_labels, tmp_path, monkeypatch):
    images, labels = images_and_labels
    drawn = drawn_figures(monkeypatch)
    plots.make_all(VAE(784, 16, 2, seed=1), images, labels, IWAE_METRICS, tmp_path, objective="iwae", k=5)
    for name, figure in drawn.items():
        title = " ".join(text.get_text() for text in title_texts(figure))
        assert "trained on the IWAE bound with K = 5" in title, f"{name}: {title!r}"
    loss_panel = drawn["loss_curves"].axes[0]
    assert "IWAE-5 bound" in loss_panel.get_title()
    lines = {line.get_label(): list(line.get_ydata()) for line in loss_panel.get_lines()}
    assert lines["train IWAE-5"] == [row["train_iwae"] for row in IWAE_METRICS]
    assert lines["test IWAE-5"] == [row["test_iwae"] for row in IWAE_METRICS]
    assert lines["train ELBO"] == [row["train_loss"] for row in IWAE_METRICS]       # beside it, for comparison


def test_an_elbo_runs_figures_say_nothing_of_the_iwae_bound(images_and_labels, tmp_path, monkeypatch):
    images, labels = images_and_labels
    drawn = drawn_figures(monkeypatch)
    plots.make_all(VAE(784, 16, 2, seed=1), images, labels, METRICS, tmp_path)
    for name, figure in drawn.items():
        assert "IWAE" not in " ".join(text.get_text() for text in title_texts(figure)), name
    assert [line.get_label() for line in drawn["loss_curves"].axes[0].get_lines()] == ["train", "test"]


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_samples_decode_the_codes_generate_draws_from_the_models_prior(tmp_path, monkeypatch, prior):
    """samples.png is `numpyvae generate -n 64 --seed 0`: codes from the model's own prior (a VampPrior's
    mixture, not N(0, I)), drawn by the backend's generator at the figure's seed."""
    model = VAE(784, 16, 3, prior=prior, pseudo_inputs=7 if prior == "vamp" else 500, seed=2)
    decoded = []
    real_decode = model.decode
    monkeypatch.setattr(model, "decode", lambda z, y=None: decoded.append(np.array(z)) or real_decode(z, y))
    plots.samples(model, tmp_path / "samples.png")
    drawn = model.prior_noise(64, model.backend.rng(plots.SEED))
    np.testing.assert_array_equal(decoded[0], drawn)


def test_the_pseudo_inputs_figure_shows_the_priors_inputs_and_their_decoded_codes(tmp_path, monkeypatch):
    model = VAE(784, 16, 3, prior="vamp", pseudo_inputs=30, seed=2)
    shown, drawn = {}, {}
    monkeypatch.setattr(plots, "_show_grid", lambda ax, grid, row_labels=None, column_labels=None:
                        shown.update(grid=grid, rows=row_labels))
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.update(
        title=figure.axes[0].get_title(), xlabel=figure.axes[0].get_xlabel()) or real_save(figure, path))
    path = plots.pseudo_inputs(model, model.prior.inputs(model), tmp_path / "p.png")
    assert png_size(path) == plots.pixel_size("pseudo_inputs", 3)
    u = model.prior.inputs(model)                                             # (30, 784): 3 rows of 8 shown
    mu = model.encode(u.astype(model.dtype))[0]
    assert shown["rows"] == ["pseudo-input", "decoded"] * 3
    assert shown["grid"].shape == (6, 8, 28, 28)
    np.testing.assert_array_equal(shown["grid"][0::2].reshape(24, 28, 28), u[:24].reshape(24, 28, 28))
    np.testing.assert_allclose(shown["grid"][1::2].reshape(24, 28, 28), model.decode(mu[:24]).reshape(24, 28, 28),
                               rtol=1e-6)
    assert "pseudo-inputs u_k" in drawn["title"] and "VampPrior of 30 pseudo-inputs" in drawn["title"]
    assert drawn["xlabel"].startswith("components 1 to 24 of 30")
    few = VAE(784, 16, 3, prior="vamp", pseudo_inputs=5, seed=2)              # fewer than a row: one row of 5
    plots.pseudo_inputs(few, few.prior.inputs(few), tmp_path / "few.png")
    assert shown["grid"].shape == (2, 5, 28, 28) and drawn["xlabel"].startswith("components 1 to 5 of 5")
    assert VAE(784, 16, 3).prior.inputs(VAE(784, 16, 3)) is None              # N(0, I) has no inputs to show


def test_a_conditional_models_samples_are_a_row_per_class(tmp_path, monkeypatch):
    model = VAE(784, 16, 3, num_classes=10, seed=2)
    shown = {}
    monkeypatch.setattr(plots, "_show_grid", lambda ax, grid, row_labels=None, column_labels=None:
                        shown.update(grid=grid, rows=row_labels))
    plots.samples(model, tmp_path / "s.png")
    assert shown["grid"].shape == (10, 8, 28, 28)
    assert shown["rows"] == [plots.class_name(c) for c in range(10)]

"""`numpyvae reference-state` and its PyTorch checker: the file holds what docs/reference-state.md says,
an independent autograd VAE agrees with it for the dense and the conv model, and a gradient 1e-3 off fails."""
import ast
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from numpyvae import cli, reference_state
from numpyvae.datafiles import DataError
from numpyvae.rundir import TrainConfig
from numpyvae.vae import VAE

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import check_reference_state as checker  # noqa: E402  the other implementation, in PyTorch

SMALL = {   # small models of every kind the checker rebuilds: both architectures, conditional, both objectives
    "dense": ["--hidden-dims", "12,8", "--latent-dim", "3", "--batch-size", "5"],
    "dense-conditional-gaussian": ["--hidden-dims", "10", "--latent-dim", "2", "--batch-size", "4", "--conditional",
                                   "--likelihood", "gaussian", "--beta", "0.5", "--seed", "3"],
    "dense-iwae-continuous-bernoulli": ["--hidden-dims", "9", "--latent-dim", "3", "--batch-size", "4",
                                        "--objective", "iwae", "--samples", "3",
                                        "--likelihood", "continuous-bernoulli"],
    "conv": ["--arch", "conv", "--hidden-dims", "3,4", "--latent-dim", "2", "--batch-size", "3"],
    "conv-conditional-iwae": ["--arch", "conv", "--hidden-dims", "2,3,4", "--latent-dim", "3", "--batch-size", "2",
                              "--conditional", "--objective", "iwae", "--samples", "2", "--seed", "5"],
}


def write_state(tmp_path, flags, name="ref.npz"):
    out = tmp_path / name
    assert cli.main(["reference-state", "--out", str(out), "--synthetic", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    return {kind: write_state(folder, flags, f"{kind}.npz") for kind, flags in SMALL.items()}


@pytest.mark.parametrize("kind", SMALL)
def test_the_pytorch_checker_agrees_with_every_number(states, kind, capsys):
    rows = checker.check(states[kind])
    with np.load(states[kind]) as file:
        grads = [key for key in file.files if key.startswith("grads/")]
    assert [name for name, *_ in rows] == ["loss", "recon", "kl"] + [f"grad {key[6:]}" for key in grads]
    assert all(passed for *_, passed in rows), rows
    assert max(error for _, _, error, _ in rows) < 1e-9       # two float64 implementations: rounding apart
    assert checker.main([str(states[kind])]) == 0
    assert f"{len(rows)} of {len(rows)} agree" in capsys.readouterr().out


def test_the_checker_runs_as_a_script(states):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_reference_state.py"), str(states["conv"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "grad dec.deconv2.W" in done.stdout and "FAIL" not in done.stdout


def perturbed(path, tmp_path, key, change):
    with np.load(path) as file:
        arrays = {name: file[name].copy() for name in file.files}
    arrays[key] = change(arrays[key])
    out = tmp_path / "perturbed.npz"
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("kind", ["dense", "conv", "conv-conditional-iwae"])
def test_each_gradient_1e_3_off_fails_and_is_named(states, kind, tmp_path):
    with np.load(states[kind]) as file:
        grads = [key for key in file.files if key.startswith("grads/")]
    for key in grads:
        rows = checker.check(perturbed(states[kind], tmp_path, key, lambda g: g * (1 + 1e-3)))
        assert [name for name, *_, passed in rows if not passed] == [f"grad {key[6:]}"], key


def test_one_entry_1e_3_off_fails_the_command(states, tmp_path, capsys):
    def nudge_largest(g):
        g.flat[np.argmax(np.abs(g))] *= 1 + 1e-3
        return g
    assert checker.main([str(perturbed(states["dense"], tmp_path, "grads/enc.W", nudge_largest))]) == 1
    assert "FAIL: grad enc.W" in capsys.readouterr().out
    for number in ("loss", "recon", "kl"):
        bad = perturbed(states["conv"], tmp_path, number, lambda v: v * (1 + 1e-3))
        assert [name for name, *_, passed in checker.check(bad) if not passed] == [number]


def test_the_checker_refuses_a_file_it_cannot_check_in_one_line(states, tmp_path, capsys):
    with np.load(states["dense"]) as file:
        config = json.loads(bytes(file["config"]))
    odd = perturbed(states["dense"], tmp_path, "config",
                    lambda _: np.frombuffer(json.dumps({**config, "arch": "transformer"}).encode(), np.uint8))
    assert checker.main([str(odd)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    shapes = perturbed(states["dense"], tmp_path, "params/enc.W", lambda w: w[:-1])
    assert checker.main([str(shapes)]) == 2
    assert "not those of the dense network" in capsys.readouterr().err
    np.save(tmp_path / "one.npy", np.zeros(3))          # a .npy (np.load returns an array, no archive)
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    for path, reason in ((tmp_path / "one.npy", "is not an .npz file"), (tmp_path / "picture.png", "is not an .npz file"),
                         (tmp_path / "missing.npz", "cannot read")):
        assert checker.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err, err


def test_the_checker_is_another_implementation():
    """It imports nothing from numpyvae: what it knows of the model comes from the file and the format document."""
    tree = ast.parse((ROOT / "benchmarks" / "check_reference_state.py").read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [m for m in modules if m.startswith(("numpyvae", "torch_reference"))]


# -- the file itself ------------------------------------------------------------------------------------

def test_the_file_holds_every_documented_key_in_float64(states):
    with np.load(states["conv-conditional-iwae"]) as file:
        arrays = {key: file[key] for key in file.files}
    config = json.loads(bytes(arrays["config"]))
    expected = asdict(TrainConfig(arch="conv", hidden_dims=(2, 3, 4), latent_dim=3, batch_size=2, num_classes=10,
                                  objective="iwae", samples=2, seed=5, dtype="float64"))
    assert config == json.loads(json.dumps(expected))          # as config.json records a run's settings
    info = json.loads(bytes(arrays["info"]))
    assert info["format"] == reference_state.FORMAT and info["data"].startswith("synthetic")
    model = VAE(**TrainConfig.from_dict(config).model_settings(), dtype=np.float64, seed=5)
    assert [k[7:] for k in arrays if k.startswith("params/")] == list(model.params)   # flat-buffer order
    for name, value in model.params.items():
        assert arrays[f"params/{name}"].dtype == np.float64 and arrays[f"grads/{name}"].shape == value.shape
        np.testing.assert_array_equal(arrays[f"params/{name}"], value)               # the seed's initial weights
    assert arrays["x"].shape == (2, 784) and arrays["x"].dtype == np.float64
    assert arrays["eps"].shape == (2, 2, 3) and arrays["y"].dtype == np.int64 and list(arrays["y"]) == [0, 1]
    np.testing.assert_array_equal(arrays["eps"], np.random.default_rng((5, 1)).standard_normal((2, 2, 3)))
    for number in ("loss", "recon", "kl"):
        assert arrays[number].shape == () and arrays[number].dtype == np.float64


def test_the_elbo_numbers_follow_the_documented_convention(states):
    with np.load(states["dense-conditional-gaussian"]) as file:
        loss, recon, kl = (float(file[k]) for k in ("loss", "recon", "kl"))
        x = file["x"]
    assert loss == pytest.approx(recon + 0.5 * kl, rel=1e-14)        # summed over the batch, beta 0.5
    assert recon > 0 and kl > 0 and x.shape[0] == 4


def test_the_synthetic_batch_is_the_documented_formula():
    x, y = reference_state.synthetic_batch(6, (1, 28, 28), 10, seed=4)
    rng = np.random.default_rng((4, 2))
    n = rng.integers(0, 256, (6, 784))
    n[rng.random((6, 784)) < 0.5] = 0
    np.testing.assert_array_equal(x, n / 255)
    assert list(y) == [0, 1, 2, 3, 4, 5] and reference_state.synthetic_batch(3, (1, 28, 28), 0, 4)[1] is None


def test_the_test_set_is_used_when_found_and_the_synthetic_batch_otherwise():
    config = TrainConfig(batch_size=3, num_classes=10)
    images = np.arange(3 * 784).reshape(3, 784) % 256 / 255.0

    def found(batch, num_classes, data_dir):
        return images[:batch], np.array([7, 8, 9])
    x, y, source = reference_state.reference_batch(config, test_set=found)
    assert x is images or np.array_equal(x, images)
    assert list(y) == [7, 8, 9] and source == "fashion-mnist test images 0..2"

    def missing(*args):
        raise DataError("no files")
    with pytest.warns(UserWarning, match="synthetic batch"):
        x, y, source = reference_state.reference_batch(config, test_set=missing)
    np.testing.assert_array_equal(x, reference_state.synthetic_batch(3, (1, 28, 28), 10, 0)[0])
    assert source.startswith("synthetic")


def test_it_takes_trains_model_flags_from_the_same_code():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    train = {a.dest: a for a in commands["train"]._actions}
    mine = {a.dest: a for a in commands["reference-state"]._actions}
    for dest in cli.NETWORK_FLAGS + cli.STEP_FLAGS:
        assert mine[dest].option_strings == train[dest].option_strings and mine[dest].type is train[dest].type
        assert mine[dest].help == train[dest].help and mine[dest].choices == train[dest].choices


# -- refusals and atomic writes -----------------------------------------------------------------------

@pytest.mark.parametrize("out, extra, message", [
    ("ref.txt", [], "must name a .npz file"),
    ("folder.npz", [], "is a directory"),
    ("missing/ref.npz", [], "no directory"),
    ("taken.npz", [], "is not a reference state"),
    ("ref.npz", ["--batch-size", "10001"], "at most 10,000 images"),
    ("ref.npz", ["--samples", "3"], "is for --objective iwae"),
    ("ref.npz", ["--objective", "iwae"], "--objective iwae needs --samples K"),    # as train: not K = 1, silently
    ("ref.npz", ["--batch-size", "0"], "must be at least 1"),
])
def test_bad_flags_and_paths_are_refused_in_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys,
                                                                             out, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.npz").mkdir()
    np.savez(tmp_path / "taken.npz", mine=np.ones(3))
    before = sorted(p.name for p in tmp_path.iterdir())
    code = cli.main(["reference-state", "--out", out, "--synthetic", *extra])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    np.testing.assert_array_equal(np.load(tmp_path / "taken.npz")["mine"], np.ones(3))


def test_a_reference_state_is_replaced_and_ctrl_c_leaves_the_old_file_whole(tmp_path, monkeypatch):
    out = write_state(tmp_path, SMALL["dense"])
    old = out.read_bytes()
    write_state(tmp_path, SMALL["dense"] + ["--seed", "1"])          # a reference state may be replaced
    assert out.read_bytes() != old
    old = out.read_bytes()

    def interrupted(file, **arrays):
        file.write(b"PK half a zip")
        raise KeyboardInterrupt
    monkeypatch.setattr(reference_state.np, "savez", interrupted)
    assert cli.main(["reference-state", "--out", str(out), "--synthetic", *SMALL["dense"]]) == 130
    assert out.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz"]


def test_a_directory_it_may_not_write_in_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reference_state.os, "access", lambda path, mode: False)    # (root may write anywhere)
    monkeypatch.setattr(reference_state, "compute", lambda *args: pytest.fail("work started"))
    assert cli.main(["reference-state", "--out", str(tmp_path / "ref.npz"), "--synthetic"]) == 1
    assert "permission denied" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_the_batch_is_the_test_sets_first_images_or_without_files_the_synthetic_one(small_data, tmp_path, capsys):
    out = tmp_path / "ref.npz"
    assert cli.main(["reference-state", "--out", str(out), "--data-dir", str(small_data.data_dir),
                     "--batch-size", "3", "--hidden-dims", "8", "--latent-dim", "2", "--conditional"]) == 0
    images, labels = small_data.test
    with np.load(out) as file:
        np.testing.assert_array_equal(file["x"], images[:3].reshape(3, -1) / 255.0)
        assert list(file["y"]) == list(labels[:3])
        assert json.loads(bytes(file["info"]))["data"] == "fashion-mnist test images 0..2"
    assert checker.check(out)[-1][-1]
    (tmp_path / "empty").mkdir()
    assert cli.main(["reference-state", "--out", str(out), "--data-dir", str(tmp_path / "empty"),
                     "--batch-size", "3", "--hidden-dims", "8", "--latent-dim", "2"]) == 0
    assert "using a synthetic batch instead" in capsys.readouterr().err
    with np.load(out) as file:
        np.testing.assert_array_equal(file["x"], reference_state.synthetic_batch(3, (1, 28, 28), 0, 0)[0])


def test_a_step_too_big_for_memory_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """A K or batch too big for memory would be ended by the kernel, with no message, as train's step would."""
    from numpyvae import memory
    monkeypatch.setattr(memory, "host_free_bytes", lambda: 1000)     # bytes
    code = cli.main(["reference-state", "--out", str(tmp_path / "ref.npz"), "--synthetic", "--objective", "iwae",
                     "--samples", "50"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "x 50 samples needs about" in err, err
    assert "--samples" in err and "resume" not in err and not list(tmp_path.iterdir())

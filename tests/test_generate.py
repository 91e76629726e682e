"""`numpyvae generate`: new clothes from a run, as a new user would ask for them."""
import numpy as np
import pytest

from numpyvae import generate
from test_cli import TINY, assert_one_line_error, run_main


@pytest.fixture
def runs(small_data, capsys, tmp_path):
    """A plain and a conditional one-epoch run on the small dataset."""
    paths = {}
    for name, extra in (("plain", []), ("conditional", ["--conditional"])):
        paths[name] = tmp_path / name
        status, _, err = run_main(capsys, "train", "--epochs", 1, *TINY, *extra, "--data-dir", small_data.data_dir,
                                  "--run-dir", paths[name], "--no-figures")
        assert status == 0, err
    return paths


def test_plain_run_writes_a_png_grid_and_an_array(runs, capsys, tmp_path):
    status, out, err = run_main(capsys, "generate", runs["plain"], "-n", 12, "--out", tmp_path / "new.png")
    assert status == 0 and err == "" and out.strip() == str(tmp_path / "new.png")
    assert (tmp_path / "new.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, _, _ = run_main(capsys, "generate", runs["plain"], "-n", 5, "--out", tmp_path / "new.npy", "--seed", 3)
    images = np.load(tmp_path / "new.npy")
    assert status == 0 and images.shape == (5, 28, 28) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    run_main(capsys, "generate", runs["plain"], "-n", 5, "--out", tmp_path / "again.npy", "--seed", 3)
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), images)      # the seed decides the draws
    run_main(capsys, "generate", runs["plain"], "-n", 5, "--out", tmp_path / "other.npy", "--seed", 4)
    assert not np.array_equal(np.load(tmp_path / "other.npy"), images)


def test_a_class_by_name_in_any_case_or_by_index(runs, capsys, tmp_path):
    paths = []
    for i, name in enumerate(("sneaker", "SNEAKER", "7", "Ankle boot")):
        paths.append(tmp_path / f"{i}.npy")
        status, _, err = run_main(capsys, "generate", runs["conditional"], "-n", 4, "--out", paths[-1],
                                  "--class", name)
        assert status == 0, err
    sneakers = [np.load(p) for p in paths[:3]]
    np.testing.assert_array_equal(sneakers[0], sneakers[1])
    np.testing.assert_array_equal(sneakers[0], sneakers[2])
    assert not np.array_equal(sneakers[0], np.load(paths[3]))                 # another class, other clothes
    status, _, err = run_main(capsys, "generate", runs["conditional"], "-n", 20, "--out", tmp_path / "all.png")
    assert status == 0, err


def test_without_a_class_the_classes_take_turns(runs, capsys, tmp_path):
    from numpyvae.rundir import load_run
    _, model, _ = load_run(runs["conditional"])
    np.testing.assert_array_equal(generate.labels_for(model, 12), np.arange(12) % 10)
    status, _, err = run_main(capsys, "generate", runs["conditional"], "-n", 12, "--out", tmp_path / "turns.npy")
    assert status == 0, err
    expected = model.sample(12, rng=model.backend.rng(0), y=np.arange(12) % 10).reshape(12, 28, 28)
    np.testing.assert_array_equal(np.load(tmp_path / "turns.npy"), expected)


@pytest.mark.parametrize("args, fragments", [
    (["--class", "shoe"], ["unknown class 'shoe'", "7 'Sneaker'"]),
    (["--class", "10"], ["unknown class '10'"]),
    (["--out-suffix", ".txt"], ["--out must end in .png"]),
    (["-n", "401"], ["-n must be 1 to 400 for a .png file"]),
])
def test_bad_requests_are_one_line_errors_and_write_nothing(runs, capsys, tmp_path, args, fragments):
    out = tmp_path / ("new.txt" if "--out-suffix" in args else "new.png")
    args = [a for a in args if a not in ("--out-suffix", ".txt")]
    status, _, err = run_main(capsys, "generate", runs["conditional"], "--out", out, *args)
    assert status in (1, 2)
    assert_one_line_error(err, *fragments)
    assert not out.exists()


def test_a_plain_run_refuses_a_class(runs, capsys, tmp_path):
    status, _, err = run_main(capsys, "generate", runs["plain"], "--out", tmp_path / "new.png", "--class", "sneaker")
    assert status == 1
    assert_one_line_error(err, "not conditional", "leave out --class")
    assert not (tmp_path / "new.png").exists()


def test_an_existing_file_is_replaced_whole_or_not_at_all(runs, capsys, tmp_path, monkeypatch):
    out = tmp_path / "new.npy"
    out.write_bytes(b"the old contents")
    real_save = generate.np.save

    def save_half_then_fail(file, array):
        file.write(b"half an array")
        raise KeyboardInterrupt
    monkeypatch.setattr(generate.np, "save", save_half_then_fail)
    status, _, _ = run_main(capsys, "generate", runs["plain"], "-n", 3, "--out", out)
    assert status == 130 and out.read_bytes() == b"the old contents"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new.npy")] == []   # no temp file left
    monkeypatch.setattr(generate.np, "save", real_save)
    status, _, _ = run_main(capsys, "generate", runs["plain"], "-n", 3, "--out", out)
    assert status == 0 and np.load(out).shape == (3, 28, 28)

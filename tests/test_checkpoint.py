"""A damaged checkpoint is refused in one line, never loaded with other contents: bit flips, and crafted files."""
import io
import json
import struct
import zipfile
from dataclasses import asdict

import numpy as np
import pytest

from numpyvae import checkpoint
from numpyvae.checkpoint import CheckpointError
from numpyvae.optim import Adam
from numpyvae.rundir import TrainConfig
from numpyvae.vae import VAE

LOCAL_HEADER, CENTRAL_HEADER = 30, 46      # fixed sizes of a zip's local and central directory headers


@pytest.fixture
def small_checkpoint(tmp_path):
    """(path, bytes) of a real checkpoint of a 6-5-3 VAE after 3 Adam steps, mid-epoch (about 7 kB)."""
    model = VAE(6, 5, 3, seed=0, dtype=np.float64)
    optimizer = Adam(model)
    rng = np.random.default_rng(0)
    for _ in range(3):
        model.flat_grads[...] = rng.standard_normal(model.num_params)
        optimizer.step()
    config = asdict(TrainConfig(input_dim=6, hidden_dim=5, latent_dim=3, dtype="float64"))
    path = tmp_path / checkpoint.FILENAME
    checkpoint.save(path, config, model, optimizer, epoch=1, step_in_epoch=2, running=[1.5, 0.25, 32.0],
                    epoch_seconds=0.5)
    return path, path.read_bytes()


def same_contents(a, b):
    """Every field of two loaded checkpoints equal, dtypes included."""
    arrays = [(a.params, b.params), (a.running, b.running), (a.adam["m"], b.adam["m"]), (a.adam["v"], b.adam["v"])]
    return (a.config == b.config and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in arrays)
            and {k: v for k, v in a.adam.items() if k not in "mv"} == {k: v for k, v in b.adam.items() if k not in "mv"}
            and (a.epoch, a.step_in_epoch, a.seed, a.epoch_seconds)
            == (b.epoch, b.step_in_epoch, b.seed, b.epoch_seconds))


def structure_offsets(data):
    """Offsets of every byte of the zip's headers, its central directory, and each member's .npy header."""
    offsets = set()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        central = archive.start_dir
    for info in infos:
        start = info.header_offset
        name_length, extra_length = struct.unpack("<HH", data[start + 26:start + 30])
        body = start + LOCAL_HEADER + name_length + extra_length
        npy_header = 10 + struct.unpack("<H", data[body + 8:body + 10])[0]     # magic, version, length, dict
        offsets.update(range(start, body + npy_header))
    offsets.update(range(central, len(data)))                                # central directory and its end
    return sorted(offsets)


def test_every_bit_flip_is_refused_in_one_line_or_harmless(small_checkpoint):
    """Each header byte gets a flip (all 8 bits for the .npy preambles and length fields), and 300 random
    offsets anywhere: each load ends in CheckpointError or returns exactly the original contents."""
    path, data = small_checkpoint
    original = checkpoint.load(path)
    rng = np.random.default_rng(13)
    flips = [(offset, int(rng.integers(8))) for offset in structure_offsets(data)]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():        # the .npy magic, version and header length: every bit
            start = info.header_offset
            body = start + LOCAL_HEADER + sum(struct.unpack("<HH", data[start + 26:start + 30]))
            flips += [(offset, bit) for offset in range(body, body + 10) for bit in range(8)]
    flips += [(int(offset), int(bit)) for offset, bit in zip(rng.integers(len(data), size=300),
                                                             rng.integers(8, size=300))]
    accepted = 0
    for offset, bit in flips:
        damaged = bytearray(data)
        damaged[offset] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        try:
            loaded = checkpoint.load(path)
        except CheckpointError as error:
            assert "\n" not in str(error), (offset, bit)
            continue
        assert same_contents(loaded, original), f"byte {offset} bit {bit} was accepted with other contents"
        accepted += 1
    assert accepted < len(flips) / 4           # harmless flips exist (timestamps, ...), but most are caught


def rewrite(path, members):
    """Write `members` (name -> bytes) as a stored zip, each with a correct CRC, as np.savez does."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)


def members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def npy_bytes(array):
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def test_a_header_promising_an_absurd_size_is_refused_before_allocating(small_checkpoint):
    path, _ = small_checkpoint
    contents = members(path)
    contents["params.npy"] = _with_shape(contents["params.npy"], 2 ** 40)     # 8 TiB of float64
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(path)


def _with_shape(npy, count):
    """The .npy bytes `npy` with its header's shape replaced by (count,), the data unchanged."""
    stream = io.BytesIO(npy)
    np.lib.format.read_magic(stream)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    payload = npy[stream.tell():]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": fortran, "shape": (count,)})
    return header.getvalue() + payload


def test_a_header_promising_fewer_bytes_than_the_member_holds_is_refused(small_checkpoint):
    """All three (P,) arrays one shorter: their shapes still agree, so only the byte count can tell."""
    path, _ = small_checkpoint
    contents = members(path)
    count = np.lib.format.read_array_header_1_0(_after_magic(contents["params.npy"]))[0][0]
    for name in ("params.npy", "adam_m.npy", "adam_v.npy"):
        contents[name] = _with_shape(contents[name], count - 1)
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(path)


def _after_magic(npy):
    stream = io.BytesIO(npy)
    np.lib.format.read_magic(stream)
    return stream


@pytest.mark.parametrize("name, payload", [
    ("epoch.npy", b"no npy header here"),
    ("config.npy", npy_bytes(np.array([{"evil": True}], dtype=object))),
    ("epoch.npy", npy_bytes(np.complex128(1))),
    ("epoch.npy", npy_bytes(np.float64(1.0))),
], ids=["no .npy header", "pickled object", "complex epoch", "float epoch"])
def test_a_member_that_is_not_a_plain_array_is_refused(small_checkpoint, name, payload):
    path, _ = small_checkpoint
    contents = members(path)
    contents[name] = payload
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match="corrupt|not a numpyvae checkpoint"):
        checkpoint.load(path)


def test_an_extra_member_is_refused(small_checkpoint):
    path, _ = small_checkpoint
    contents = members(path)
    contents["paramz.npy"] = contents["params.npy"]
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match="not a numpyvae checkpoint.*paramz"):
        checkpoint.load(path)


@pytest.mark.parametrize("key, value, message", [
    ("adam_lr", np.float64(0.0), "learning rate"),
    ("adam_lr", np.float64(np.inf), "learning rate"),
    ("adam_beta1", np.float64(1.0), "beta1"),
    ("adam_beta2", np.float64(-0.1), "beta2"),
    ("adam_eps", np.float64(0.0), "eps"),
    ("adam_eps", np.float64(np.nan), "eps"),
    ("adam_t", np.int64(2), "step 5 but Adam has taken 2"),
    ("step_in_epoch", np.int64(9), "step 9 of an epoch"),
])
def test_an_impossible_adam_state_is_refused(small_checkpoint, key, value, message):
    path, _ = small_checkpoint
    contents = members(path)
    contents[f"{key}.npy"] = npy_bytes(value)
    if key == "adam_t":
        contents["step.npy"] = npy_bytes(np.int64(5))
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_a_negative_second_moment_is_refused(small_checkpoint):
    path, _ = small_checkpoint
    contents = members(path)
    v = checkpoint.load(path).adam["v"].copy()
    v[4] = -1e-6
    contents["adam_v.npy"] = npy_bytes(v)
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match="negative"):
        checkpoint.load(path)


def test_an_unreadable_checkpoint_is_called_unreadable_not_corrupt(small_checkpoint, monkeypatch):
    """Tests run as root, which chmod cannot lock out: the refusal is simulated at open()."""
    path, _ = small_checkpoint

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(CheckpointError, match="cannot read .*Permission denied") as error:
        checkpoint.load(path)
    assert "corrupt" not in str(error.value)


def test_a_checkpoint_written_by_np_savez_still_loads(small_checkpoint):
    """Version 1 files as every numpyvae so far wrote them (np.savez to a path) load unchanged."""
    path, _ = small_checkpoint
    original = checkpoint.load(path)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    np.savez(path, **arrays)
    assert same_contents(checkpoint.load(path), original)
    assert json.loads(str(arrays["config"]))["hidden_dims"] == [5]

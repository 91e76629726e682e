"""Minibatches on the device: coverage, order, values, no per-step allocation, no stray transfers."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from numpyvae.backend import CHECK_DTYPE, TRAIN_DTYPE, get_backend
from numpyvae.batches import DeviceDataset
from numpyvae.fakegpu import FakeDeviceArray

BACKENDS = ["numpy", "fakegpu"]


@pytest.fixture
def images(small_fashion_mnist):
    return small_fashion_mnist.train[0]  # (60, 28, 28) uint8


def one_pass(dataset, batch_size, **options):
    """All batches of a pass, copied to the host (the yielded buffer is reused, so copy each)."""
    return [dataset.backend.to_host(x).copy() for x in dataset.batches(batch_size, **options)]


def as_pixels(batches):
    return np.rint(np.concatenate(batches) * 255).astype(np.uint8)  # (N', D) back to 0..255


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_shuffled_pass_yields_every_image_once_in_float32_0_to_1(images, backend_name):
    dataset = DeviceDataset(images, get_backend(backend_name))
    batches = one_pass(dataset, 16, shuffle=True, seed=(0, 0))
    assert [len(b) for b in batches] == [16, 16, 16, 12] and dataset.num_batches(16) == 4
    assert all(b.dtype == TRAIN_DTYPE and b.shape[1] == 784 for b in batches)
    flat = images.reshape(60, 784)
    got = as_pixels(batches)
    assert not np.array_equal(got, flat)  # shuffled...
    np.testing.assert_array_equal(np.sort(got.view("V784").ravel()), np.sort(flat.view("V784").ravel()))  # ...not lost
    np.testing.assert_array_equal(np.concatenate(batches), got / np.float32(255))  # exactly pixel / 255


def test_unshuffled_pass_keeps_the_order_and_float64_on_request(images):
    dataset = DeviceDataset(images, get_backend("numpy"), dtype=CHECK_DTYPE)
    batches = one_pass(dataset, 25)
    assert [len(b) for b in batches] == [25, 25, 10] and batches[0].dtype == np.float64
    np.testing.assert_array_equal(np.concatenate(batches), images.reshape(60, 784) / 255.0)


def test_drop_last_leaves_out_the_partial_batch(images):
    dataset = DeviceDataset(images, get_backend("numpy"))
    batches = one_pass(dataset, 16, shuffle=True, seed=1, drop_last=True)
    assert [len(b) for b in batches] == [16, 16, 16] and dataset.num_batches(16, drop_last=True) == 3
    assert one_pass(dataset, 61, drop_last=True) == []


def test_same_seed_same_order_and_a_new_epoch_a_new_order(images):
    dataset = DeviceDataset(images, get_backend("numpy"))
    epoch0 = np.concatenate(one_pass(dataset, 16, shuffle=True, seed=(7, 0)))
    again = np.concatenate(one_pass(dataset, 16, shuffle=True, seed=(7, 0)))
    epoch1 = np.concatenate(one_pass(dataset, 16, shuffle=True, seed=(7, 1)))
    np.testing.assert_array_equal(epoch0, again)
    assert not np.array_equal(epoch0, epoch1)


def test_steps_allocate_nothing(images):
    dataset = DeviceDataset(np.repeat(images, 4, axis=0), get_backend("numpy"))  # (240, 28, 28)
    passes = dataset.batches(32, shuffle=True, seed=0)
    first = next(passes)
    tracemalloc.start()
    for x in passes:
        assert np.shares_memory(x, first)  # the same buffer, refilled
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8_000  # a (32, 784) batch is 100 kB, its uint8 gather 25 kB: neither was allocated


def test_fake_gpu_moves_images_once_and_the_order_once_per_pass(images):
    backend = get_backend("fakegpu")
    counters = backend.xp.counters
    before = counters.copy()
    dataset = DeviceDataset(images, backend)
    assert counters["to_device"] - before["to_device"] == 1
    assert isinstance(dataset.images, FakeDeviceArray) and dataset.images.dtype == np.uint8  # 1 byte per pixel

    for shuffle, transfers in [(True, 1), (False, 0)]:
        before = counters.copy()
        batches = list(dataset.batches(16, shuffle=shuffle, seed=3))
        assert len(batches) == 4 and all(isinstance(x, FakeDeviceArray) for x in batches)
        assert counters["to_device"] - before["to_device"] == transfers
        assert counters["to_host"] == before["to_host"] and counters["sync"] == before["sync"]


def test_bad_arguments_are_refused(images):
    with pytest.raises(TypeError, match="uint8"):
        DeviceDataset(images.astype(np.float32), get_backend("numpy"))
    dataset = DeviceDataset(images, get_backend("numpy"))
    with pytest.raises(ValueError, match="needs a seed"):
        next(dataset.batches(8, shuffle=True))
    with pytest.raises(ValueError, match="at least 1"):
        next(dataset.batches(0))

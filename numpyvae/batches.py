"""Minibatches from a dataset that lives on the backend's device, moved there once.

Shapes: N = images in the dataset, D = pixels per image (784), B = batch size.

The images cross to the device once, as uint8: 47 MB for the Fashion-MNIST training set,
where a float32 copy would be 188 MB. Each batch is gathered from them and converted to
floats in [0, 1] inside a buffer allocated once per pass, so a training step allocates nothing.
"""
from __future__ import annotations

import numpy as np

from numpyvae.backend import TRAIN_DTYPE


class DeviceDataset:
    """uint8 images on a backend's device, handed out as float minibatches in [0, 1].

    Usage, one pass (epoch) at a time:

        data = DeviceDataset(images, backend)          # images: (N, 28, 28) uint8 on the host
        for x in data.batches(128, shuffle=True, seed=(seed, epoch)):
            ...                                        # x: (B, 784) float32 on the device

    With labels (for a conditional VAE), `labeled_batches` yields (x, y), y (B,) int64 on the device.
    """

    def __init__(self, images, backend, dtype=TRAIN_DTYPE, labels=None):
        """images: (N, ...) uint8 host array; each image is flattened to D values. labels: (N,) or None."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"DeviceDataset holds uint8 pixels; got {images.dtype}")
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.images = backend.to_device(np.ascontiguousarray(images).reshape(len(images), -1))  # (N, D) uint8
        self.num_images, self.dim = self.images.shape
        self.labels = None
        if labels is not None:
            if np.shape(labels) != (self.num_images,):
                raise ValueError(f"{self.num_images} images need {self.num_images} labels, got shape "
                                 f"{np.shape(labels)}")
            self.labels = backend.to_device(np.asarray(labels, dtype=np.int64))           # (N,) one transfer

    def __len__(self):
        return self.num_images

    def num_batches(self, batch_size, drop_last=False):
        """How many batches one pass yields."""
        if drop_last:
            return self.num_images // batch_size
        return -(-self.num_images // batch_size)  # ceiling division

    def batches(self, batch_size, *, shuffle=False, seed=None, drop_last=False):
        """Yield one pass over the images as (B, D) arrays; see labeled_batches for the arguments."""
        for x, _ in self.labeled_batches(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last):
            yield x

    def labeled_batches(self, batch_size, *, shuffle=False, seed=None, drop_last=False):
        """Yield one pass as (x, y): x (B, D) of self.dtype in [0, 1] and y (B,) labels (None without), on the device.

        Args:
            batch_size: B; the last batch is smaller when B does not divide N...
            drop_last:  ...unless this is set, which leaves it out.
            shuffle:    visit the images in a random order drawn from `seed`.
            seed:       int or tuple of ints; pass (seed, epoch) for a new order each epoch
                        that is still the same on every run (and after resuming).
        The yielded arrays are buffers that the next batch overwrites: use them (or copy them)
        before asking for the next one.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if shuffle and seed is None:
            raise ValueError("shuffle=True needs a seed, e.g. seed=(seed, epoch)")
        xp = self.backend.xp
        if shuffle:
            order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(self.num_images)
            order = self.backend.to_device(order)   # (N,) one transfer per pass, not per batch
        else:
            order = xp.arange(self.num_images)      # (N,) made on the device
        # Allocated per pass, not kept on self: two passes running at once must not share them.
        # A batch never holds more than the N images there are: a batch size of 2**62 is one batch of N.
        rows_per_batch = min(batch_size, self.num_images)
        gathered = xp.empty((rows_per_batch, self.dim), dtype=np.uint8)  # (B, D) uint8
        batch = xp.empty((rows_per_batch, self.dim), dtype=self.dtype)   # (B, D) float
        labels = None if self.labels is None else xp.empty(rows_per_batch, dtype=np.int64)   # (B,)
        # NumPy's take copies through a hidden temporary unless told the indices are valid
        # (any mode but "raise"); CuPy's take has no mode argument and always wraps.
        take_options = {} if self.backend.name == "cupy" else {"mode": "wrap"}
        stop = self.num_batches(batch_size, drop_last) * batch_size
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]                  # (B,) a view, no transfer
            rows = min(batch_size, self.num_images - start)          # B, or fewer for the last batch
            xp.take(self.images, index, axis=0, out=gathered[:rows], **take_options)
            # Cast, then scale in place: a mixed-type divide would cast through a hidden buffer.
            xp.copyto(batch[:rows], gathered[:rows])
            xp.divide(batch[:rows], 255, out=batch[:rows])
            if labels is not None:
                xp.take(self.labels, index, axis=0, out=labels[:rows], **take_options)
            yield batch[:rows], None if labels is None else labels[:rows]

"""numpyvae.load_run's Run: turning images into the pixels the model reads."""
import numpy as np
import pytest

from numpyvae import VAE
from numpyvae.rundir import TrainConfig
from numpyvae.trained import Run


def run_of(dtype=np.float32):
    return Run(VAE(6, 5, 3, dtype=dtype), TrainConfig(), None, None)


def test_pixels_divides_0_255_integer_images_by_255():
    images = np.array([[[0, 255, 51], [102, 204, 255]]], dtype=np.uint8)     # (1, 2, 3)
    pixels = run_of().pixels(images)
    assert pixels.dtype == np.float32 and pixels.shape == (1, 6)
    np.testing.assert_allclose(pixels, [[0, 1, 0.2, 0.4, 0.8, 1]], rtol=1e-6)


def test_pixels_passes_float_images_through_undivided():
    """Float images are pixels already: dividing by 255 again would make every image nearly black."""
    images = np.array([[[0.0, 1.0, 0.25], [0.5, 0.75, 1.0]]])                 # float64, (1, 2, 3)
    pixels = run_of().pixels(images)
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, images.reshape(1, 6).astype(np.float32))


@pytest.mark.parametrize("images, message", [
    (np.full((2, 2, 3), 255.0), r"float images must be pixels in \[0, 1\] \(divide 0-255 images by 255\)"),
    (np.full((2, 2, 3), np.nan), r"float images must be pixels in \[0, 1\]"),
    (np.full((2, 2, 3), 256, dtype=np.int32), "integer images must hold 0-255"),
    (np.full((2, 2, 3), -1, dtype=np.int16), "integer images must hold 0-255"),
])
def test_pixels_refuses_values_that_are_neither_0_255_integers_nor_pixels(images, message):
    with pytest.raises(ValueError, match=message):
        run_of().pixels(images)


def test_pixels_refuses_what_is_not_a_number():
    with pytest.raises(TypeError, match="0-255 integers or float pixels"):
        run_of().pixels(np.full((1, 2, 3), "a"))

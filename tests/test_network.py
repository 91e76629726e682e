"""The network as data: ModelSpec, the architectures built from it, and the dense model kept bit for bit."""
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from numpyvae import VAE, Adam, network
from numpyvae.network import ARCHITECTURES, ModelSpec, build_network, legacy_input_shape, make_spec
from numpyvae.vae import num_parameters

COMPAT = Path(__file__).parent / "data" / "dense_compat.json"


def three_adam_steps(**settings):
    """Loss bits and a hash of params and grads after 3 Adam steps on a fixed batch (as recorded in COMPAT)."""
    rng = np.random.default_rng(2026)
    x = rng.uniform(0, 1, (64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    model = VAE(784, 400, 20, seed=3, **settings)
    opt = Adam(model, lr=1e-3)
    losses = []
    for _ in range(3):
        eps = rng.standard_normal((64, 20)).astype(np.float32)
        total, _, _ = model.loss_and_grads(x, eps=eps, y=y if model.conditional else None)
        opt.step()
        losses.append(float(total).hex())
    digest = hashlib.sha256(model.flat_params.tobytes() + model.flat_grads.tobytes()).hexdigest()
    return {"losses": losses, "sha256": digest}


def blas_key():
    from threadpoolctl import threadpool_info
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    return f"{blas[0]['internal_api']} {blas[0].get('architecture')} {blas[0]['num_threads']}" if blas else "none"


@pytest.mark.parametrize("name, settings", [("default", {}), ("conditional", {"num_classes": 10}),
                                            ("gaussian", {"likelihood": "gaussian"})])
def test_the_dense_model_is_bit_for_bit_what_it_was_before_the_network_became_data(name, settings):
    """Recorded at 9c42cae (before ModelSpec) under OpenBLAS 0.3.31, Haswell kernel, 1 and 2 threads.

    Under that BLAS every bit of the parameters and gradients must match, and the losses too, to
    within one float32 step: since each likelihood is written once (losses.py), the batch's loss is
    the sum of its rows' losses, which rounds differently from the sum it used to be by at most one
    step (measured under OPENBLAS_CORETYPE=Haswell: 0 or 1 in each of the 18 recorded losses), while
    the gradients, and so the training, are untouched. Under another BLAS (whose sums round
    differently) the losses must still agree to float32 precision.
    """
    pytest.importorskip("threadpoolctl", reason="names the BLAS the recording was made with")
    recorded = json.loads(COMPAT.read_text())
    ours = three_adam_steps(**settings)
    key = blas_key()
    if key in recorded:
        assert ours["sha256"] == recorded[key][name]["sha256"]
        for a, b in zip(ours["losses"], recorded[key][name]["losses"]):
            a, b = np.float32(float.fromhex(a)), np.float32(float.fromhex(b))
            assert abs(a - b) <= np.spacing(max(a, b)), (a, b)
    else:
        theirs = next(iter(recorded.values()))[name]
        for a, b in zip(ours["losses"], theirs["losses"]):
            assert float.fromhex(a) == pytest.approx(float.fromhex(b), rel=1e-5)


def test_the_older_names_build_the_same_dense_model():
    old = VAE(784, 400, 20, seed=1)
    new = VAE(input_shape=(1, 28, 28), arch="dense", hidden_dims=(400,), latent_dim=20, seed=1)
    assert old.config == new.config == VAE(**new.config).config
    assert list(old.params) == ["enc.W", "enc.b", "mu.W", "mu.b", "logvar.W", "logvar.b", "dec.W", "dec.b",
                                "out.W", "out.b"]
    np.testing.assert_array_equal(old.flat_params, new.flat_params)
    assert legacy_input_shape(784) == (1, 28, 28) and legacy_input_shape(6) == (6,)


def test_depth_and_widths_are_settings():
    model = VAE(hidden_dims=(512, 256), latent_dim=20, seed=0)
    assert {name: shape for name, shape in model.shapes.items() if name.endswith(".W")} == {
        "enc.W": (784, 512), "enc2.W": (512, 256), "mu.W": (256, 20), "logvar.W": (256, 20),
        "dec.W": (20, 256), "dec2.W": (256, 512), "out.W": (512, 784)}
    x = np.random.default_rng(0).uniform(0, 1, (3, 784))
    assert model.decode(model.encode(x)[0]).shape == (3, 784)


def test_the_conv_model_is_tensorflows_cvae_shape():
    spec = ModelSpec(arch="conv")
    assert spec.hidden_dims == (32, 64)
    assert num_parameters(build_network(spec)) == 228_905
    model = VAE(arch="conv", seed=0)
    assert model.num_params == 228_905
    assert {name: shape for name, shape in model.shapes.items() if name.endswith(".W")} == {
        "enc.conv1.W": (32, 1, 3, 3), "enc.conv2.W": (64, 32, 3, 3), "mu.W": (3136, 20), "logvar.W": (3136, 20),
        "dec.W": (20, 3136), "dec.deconv1.W": (64, 32, 3, 3), "dec.deconv2.W": (32, 1, 3, 3)}
    # labels join after the flatten and beside z
    conditional = VAE(arch="conv", num_classes=10, seed=0)
    assert conditional.shapes["mu.W"] == (3136 + 10, 20) and conditional.shapes["dec.W"] == (20 + 10, 3136)


@pytest.mark.parametrize("settings, message", [
    ({"arch": "conv", "hidden_dim": 400}, "hidden_dim is the dense model's one hidden width and means nothing "
                                          "for arch 'conv'"),
    ({"arch": "recurrent"}, "arch must be one of dense, conv"),
    ({"hidden_dims": ()}, "hidden_dims must be one or more positive integers"),
    ({"hidden_dims": (400, 0)}, "hidden_dims must be one or more positive integers"),
    ({"hidden_dims": (400,), "hidden_dim": 300}, "hidden_dim 300 disagrees with hidden_dims"),
    ({"input_shape": (784,), "arch": "conv"}, "a conv VAE reads images"),
    ({"input_dim": 700, "input_shape": (1, 28, 28)}, "input_dim 700 disagrees with input_shape"),
])
def test_a_setting_that_cannot_work_is_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        make_spec(**settings)
    assert "\n" not in str(error.value)


def test_every_architecture_chains_its_shapes():
    for arch in ARCHITECTURES:
        network = build_network(ModelSpec(arch=arch, latent_dim=3, num_classes=2))
        assert all(hasattr(layer, "output_shape") for layer in network.layers)


def test_a_spec_read_from_json_lists_equals_the_one_written_with_tuples_and_cannot_be_changed():
    """config.json gives lists; a spec holds tuples (network.py: 'so specs (and configs) compare equal')."""
    import dataclasses
    from_json = ModelSpec(input_shape=[1, 28, 28], arch="conv", hidden_dims=[4, 8], latent_dim=3)
    written = ModelSpec(input_shape=(1, 28, 28), arch="conv", hidden_dims=(4, 8), latent_dim=3)
    assert from_json == written and hash(from_json) == hash(written)
    assert type(from_json.input_shape) is tuple and type(from_json.hidden_dims) is tuple
    with pytest.raises(dataclasses.FrozenInstanceError):      # a spec is a value: change it by making another
        written.latent_dim = 5


def _decoder_only(spec, *decoder):
    from numpyvae.network import Network
    return Network([], [], [], list(decoder))


def test_widest_row_counts_a_convolutions_patch_matrix_from_its_smaller_image_and_larger_channels():
    """widest_row's docstring: k * k numbers per pixel of the smaller image and channel of the larger one.
    Worked by hand from the layers' patch matrices (conv.py): a Conv2d unfolds its input into
    (C_in k k, H_out W_out) per image; a transposed one expands (C_out k k, H_in W_in) per image."""
    from numpyvae.conv import Conv2d, ConvTranspose2d
    from numpyvae.layers import Linear, Reshape
    spec = ModelSpec(input_shape=(4,), latent_dim=2)
    # a stride-2 convolution 2x8x8 -> 3x4x4: 3 * 3 * (4 * 4 pixels out) * (2 channels in) = 288
    down = _decoder_only(spec, Linear("dec", 2, 2 * 8 * 8), Reshape("dec.image", (2, 8, 8)),
                         Conv2d("dec.conv", 2, 3, 3, 2, 1))
    assert network.widest_row(spec, down) == 3 * 3 * 16 * 2
    # a stride-1 transposed convolution 2x4x4 -> 5x4x4 (images of equal size): 3 * 3 * 16 * (5 channels out) = 720
    same = _decoder_only(spec, Linear("dec", 2, 2 * 4 * 4), Reshape("dec.image", (2, 4, 4)),
                         ConvTranspose2d("dec.deconv", 2, 5, 3, 1, 1))
    assert network.widest_row(spec, same) == 3 * 3 * 16 * 5

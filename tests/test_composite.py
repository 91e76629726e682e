"""A composite layer (layers.Residual): its inner layers own parameters, draw their initial weights, are
visited by gradcheck's ReLU detector and checked alone, and its gradient is checked like every other."""
import numpy as np
import pytest

from numpyvae import VAE, layers, network
from numpyvae.gradcheck import check_batch, check_layer, check_model, layer_inputs, relu_signs
from numpyvae.gradcheck_plan import live_seed


def residual_network(spec):
    """The dense network with a residual block x + Linear(ReLU(Linear(x))) after the encoder's first layer."""
    dense = network.dense_network(spec)
    H = spec.hidden_dims[0]
    block = layers.Residual("enc.res", [layers.Linear("enc.res1", H, H), layers.ReLU("enc.res1.relu"),
                                        layers.Linear("enc.res2", H, H)])
    return network.Network(dense.features, dense.encoder + [block, layers.ReLU("enc.res.relu")], dense.heads,
                           dense.decoder)


@pytest.fixture
def residual_arch():
    network.ARCHITECTURES["residual"] = network.Architecture(residual_network, (5,), "the hidden widths")
    yield {"input_dim": 6, "arch": "residual", "hidden_dims": (5,), "latent_dim": 3}
    del network.ARCHITECTURES["residual"]


def test_the_block_owns_and_initializes_its_inner_layers(residual_arch):
    model = VAE(**residual_arch, dtype=np.float64, seed=0)
    assert ["enc.res1.W", "enc.res1.b", "enc.res2.W", "enc.res2.b"] == [n for n in model.params if "res" in n]
    bound = 1 / np.sqrt(5)                                    # each inner Linear draws at its own fan-in
    assert 0 < np.abs(model.params["enc.res1.W"]).max() <= bound


@pytest.mark.parametrize("objective, samples", [("elbo", None), ("iwae", 3)])
def test_every_gradient_through_the_block_against_finite_differences(residual_arch, objective, samples):
    settings = residual_arch
    model = VAE(**settings, dtype=np.float64, seed=live_seed(settings, 0, objective, samples))
    rows = check_model(model, *check_batch(model, batch=5, seed=0, samples=samples), objective=objective)
    assert {"enc.res1.W", "enc.res2.b"} <= {row.name for row in rows}
    assert all(row.passed for row in rows), [(row.name, row.reason) for row in rows if not row.passed]
    assert {row.layer for row in rows if row.name == "enc.res1.W"} == {"Linear enc.res1"}


def test_gradcheck_sees_the_relu_inside_the_block_and_checks_each_inner_layer_alone(residual_arch):
    model = VAE(**residual_arch, dtype=np.float64, seed=0)
    x, eps = check_batch(model, seed=0)[:2]
    seen = [layer.name for layer, _ in relu_signs(model, x, eps)[1]]
    assert "enc.res1.relu" in seen                            # the inner ReLU's kinks are stepped around
    inside = [layer.name for layer, _ in layer_inputs(model)]
    assert inside.index("enc.res") < inside.index("enc.res1") < inside.index("enc.res2")
    assert all(row.passed for row in check_layer(model.network.encoder[2], (5,)))


def test_a_wrong_block_backward_fails(residual_arch, monkeypatch):
    """The bug: forget the straight path (dx = f's backward only)."""
    def forgetful(self, xp, params, grads, dy, cache, ws=None, need_dx=True):
        return layers.sequence_backward(xp, self.layers, params, grads, dy, cache, ws)
    monkeypatch.setattr(layers.Residual, "backward", forgetful)
    settings = residual_arch
    model = VAE(**settings, dtype=np.float64, seed=live_seed(settings, 0))
    rows = check_model(model, *check_batch(model, batch=5, seed=0))
    failed = {row.name for row in rows if not row.passed}
    assert "enc.W" in failed and "out.W" not in failed        # before the block: wrong; after it: right
    assert not all(row.passed for row in check_layer(model.network.encoder[2], (5,)))


def test_the_block_matches_autograd(residual_arch):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_reference import TorchVAE
    model = VAE(**residual_arch, dtype=np.float64, seed=1)
    x, eps = check_batch(model, batch=4, seed=2)[:2]
    ours = float(model.loss_and_grads(x, eps=eps)[0])
    reference = TorchVAE(model)
    loss = reference.loss(torch.from_numpy(x), torch.from_numpy(eps))
    loss.backward()
    assert abs(ours - loss.item()) <= 1e-12 * abs(ours)
    for name, grad in reference.grads().items():
        assert np.abs(model.grads[name] - grad).max() <= 1e-10 * max(np.abs(grad).max(), 1e-300), name

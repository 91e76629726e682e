"""--init-output-bias mean: the decoder's output bias at the logit of the training mean (Lawson et al. 2019)."""
import json

import numpy as np
import pytest

from numpyvae import checkpoint, cli, losses, output_bias, rundir, train
from numpyvae.layers import Linear, ReLU
from numpyvae.train import ConfigError, TrainConfig
from numpyvae.vae import VAE


def run(config, run_dir, resume=False):
    return train.train(config, run_dir, resume=resume, log=lambda line: None, progress=False)


def saved_params(run_dir, model):
    """The checkpoint's parameters as named arrays, laid out as `model`'s."""
    flat = checkpoint.load(run_dir / checkpoint.FILENAME).params
    return {name: flat[start:start + view.size].reshape(view.shape)
            for name, view, start in zip(model.params, model.params.values(),
                                         np.cumsum([0] + [v.size for v in model.params.values()]))}


def expected_logits(images):
    """logit(clip(mean pixel, 1e-4, 1 - 1e-4)) per pixel, written out independently of output_bias.py."""
    mean = np.clip(images.reshape(len(images), -1).mean(axis=0) / 255.0, 1e-4, 1 - 1e-4)   # (D,)
    return np.log(mean / (1 - mean))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_bias_is_the_logit_of_the_mean_where_the_mean_is_the_sigmoid(likelihood):
    means = np.array([1e-4, 0.003, 0.25, 0.5, 0.75, 0.97, 1 - 1e-4])
    logits = output_bias.logits_for_mean(losses.LIKELIHOODS[likelihood], means)
    np.testing.assert_allclose(logits, np.log(means / (1 - means)), rtol=0, atol=1e-12)


def test_the_continuous_bernoulli_gets_the_value_its_own_mean_needs():
    """Its mean is 1/(1 - e^-l) - 1/l, not sigmoid(l): the logit would start it elsewhere."""
    means = np.array([1e-4, 0.05, 0.3, 0.8, 1 - 1e-4])
    logits = output_bias.logits_for_mean(losses.LIKELIHOODS["continuous-bernoulli"], means)
    with np.errstate(over="ignore"):                    # exp(1e4) is inf: 1/(1 - e^-l) is then 0
        np.testing.assert_allclose(-1 / np.expm1(-logits) - 1 / logits, means, rtol=1e-9)
    assert abs(logits[3] - np.log(0.8 / 0.2)) > 1      # far from the logit: 0.8 needs l = 4.9, not 1.4
    assert abs(output_bias.logits_for_mean(losses.LIKELIHOODS["continuous-bernoulli"], [0.5])[0]) < 1e-9


@pytest.mark.parametrize("binarize", [False, True])
def test_a_new_run_starts_with_the_bias_at_the_logit_of_the_training_mean(tiny_config, small_data, tmp_path,
                                                                          binarize):
    """Epoch 0's checkpoint (the weights before any step): out.b is the logit of the mean intensity,
    also with --binarize (a binary pixel's mean is its intensity); every other weight is the default run's."""
    mean_run, default_run = tmp_path / "mean", tmp_path / "default"
    result = run(tiny_config(epochs=0, binarize=binarize, init_output_bias="mean"), mean_run)
    run(tiny_config(epochs=0, binarize=binarize), default_run)
    with_mean, without = saved_params(mean_run, result.model), saved_params(default_run, result.model)
    np.testing.assert_allclose(with_mean["out.b"], expected_logits(small_data.train[0]), rtol=1e-6)
    assert with_mean["out.b"].dtype == np.float32
    assert not np.allclose(without["out.b"], with_mean["out.b"])
    for name in with_mean:
        if name != "out.b":
            np.testing.assert_array_equal(with_mean[name], without[name], err_msg=name)


def test_the_default_leaves_every_weight_as_it_was(tiny_config, tmp_path):
    """--init-output-bias default is the run without the flag, bit for bit: the recorded hashes hold."""
    first = run(tiny_config(epochs=1, init_output_bias="default"), tmp_path / "flag")
    second = run(tiny_config(epochs=1), tmp_path / "no-flag")
    assert np.array_equal(first.model.flat_params, second.model.flat_params)
    run(tiny_config(epochs=0), tmp_path / "start")
    drawn = VAE(hidden_dims=(32,), latent_dim=2, seed=0).flat_params      # init_params, untouched
    assert np.array_equal(checkpoint.load(tmp_path / "start" / checkpoint.FILENAME).params, drawn)


def test_a_resume_does_not_reapply_it(tiny_config, tmp_path, monkeypatch):
    """Not called on resume; and were it applied after the checkpoint's restore, it would pull out.b back
    to the mean after epoch 1 and the resumed run would differ from the straight one."""
    run(tiny_config(epochs=2, init_output_bias="mean"), tmp_path / "straight")
    run(tiny_config(epochs=1, init_output_bias="mean"), tmp_path / "resumed")
    monkeypatch.setattr(output_bias, "apply", lambda *args: pytest.fail("applied on resume"))
    resumed = run(tiny_config(epochs=2, init_output_bias="mean"), tmp_path / "resumed", resume=True)
    straight = checkpoint.load(tmp_path / "straight" / checkpoint.FILENAME).params
    assert np.array_equal(resumed.model.flat_params, straight)


def test_a_resume_with_another_choice_is_refused(tiny_config, tmp_path):
    run(tiny_config(epochs=1, init_output_bias="mean"), tmp_path / "run")
    with pytest.raises(ConfigError, match="init_output_bias is 'default', but the run was made with init_output_bias"):
        run(tiny_config(epochs=2), tmp_path / "run", resume=True)


def test_conv_bias_is_per_channel_from_the_overall_mean(small_fashion_mnist):
    images = small_fashion_mnist.train[0]
    model = VAE(arch="conv", hidden_dims=(4, 8), latent_dim=2)
    before = model.flat_params.copy()
    output_bias.apply("mean", model, images)
    name = f"{output_bias.output_layer(model.decoder).name}.b"
    assert name == "dec.deconv2.b" and model.params[name].shape == (1,)
    mean = images.mean() / 255.0
    np.testing.assert_allclose(model.params[name], [np.log(mean / (1 - mean))], rtol=1e-6)
    changed = np.flatnonzero(model.flat_params != before)
    assert len(changed) == 1      # the one bias, nothing else


def test_a_pixel_off_or_on_in_every_image_is_clipped_to_lawson_et_als_bounds():
    """A mean of 0 or 1 would need a bias of -inf or +inf: the mean is clipped to [1e-4, 1 - 1e-4] first."""
    images = np.array([[0, 255, 51], [0, 255, 153]], np.uint8)                      # (N = 2, D = 3)
    means = output_bias.training_means(images, (3,), (3,))
    np.testing.assert_allclose(means, [1e-4, 1 - 1e-4, 0.4], rtol=1e-12, atol=0)


def test_the_output_layer_must_give_the_logits():
    with pytest.raises(ValueError, match="out, is followed by out.relu"):
        output_bias.output_layer([Linear("out", 4, 3), ReLU("out.relu")])


@pytest.mark.parametrize("bad", ["median", "", None, 1, "MEAN"])
def test_a_bad_choice_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"^init_output_bias must be one of default, mean, not ") as error:
        TrainConfig(init_output_bias=bad).validate()
    assert "\n" not in str(error.value)


def test_a_bad_choice_on_the_command_line_is_one_line_and_exit_2(capsys, tmp_path):
    assert cli.main(["train", "--init-output-bias", "median", "--run-dir", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--init-output-bias" in lines[0] and "'median'" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_config_json_with_a_bad_choice_is_refused_and_an_old_one_loads_as_default(tiny_config, tmp_path):
    run(tiny_config(epochs=1), tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    values = json.loads(path.read_text())
    assert values["init_output_bias"] == "default"
    path.write_text(json.dumps({**values, "init_output_bias": "zero"}))
    with pytest.raises(rundir.RunError, match="config.json: init_output_bias must be one of default, mean, not 'zero'"):
        rundir.read_config(tmp_path / "run")
    del values["init_output_bias"]                  # written before the option existed
    path.write_text(json.dumps(values))
    assert rundir.read_config(tmp_path / "run").init_output_bias == "default"

"""README.md's promises: its Python example runs, and its commands are the ones CI and users run."""
import re
import subprocess

import pytest
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def command_after(marker):
    """The command in the fenced block right after <!-- marker --> (what .ci/run reads too)."""
    block = README.split(f"<!-- {marker} -->", 1)[1]
    return block.split("```", 2)[1].strip()


def test_python_example_runs(real_fashion_mnist_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                    # no ./data here: the loader must find the system copy
    example = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    exec(compile(example, "README.md example", "exec"), {})


def test_ci_runs_the_readme_test_command():
    script = Path(__file__).parent.parent / ".ci" / "run"
    extracted = subprocess.run(["sed", "-n", "/<!-- test-command -->/{n;n;p;}", "README.md"],
                               cwd=script.parent.parent, capture_output=True, text=True, check=True).stdout
    assert extracted.strip() == command_after("test-command")
    assert "pytest" in extracted and "torch==2.13.0" in extracted


def test_main_command_is_a_real_subcommand():
    from numpyvae import cli
    command = command_after("main-command")
    assert "pip install" in command
    args = command.split("&&")[1].split()
    assert args[0] == "numpyvae"
    cli.build_parser().parse_args(args[1:])        # raises SystemExit on an unknown command or flag


# The worked extension examples moved from README into their docs page; their markers moved with them.
EXTENDING = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()


def example_after(marker):
    """The Python code in the fenced block right after <!-- marker -->, in README or docs/extending.md."""
    text = README if f"<!-- {marker} -->" in README else EXTENDING
    block = text.split(f"<!-- {marker} -->", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_a_new_likelihood_is_one_class_and_one_line(monkeypatch):
    """README's worked example: after the class and its registry line, the model trains with it and
    every gradient check covers it; and the check would catch it if its gradient were wrong."""
    import numpy as np
    from numpyvae import gradcheck, losses
    from numpyvae.vae import VAE
    monkeypatch.setattr(losses, "LIKELIHOODS", dict(losses.LIKELIHOODS))   # the registration is undone after
    monkeypatch.setattr(gradcheck, "LIKELIHOODS", losses.LIKELIHOODS)
    namespace = {}
    exec(compile(example_after("extend-likelihood"), "README.md likelihood example", "exec"), namespace)
    assert "sharp-gaussian" in losses.LIKELIHOODS
    rows = {r.name: r for r in gradcheck.check_layers()}
    assert rows["SharpGaussian dlogits"].passed
    model = VAE(6, 5, 3, likelihood="sharp-gaussian", dtype=np.float64, seed=1)
    assert all(r.passed for r in gradcheck.check_model(model, *gradcheck.check_batch(model, seed=1)))
    # its log_prob is minus its loss, as evaluation needs
    x = np.random.default_rng(0).uniform(0, 1, (4, 6))
    logits = np.random.default_rng(1).standard_normal((4, 6))
    term = losses.LIKELIHOODS["sharp-gaussian"]
    assert float(term.forward(np, logits, x)[0]) == pytest.approx(-term.log_prob(np, x, logits).sum(), rel=1e-12)
    broken = namespace["SharpGaussian"]
    monkeypatch.setattr(broken, "backward", lambda self, xp, cache, ws=None: cache[1] * cache[0] / self.sigma ** 2)
    assert not all(r.passed for r in gradcheck.check_model(model, *gradcheck.check_batch(model, seed=1)))


def test_a_new_layer_is_a_class_and_an_entry_in_the_list(monkeypatch):
    import numpy as np
    from numpyvae import gradcheck, network, vae
    monkeypatch.setattr(network, "ARCHITECTURES", dict(network.ARCHITECTURES))   # the registration is undone
    namespace = {}
    exec(compile(example_after("extend-layer"), "README.md layer example", "exec"), namespace)
    model = vae.VAE(6, arch="leaky", hidden_dims=(5,), latent_dim=3, dtype=np.float64, seed=1)
    assert type(model.encoder[1]).__name__ == "LeakyReLU"
    rows = gradcheck.check_model(model, *gradcheck.check_batch(model, seed=1))
    assert all(r.passed for r in rows), gradcheck.format_table([("leaky", rows)])
    # the slope really reaches the gradient: a ReLU's gradients differ
    leaky = model.flat_grads.copy()
    relu = vae.VAE(6, 5, 3, dtype=np.float64, seed=1)
    x, eps = gradcheck.check_batch(relu, seed=1)
    relu.loss_and_grads(x, eps=eps)
    assert not np.allclose(relu.flat_grads, leaky)


def test_loading_a_trained_run_as_readme_shows(tiny_config, tmp_path, monkeypatch, capsys):
    """README's load_run example, run as written on a small run trained where it looks (runs/default)."""
    import numpy as np
    import numpyvae
    from numpyvae import train
    monkeypatch.chdir(tmp_path)
    trained = train.train(tiny_config(epochs=1), "runs/default", log=lambda line: None, progress=False)
    namespace = {}
    exec(compile(example_after("load-run"), "README.md load_run example", "exec"), namespace)
    run = namespace["run"]
    assert isinstance(run, numpyvae.trained.Run) and run.checkpoint.epoch == 1
    assert np.array_equal(run.model.flat_params, trained.model.flat_params)      # the trained weights
    assert namespace["mu"].shape == (8, trained.config.latent_dim)
    assert namespace["x"].dtype == np.float32 and 0 <= namespace["x"].min() and namespace["x"].max() <= 1
    assert np.array_equal(namespace["x"], namespace["images"][:8].reshape(8, -1) / np.float32(255))
    assert "nats per image" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_readme_names_every_flag_of_train_and_evaluate(command):
    import argparse
    from numpyvae import cli
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = [option for action in commands.choices[command]._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"
             and not (isinstance(action, argparse.BooleanOptionalAction) and option.startswith("--no-"))]
    missing = [flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", README)]
    assert not missing, f"README does not name numpyvae {command}'s {', '.join(missing)}"


def test_the_mutation_score_is_the_committed_runs():
    """README states the score benchmarks/results/mutation.md reports, word for word (rerun, then copy it over)."""
    report = (Path(__file__).parent.parent / "benchmarks" / "results" / "mutation.md").read_text()
    score = report.split("\n\n")[1]
    assert score.startswith("The suite kills **") and "not yet explained" not in score
    assert score in " ".join(README.split("\n"))

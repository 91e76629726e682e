"""README.md's promises: its Python example runs, and its commands are the ones CI and users run."""
import re
import subprocess

import pytest
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()
# The worked extension examples moved from README into their docs page; their markers moved with them.
EXTENDING = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()


def command_after(marker):
    """The command in the fenced block right after <!-- marker --> (what .ci/run reads too)."""
    block = README.split(f"<!-- {marker} -->", 1)[1]
    return block.split("```", 2)[1].strip()


def python_blocks():
    """(marker, code) for every ```python block of README and of docs/extending.md (the worked extension examples,
    moved there from README), the marker being the <!-- comment --> right above it."""
    return re.findall(r"(?:<!-- ([\w-]+) -->\n)?```python\n(.*?)```", README + "\n" + EXTENDING, re.S)


def test_every_python_block_has_a_marker_and_the_tests_run_each_by_it():
    markers = [marker for marker, _ in python_blocks()]
    assert "" not in markers, "a README python block has no <!-- marker --> above it: the tests cannot find it"
    tested = set(re.findall(r'example_after\("([\w-]+)"\)', Path(__file__).read_text()))
    assert set(markers) <= tested, f"README blocks no test runs: {set(markers) - tested}"


@pytest.fixture
def registries():
    """Restores the registries a README example adds to, in place (other modules hold the same dicts)."""
    from numpyvae import losses, network, objectives, priors
    saved = [(registry, dict(registry)) for registry in (losses.LIKELIHOODS, network.ARCHITECTURES,
                                                         objectives.OBJECTIVES, priors.PRIORS)]
    yield
    for registry, contents in saved:
        registry.clear()
        registry.update(contents)


def test_python_example_runs(real_fashion_mnist_dir, monkeypatch, tmp_path, registries):
    monkeypatch.chdir(tmp_path)                    # no ./data here: the loader must find the system copy
    exec(compile(example_after("use-from-python"), "README.md example", "exec"), {})


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


def example_after(marker):
    """The Python code in the fenced block right after <!-- marker -->, in README or docs/extending.md."""
    text = README if f"<!-- {marker} -->" in README else EXTENDING
    block = text.split(f"<!-- {marker} -->", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_a_new_likelihood_is_one_class_and_one_line(registries, tiny_config, tmp_path, capsys):
    """README's worked example: after the class and its registry line, every gradcheck section passes with it,
    the model trains with it under both objectives; and the check would catch it if its gradient were wrong."""
    import numpy as np
    from numpyvae import cli, gradcheck, gradcheck_plan, losses, train
    from numpyvae.vae import VAE
    namespace = {}
    exec(compile(example_after("extend-likelihood"), "README.md likelihood example", "exec"), namespace)
    assert "sharp-gaussian" in losses.LIKELIHOODS
    assert "SharpGaussian" in {r.layer for r in gradcheck_plan.check_pieces()}
    for flags in (["--quick"], ["--likelihood", "sharp-gaussian", "--hidden-dims", "16", "--latent-dim", "2",
                                "--entries", "5"]):
        status = cli.main(["gradcheck", *flags, "--threads", "1"])
        out = capsys.readouterr().out
        assert status == 0 and "sharp-gaussian" in out and "IWAE bound with K = 3, sharp-gaussian" in out, out
    for objective, samples in (("elbo", 1), ("iwae", 3)):
        trained = train.train(tiny_config(epochs=1, likelihood="sharp-gaussian", objective=objective, samples=samples),
                              tmp_path / objective, log=lambda line: None, progress=False)
        assert np.isfinite(trained.model.flat_params).all()
    # its log_prob is minus its loss, as evaluation and the IWAE bound need
    x = np.random.default_rng(0).uniform(0, 1, (4, 6))
    logits = np.random.default_rng(1).standard_normal((4, 6))
    term = losses.LIKELIHOODS["sharp-gaussian"]
    assert float(term.forward(np, logits, x)[0]) == pytest.approx(-term.log_prob(np, x, logits).sum(), rel=1e-12)
    broken = namespace["SharpGaussian"]
    original = broken.backward
    broken.backward = lambda self, xp, cache, ws=None: cache[1] * cache[0] / self.sigma ** 2
    model = VAE(6, 5, 3, likelihood="sharp-gaussian", dtype=np.float64, seed=1)
    for objective, samples in (("elbo", None), ("iwae", 3)):
        rows = gradcheck.check_model(model, *gradcheck.check_batch(model, seed=1, samples=samples),
                                     objective=objective)
        assert not all(r.passed for r in rows)
    broken.backward = original
    # the example writes its formula once: the batch's loss and log_prob are the base class's, from forward_rows
    assert "forward" not in vars(broken) and "log_prob" not in vars(broken)


def test_a_new_objective_is_one_class_and_one_line(registries, tiny_config, tmp_path):
    """docs/extending.md's free-bits objective: every entry of a small model against finite differences under
    it, a wrong KL gradient failing, and a training run on it; and a dimension under its allowance is free."""
    import numpy as np
    from numpyvae import gradcheck, gradcheck_plan, objectives, train
    from numpyvae.vae import VAE
    namespace = {}
    exec(compile(example_after("extend-objective"), "docs/extending.md objective example", "exec"), namespace)
    assert "free-bits" in objectives.OBJECTIVES
    model = VAE(6, 5, 3, dtype=np.float64, seed=1)
    model.params["mu.b"][:] = [2.0, 0.0, 0.1]      # KL of about 2 nats per image in the first dimension only
    x, eps = gradcheck.check_batch(model, batch=5, seed=1)
    # half a nat per dimension per image: some dimensions of this batch are charged, some are free
    free_bits = objectives.OBJECTIVES["free-bits"]
    mu, logvar = model.encode(x)
    charged = free_bits.kl_forward(model, mu, logvar, None, eps)[1][2]
    assert charged.any() and not charged.all()
    rows = gradcheck.check_model(model, x, eps, objective="free-bits")
    assert all(row.passed for row in rows), [(row.name, row.reason) for row in rows if not row.passed]
    broken = namespace["FreeBits"]
    original = broken.kl_backward
    broken.kl_backward = lambda self, model, cache, scale=1.0, ws=None: (cache[0], 0.5 * cache[1], None)  # no mask
    assert not all(row.passed for row in gradcheck.check_model(model, x, eps, objective="free-bits"))
    broken.kl_backward = original
    sections = [section.title for section in gradcheck_plan.plan(full=False)]
    assert "small 6-5-3 VAE, free-bits ELBO, bernoulli, every entry (float64, numpy)" in sections
    result = train.train(tiny_config(epochs=1, objective="free-bits"), tmp_path / "run", log=lambda line: None,
                         progress=False)
    assert np.isfinite(result.model.flat_params).all()


def test_a_new_prior_is_one_class_and_one_line(registries, tiny_config, tmp_path, monkeypatch):
    """docs/extending.md's learned Gaussian prior: every entry against finite differences under both objectives,
    dense and conv, in the bare gradcheck's plan; float64 parity with autograd through one LOG_PRIOR line; it trains,
    samples and explores; and a planted wrong gradient fails."""
    import numpy as np
    import torch
    from numpyvae import evaluate, explore, gradcheck, gradcheck_plan, objectives, priors, train
    from numpyvae.vae import VAE
    namespace = {}
    exec(compile(example_after("extend-prior"), "docs/extending.md prior example", "exec"), namespace)
    assert "learned-gaussian" in priors.PRIORS
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import torch_reference
    monkeypatch.setattr(torch_reference, "LOG_PRIOR", dict(torch_reference.LOG_PRIOR))
    exec(compile(example_after("extend-prior-reference"), "docs/extending.md prior reference", "exec"), {})
    model = VAE(6, 5, 3, prior="learned-gaussian", dtype=np.float64, seed=1)
    assert list(model.params)[-2:] == ["prior.mean", "prior.logvar"]
    model.params["prior.mean"][:] = [0.3, -0.2, 0.1]           # away from N(0, I), where some terms vanish
    model.params["prior.logvar"][:] = [0.4, -0.3, 0.2]
    for objective, samples in (("elbo", {}), ("iwae", {"samples": 4})):
        x, eps = gradcheck.check_batch(model, batch=5, seed=1, **samples)[:2]
        rows = gradcheck.check_model(model, x, eps, objective=objective)
        assert all(row.passed for row in rows), [(row.name, row.reason) for row in rows if not row.passed]
        assert {"prior.mean", "prior.logvar"} <= {row.name.split()[0] for row in rows}
        ours = model.loss_and_grads(x, eps=eps, objective=objective)
        reference = torch_reference.TorchVAE(model)
        loss = reference.loss(torch.from_numpy(x), torch.from_numpy(eps), objective=objective)
        loss.backward()
        assert abs(float(ours[0]) - loss.item()) <= 1e-9 * abs(loss.item())
        for name, grad in reference.grads().items():
            assert np.abs(model.grads[name] - grad).max() <= 1e-9 * max(np.abs(grad).max(), 1e-300), name
    sections = [section for section in gradcheck_plan.plan(full=False) if "with the learned-gaussian prior" in section.title]
    assert len(sections) == 2 * len(objectives.OBJECTIVES)       # dense and conv, under every objective
    for section in sections:
        assert all(row.passed for row in section.run()), section.title
    LearnedGaussian = namespace["LearnedGaussian"]
    right = LearnedGaussian.log_prob_backward
    def wrong(self, model, dlog_p, cache, ws=None):              # the 1/2 of d/ds forgotten
        dz = right(self, model, dlog_p, cache, ws)
        model.grads["prior.logvar"] *= 2
        return dz
    monkeypatch.setattr(LearnedGaussian, "log_prob_backward", wrong)
    x, eps = gradcheck.check_batch(model, batch=5, seed=1)[:2]
    failed = [row.name for row in gradcheck.check_model(model, x, eps) if not row.passed]
    assert failed and all(name.startswith("prior.logvar") for name in failed)
    monkeypatch.setattr(LearnedGaussian, "log_prob_backward", right)
    result = train.train(tiny_config(epochs=1, prior="learned-gaussian"), tmp_path / "run", log=lambda line: None,
                         progress=False)
    assert np.isfinite(result.model.flat_params).all()
    assert np.abs(result.model.params["prior.mean"]).max() > 0  # it learned
    assert result.model.sample(4).shape == (4, 784)
    images = np.random.default_rng(0).integers(0, 256, (6, 784), dtype=np.uint8)
    data = evaluate.test_dataset(images, result.model.backend, result.model.dtype)
    bound = -evaluate.importance_weighted_bound(result.model, data, k=50)     # the log-likelihood estimate, negated
    elbo = evaluate.negative_elbo(result.model, data, samples=10)["loss"]
    assert 0 < elbo - bound < 0.1 * elbo                      # the tighter bound, at the prior's log p(z)
    described = explore.describe_prior(result.model)                # the explorer samples it as one component
    np.testing.assert_allclose(described["means"][0], result.model.params["prior.mean"], rtol=1e-6)
    assert described["name"] == "learned-gaussian"


def test_a_new_layer_is_a_class_and_an_entry_in_the_list(registries, tiny_config, tmp_path, capsys):
    """README's layer example: checked alone and in the model by the bare `gradcheck --arch leaky`, and by
    check_layer; it trains under both objectives; and a wrong backward fails."""
    import numpy as np
    from numpyvae import cli, gradcheck, train, vae
    namespace = {}
    exec(compile(example_after("extend-layer"), "README.md layer example", "exec"), namespace)
    LeakyReLU = namespace["LeakyReLU"]
    model = vae.VAE(6, arch="leaky", hidden_dims=(5,), latent_dim=3, dtype=np.float64, seed=1)
    assert type(model.encoder[1]).__name__ == "LeakyReLU"
    rows = gradcheck.check_layer(LeakyReLU("leaky"), (5,))
    assert [r.name for r in rows] == ["leaky dx"] and rows[0].passed
    status = cli.main(["gradcheck", "--arch", "leaky", "--hidden-dims", "16,8", "--latent-dim", "2", "--entries", "5",
                       "--threads", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "LeakyReLU enc.relu" in out.split("small ")[0]            # alone, in the layers section
    assert "small leaky 6-5-4-3 VAE, bernoulli, every entry" in out     # built as what it is, not as a conv
    for objective, samples in (("elbo", 1), ("iwae", 3)):
        trained = train.train(tiny_config(epochs=1, arch="leaky", hidden_dim=None, hidden_dims=(32,),
                                          objective=objective, samples=samples),
                              tmp_path / objective, log=lambda line: None, progress=False)
        assert np.isfinite(trained.model.flat_params).all()
    # the slope really reaches the gradient: a ReLU's gradients differ
    x, eps = gradcheck.check_batch(model, seed=1)
    model.loss_and_grads(x, eps=eps)
    relu = vae.VAE(6, 5, 3, dtype=np.float64, seed=1)
    relu.loss_and_grads(x, eps=eps)
    assert not np.allclose(relu.flat_grads, model.flat_grads)
    # a wrong backward (the slope forgotten) fails alone and in the model
    LeakyReLU.backward = lambda self, xp, params, grads, dy, cache, ws=None, need_dx=True: dy * cache.mask
    assert not gradcheck.check_layer(LeakyReLU("leaky"), (5,))[0].passed
    assert not all(r.passed for r in gradcheck.check_model(model, x, eps))


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


def test_the_checkers_mutation_numbers_are_its_committed_runs():
    """README's numbers for gradcheck.py and network.py are those of the committed first run and of the rerun of the
    mutants it left, and that rerun leaves nothing unexplained."""
    import json
    results = Path(__file__).parent.parent / "benchmarks" / "results"
    first = json.loads((results / "mutation-checker" / "mutation.json").read_text())
    rerun = json.loads((results / "mutation-checker-survivors" / "mutation.json").read_text())
    killed = sum(m["status"] == "killed" for m in first)
    left = {m["key"] for m in first if m["status"] != "killed"}
    assert {m["key"] for m in rerun} == left                       # the rerun is of exactly the mutants left
    rekilled = sum(m["status"] == "killed" for m in rerun)
    text = " ".join(README.split())
    assert f"killed {killed} of {len(first)}, and of the {len(left)} left" in text
    assert f"{rekilled} killed by new tests and {len(rerun) - rekilled} reviewed as equivalent" in text
    assert "not yet explained" not in (results / "mutation-checker-survivors" / "mutation.md").read_text()


def test_the_registries_mutation_numbers_are_their_committed_runs():
    """README's numbers for this round's new code (objectives.py, priors.py, output_bias.py and the new functions of
    layers.py and iwae.py) are those of the committed first run and of the reruns of the mutants it left."""
    import json
    results = Path(__file__).parent.parent / "benchmarks" / "results"
    first = json.loads((results / "mutation-registries" / "mutation.json").read_text())
    reruns = {}
    for part in ("priors", "rest"):
        folder = results / "mutation-registries-survivors" / part
        reruns.update({m["key"]: m["status"] for m in json.loads((folder / "mutation.json").read_text())})
        assert "not yet explained" not in (folder / "mutation.md").read_text()
    killed = sum(m["status"] == "killed" for m in first)
    left = [m["key"] for m in first if m["status"] != "killed"]
    assert all(key in reruns for key in left)                      # every mutant left was run again
    rekilled = sum(reruns[key] == "killed" for key in left)
    text = " ".join(README.split())
    assert f"killed {killed} of {len(first)} at first; of the {len(left)} left" in text
    assert f"{rekilled} are killed by new tests and {len(left) - rekilled} reviewed as equivalent" in text


def test_the_explorer_and_the_docs_site_go_to_different_folders():
    """Run one after the other as README shows them, the same folder would be a collision: the docs build
    empties its --site-dir (the explorer's page gone), and explore refuses a folder holding the docs."""
    site_dir = Path(command_after("docs-command").split("--site-dir", 1)[1].split()[0])
    text = " ".join((README + (Path(__file__).parent.parent / "docs" / "explorer.md").read_text()).split())
    outs = [Path(out.strip("`")) for out in re.findall(r"numpyvae explore \S+ --out (\S+)", text)]
    assert len(outs) >= 3, outs
    for out in outs:
        assert site_dir not in (out, *out.parents), out


def test_readme_names_every_package_ci_installs():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    packages = {name for line in re.findall(r"apt-get install -y -qq ([^>\n]+)", ci) for name in line.split()}
    assert packages >= {"dataset-fashion-mnist", "chromium"}, packages
    said = README.split("`.ci/run` runs exactly that second line", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{name}`" in said for name in packages), (packages, said)


def test_readme_says_how_to_open_the_notebook_with_an_extra_that_exists():
    import configparser
    said = README.split("docs/tutorial.ipynb", 1)[1].split("\n\n", 1)[0]
    extra = re.search(r"pip install -e '\.\[(\w+)\]'", said)
    assert extra and "jupyter lab docs/tutorial.ipynb" in said, said
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parent.parent / "setup.cfg")
    assert "jupyterlab" in setup["options.extras_require"][extra.group(1)]

"""The `numpyvae` command: train, evaluate, figures, generate, gradcheck, reference-state, download, show-data, explore.

    numpyvae train [--epochs 10] [--run-dir runs/default] [--resume] ...   train (or continue) a run
    numpyvae evaluate RUN_DIR [--samples 10] [--iw-samples 100] [--json]
    numpyvae figures RUN_DIR                                          every picture, into RUN_DIR/figures
    numpyvae generate RUN_DIR -n 16 --out new.png [--class sneaker]   new clothes from the prior
    numpyvae gradcheck [RUN_DIR [--trained] | --arch conv ...] [--quick]   every gradient against finite differences
    numpyvae reference-state --out ref.npz [--batch-size 4 --arch conv ...]   one step, for other implementations
    numpyvae download [--data-dir data]                               fetch Fashion-MNIST
    numpyvae show-data [--split train] [--out fashion-mnist.png]      a grid of the data with class names
    numpyvae explore RUN_DIR --out DIR [--serve]                      a web page where the run's model runs

Bad input gets one line on stderr and a non-zero exit status, never a traceback:
2 for a bad command line, 1 for anything else that went wrong, 130 after Ctrl-C and 143 after
SIGTERM (128 + the signal's number, as shells report a process the signal ended), from the
moment the command starts: SIGTERM runs the same clean-up as Ctrl-C (signals.py).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import fields, replace
from pathlib import Path

from numpyvae.messages import one_line, shell_quote, shown
from numpyvae.signals import signal_of, signals_raise, stopped_by

RUN_DIR = "runs/default"
MAX_SHOW = 100          # show-data draws one subplot per image: 2,000 took 330 s and 1 GB
# evaluate's k: 20 times Burda et al.'s 5000. One image's k samples go through before the progress
# line can move: at k = 10**9 that was hours for the first image
MAX_IW_SAMPLES = 100_000
MAX_ELBO_SAMPLES = 10_000   # evaluate's --samples: each is a pass over a batch of 1,000 images before progress moves


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a flag the command does not know is named with the command's name:
        argparse reports it from the top parser, as `numpyvae`, after the command has parsed."""
        args, unknown = self.parse_known_args(args, namespace)
        if unknown:
            prog = f"{self.prog} {args.command}" if getattr(args, "command", None) else self.prog
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)\n")
        return args


class Refused(argparse.Action):
    """A flag a command refuses, with the reason (`why`), as argparse refuses a bad value: one line, exit 2."""

    def __init__(self, option_strings, dest, why, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        raise argparse.ArgumentError(self, self.why)


def _number(kind, minimum, inclusive, text):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value < minimum or (value == minimum and not inclusive):
        raise argparse.ArgumentTypeError(f"must be {'at least' if inclusive else 'more than'} {minimum}, got {text}")
    return value


def positive_int(text):
    return _number(int, 1, True, text)


def natural(text):
    return _number(int, 0, True, text)


def seed(text):
    from numpyvae.rundir import MAX_INT64
    value = natural(text)
    if value > MAX_INT64:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT64}, got {text}")
    return value


def iw_count(text):
    value = positive_int(text)
    if value > MAX_IW_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_IW_SAMPLES:,} (20 times the 5,000 of Burda et "
                                         f"al.; one image's samples all go through before a progress line "
                                         f"can move), got {text}")
    return value


def elbo_count(text):
    value = positive_int(text)
    if value > MAX_ELBO_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_ELBO_SAMPLES:,} (each sample is a pass over a "
                                         f"batch of 1,000 images before a progress line can move), got {text}")
    return value


def show_count(text):
    value = positive_int(text)
    if value > MAX_SHOW:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SHOW}, got {text}")
    return value


def directory(text):
    """A directory name; "" would silently mean the working directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a directory, got {text!r}")
    return text


def png_file(text):
    """An output name ending in .png: show-data writes nothing else (a typo must not replace a checkpoint)."""
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"must name a .png file, got {text!r}")
    return text


def threads(text):
    from numpyvae.threads import parse_threads
    try:
        return parse_threads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


THREADS_HELP = ("BLAS threads: a number, or auto (default): one per CPU this process may use, fewer while "
                "other processes take cores (with auto, results can differ in the last digits from run to run)")


def positive_ints(text):
    """"512,256" -> (512, 256)."""
    parts = text.split(",")
    if not text.strip() or not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return tuple(positive_int(part.strip()) for part in parts)


def positive_float(text):
    return _number(float, 0, False, text)


def nonnegative_float(text):
    return _number(float, 0, True, text)


def build_parser():
    from numpyvae.backend import BACKEND_NAMES          # light: imports numpy only
    from numpyvae.evaluate import ELBO_SAMPLES, IW_SAMPLES
    from numpyvae.output_bias import CHOICES as OUTPUT_BIAS_CHOICES

    parser = Parser(prog="numpyvae", description="A variational autoencoder on NumPy/CuPy with hand-written "
                                                 "gradients, trained on Fashion-MNIST.")
    parser.add_argument("--version", action="version", version=f"numpyvae {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # train: only the flags given on the command line land in args (argument_default=SUPPRESS),
    # so --resume can take the rest from the run and refuse any that disagree with it.
    train = commands.add_parser("train", help="train a VAE, or continue one with --resume",
                                argument_default=argparse.SUPPRESS,
                                description="Train a VAE on Fashion-MNIST (defaults: the seed's 784-400-20 model, "
                                            "batch 128, Adam 1e-3, 10 epochs, Bernoulli likelihood).")
    train.add_argument("--epochs", type=natural,
                       help="epochs in total (default 10); with --resume, go on until this many")
    train.add_argument("--lr", type=positive_float, help="Adam learning rate (default 1e-3)")
    _network_options(train)
    _step_options(train)
    train.add_argument("--warmup-epochs", type=nonnegative_float,
                       help="ramp the KL weight from 0 to beta over this many epochs (default 0: no warm-up)")
    train.add_argument("--binarize", action=argparse.BooleanOptionalAction,
                       help="train on pixels drawn as x ~ Bernoulli(pixel), anew every batch (default off)")
    train.add_argument("--init-output-bias", choices=OUTPUT_BIAS_CHOICES,
                       help="the decoder's output bias at the start (default default: drawn like every bias); mean: "
                            "the likelihood's mean at the bias is the training set's mean pixel (per channel for "
                            "conv), as Lawson et al. 2019 start theirs; not reapplied on --resume")
    train.add_argument("--backend", choices=BACKEND_NAMES,
                       help="array backend (default numpy; auto = CuPy if usable; fakegpu = NumPy posing as a GPU, "
                            "to check on any machine that code makes no hidden host-device copies)")
    train.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    train.add_argument("--data-dir", help="Fashion-MNIST directory (default $NUMPYVAE_DATA_DIR or ./data, "
                                          "then the system's)")
    train.add_argument("--run-dir", type=directory, default=RUN_DIR,
                       help=f"where the run's files go (default {RUN_DIR})")
    train.add_argument("--resume", action="store_true", default=False,
                       help="continue the run in --run-dir up to --epochs epochs in total")
    train.add_argument("--download", action="store_true", default=False,
                       help="download the data if it is not found")
    train.add_argument("--no-figures", dest="figures", action="store_false", default=True,
                       help="skip drawing the figures at the end")
    train.add_argument("--threads", type=threads, default="auto", help=THREADS_HELP)
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="test negative ELBO and importance-weighted bound of a run")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", type=directory)
    evaluate.add_argument("--samples", type=elbo_count, default=ELBO_SAMPLES,
                          help=f"posterior samples per image for the negative ELBO (default {ELBO_SAMPLES})")
    evaluate.add_argument("--iw-samples", type=iw_count, default=IW_SAMPLES,
                          help=f"importance samples k per image for the IWAE bound (default {IW_SAMPLES})")
    evaluate.add_argument("--seed", type=natural, default=0, help="seed of the evaluation noise (default 0)")
    _model_options(evaluate, BACKEND_NAMES)
    evaluate.add_argument("--json", action="store_true", help="print the results as one JSON object")
    evaluate.add_argument("--threads", type=threads, default="auto", help=THREADS_HELP)
    evaluate.set_defaults(run=cmd_evaluate)

    figures = commands.add_parser("figures", help="draw every figure of a run")
    figures.add_argument("run_dir", metavar="RUN_DIR", type=directory)
    figures.add_argument("--out", help="directory for the PNG files (default RUN_DIR/figures)")
    _model_options(figures, BACKEND_NAMES)
    figures.set_defaults(run=cmd_figures)

    generate = commands.add_parser("generate", help="new clothes from a run's prior, as a PNG grid or a .npy array",
                                   description="Decode z ~ p(z), the prior (N(0, I), or a VampPrior's mixture), with a run's last checkpoint. For a conditional "
                                               "run, --class picks the class; without it the classes take turns.")
    generate.add_argument("run_dir", metavar="RUN_DIR")
    generate.add_argument("-n", type=positive_int, default=16, help="how many images (default 16; at most 400 "
                                                                    "in a .png, 100,000 in a .npy)")
    generate.add_argument("--out", required=True, help="a .png file (a grid) or a .npy file (an (N, 28, 28) "
                                                       "float32 array of pixel means in [0, 1])")
    generate.add_argument("--class", dest="class_name", metavar="NAME_OR_INDEX",
                          help="a class name (any case, e.g. sneaker or 'Ankle boot') or index 0-9; "
                               "conditional runs only")
    generate.add_argument("--seed", type=natural, default=0, help="seed of the draws of z (default 0)")
    generate.add_argument("--backend", choices=BACKEND_NAMES, default="numpy", help="default numpy")
    generate.set_defaults(run=cmd_generate)

    gradcheck = commands.add_parser(
        "gradcheck", help="check every hand-written gradient against finite differences",
        description="Check every layer alone, then whole models, against finite differences; each section's "
                    "rows print as it ends, and a FAIL row says why. With no model flags: the layers of every "
                    "architecture, the default 784-400-20 model and a small one, for every likelihood, under "
                    "the ELBO and the IWAE bound. With model flags (the same as train's): that model, and a small "
                    "one of its architecture. With a run directory: the run's model, at its own objective and K.")
    gradcheck.add_argument("run_dir", metavar="RUN_DIR", nargs="?", type=directory,
                           help="check the model of this run (its settings, objective and K; fresh weights "
                                "unless --trained)")
    gradcheck.add_argument("--trained", action="store_true",
                           help="with RUN_DIR: check the run's own trained weights (its last checkpoint)")
    gradcheck.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                           help="dtype of the models checked (default float64)")
    gradcheck.add_argument("--backend", choices=BACKEND_NAMES, default="numpy", help="default numpy")
    gradcheck.add_argument("--entries", type=positive_int, default=20,
                           help="entries checked per tensor of the full-size model (default 20)")
    gradcheck.add_argument("--quick", action="store_true", help="small models only (skip the full-size one)")
    gradcheck.add_argument("--seed", type=natural, default=0,
                           help="seed of the weights, data and sampled entries checked (default 0); a small "
                                "model whose weights leave a ReLU layer dead on the batch is drawn at the next seed")
    gradcheck.add_argument("--threads", type=threads, default="auto", help=THREADS_HELP)
    network = gradcheck.add_argument_group("model (as for train)", argument_default=argparse.SUPPRESS)
    _network_options(network)
    for flag in ("--objective", "--samples"):      # train's, but here they would choose nothing: say why
        gradcheck.add_argument(flag, nargs="?", action=Refused, help=argparse.SUPPRESS,
                               why="gradcheck checks every objective, the ELBO and the IWAE bound (with a "
                                   "RUN_DIR, the run's own objective and K)")
    gradcheck.set_defaults(run=cmd_gradcheck)

    reference = commands.add_parser(
        "reference-state", help="write one step's weights, batch, noise, loss and gradients for other "
                                "implementations to check themselves against",
        argument_default=argparse.SUPPRESS,
        description="Write, in float64, one training step of the model the flags describe (as for train): its "
                    "config, initial weights, batch x (and labels y), noise eps, loss, recon, kl and every "
                    "gradient. Format: docs/reference-state.md; a PyTorch check: "
                    "benchmarks/check_reference_state.py FILE.")
    reference.add_argument("--out", required=True, help="the .npz file to write (an existing file is replaced "
                                                        "only if it is a reference state)")
    _network_options(reference)
    _step_options(reference)
    reference.add_argument("--synthetic", action="store_true", default=False,
                           help="a made-up deterministic batch instead of the test set's first images (needs no "
                                "data files; without the files it is used anyway, with a warning)")
    reference.add_argument("--data-dir", default=None, help="Fashion-MNIST directory (default $NUMPYVAE_DATA_DIR "
                                                            "or ./data, then the system's)")
    reference.set_defaults(run=cmd_reference_state)

    download = commands.add_parser("download", help="download Fashion-MNIST into the data directory")
    download.add_argument("--data-dir", help="default $NUMPYVAE_DATA_DIR or ./data")
    download.set_defaults(run=cmd_download)

    show = commands.add_parser("show-data", help="save a grid of Fashion-MNIST images with their class names")
    show.add_argument("--data-dir", help="default $NUMPYVAE_DATA_DIR or ./data, then the system's")
    show.add_argument("--split", choices=("train", "test"), default="train",
                      help="the 60,000 training images or the 10,000 test images (default train)")
    show.add_argument("-n", type=show_count, default=40, help=f"how many images, 1 to {MAX_SHOW} (default 40)")
    show.add_argument("--out", type=png_file, default="fashion-mnist.png",
                      help="PNG to write (default fashion-mnist.png); an existing file is replaced only if "
                           "numpyvae drew it")
    show.set_defaults(run=cmd_show_data)

    explore = commands.add_parser("explore", help="write a web page where the run's model runs in the browser",
                                  description="Write a static site (no network needed): sliders for each latent "
                                              "coordinate, the test set's map, interpolation, and a canvas to draw "
                                              "on, with the run's model running in JavaScript.")
    explore.add_argument("run_dir", metavar="RUN_DIR", type=directory)
    explore.add_argument("--out", required=True, type=directory,
                         help="folder for the site: missing, empty, or one that numpyvae explore wrote")
    explore.add_argument("--serve", action="store_true",
                         help="then serve it on 127.0.0.1 (a free port, printed) until Ctrl-C")
    explore.add_argument("--data-dir", help="where the test set for the map is (default: the run's)")
    explore.set_defaults(run=cmd_explore)
    return parser


def _version():
    from numpyvae import __version__
    return __version__


def _network_options(parser):
    """The flags that describe the network (network.ModelSpec), shared by train and gradcheck.

    Given flags only land in args (the parser's argument_default is SUPPRESS), so a command can
    tell a setting asked for from a default.
    """
    from numpyvae.datafiles import CLASS_NAMES
    from numpyvae.losses import LIKELIHOODS, SIGMAS
    from numpyvae.network import ARCHITECTURES
    from numpyvae.priors import DEFAULT_PSEUDO_INPUTS, PRIORS

    parser.add_argument("--arch", choices=tuple(ARCHITECTURES),
                        help="the network: dense (the seed's, the default) or conv (TensorFlow's CVAE shape)")
    widths = parser.add_mutually_exclusive_group()     # two ways to say one thing: one may be given
    widths.add_argument("--hidden-dims", type=positive_ints, metavar="N,N,...",
                        help="dense: the hidden layers' widths (default 400); conv: the channels (default 32,64)")
    widths.add_argument("--hidden-dim", type=positive_int, help="one hidden layer of this width (dense only; "
                                                               "the same as --hidden-dims N)")
    parser.add_argument("--latent-dim", type=positive_int, help="latent dimensions (default 20)")
    parser.add_argument("--likelihood", choices=tuple(LIKELIHOODS), help="reconstruction term (default bernoulli): "
                        + "; ".join(f"{name}: {term.description}" for name, term in LIKELIHOODS.items()))
    parser.add_argument("--conditional", dest="num_classes", action="store_const", const=len(CLASS_NAMES),
                        help="a conditional VAE: encoder and decoder also read each image's class, so "
                             "`numpyvae generate --class` can ask for one (default off)")
    parser.add_argument("--prior", choices=tuple(PRIORS), help="p(z) (default normal): "
                        + "; ".join(f"{name}: {prior.description}" for name, prior in PRIORS.items()))
    parser.add_argument("--pseudo-inputs", type=positive_int, metavar="K",
                        help=f"the VampPrior's learned pseudo-inputs (default {DEFAULT_PSEUDO_INPUTS}; --prior vamp only)")
    parser.add_argument("--sigma", choices=SIGMAS, help="the Gaussian decoder's sigma (--likelihood gaussian only; "
                        "default fixed, the seed's squared error): learned, one shared log sigma trained with the "
                        "rest; optimal, sigma^2 = each batch's mean squared error (Rybkin et al. 2021's sigma-VAE)")


NETWORK_FLAGS = ("arch", "hidden_dims", "hidden_dim", "latent_dim", "likelihood", "num_classes", "prior",
                 "pseudo_inputs", "sigma")


def _step_options(parser):
    """The flags that say what one training step computes besides the network, shared by train and
    reference-state: the batch, the objective and its K, the KL weight, the seed."""
    from numpyvae.objectives import OBJECTIVES

    parser.add_argument("--batch-size", type=positive_int, help="images per step (default 128)")
    parser.add_argument("--beta", type=nonnegative_float, help="KL weight (default 1)")
    parser.add_argument("--objective", choices=tuple(OBJECTIVES),
                        help="what to train on (default elbo): " + "; ".join(
                            f"{name}, {goal.description}" + (" (--samples K)" if goal.takes_samples else "")
                            for name, goal in OBJECTIVES.items()))
    parser.add_argument("--samples", type=positive_int,
                        help="K, samples per image for --objective iwae (default 1; the ELBO takes 1)")
    parser.add_argument("--seed", type=seed, help="seed for weights, shuffling and noise, 0 to 2**63-1 (default 0)")


STEP_FLAGS = ("batch_size", "beta", "objective", "samples", "seed")


def _model_options(parser, backend_names):
    parser.add_argument("--backend", choices=backend_names, default="numpy", help="default numpy")
    parser.add_argument("--data-dir", help="Fashion-MNIST directory (default: the run's)")


# -- commands -------------------------------------------------------------------------------

def _refuse_iwae_without_samples(given):
    """ConfigError for `--objective iwae` with no `--samples`: the default K = 1 would silently be the
    ELBO (with a sampled KL), not a tighter bound. `given` holds the flags given, by destination."""
    from numpyvae.objectives import OBJECTIVES
    from numpyvae.rundir import ConfigError

    goal = OBJECTIVES.get(given.get("objective"))
    if goal is not None and goal.takes_samples and "samples" not in given:
        raise ConfigError(f"--objective {goal.name} needs --samples K, the samples per image (K = 1 is the ELBO "
                          f"with a sampled KL; Burda et al. trained with K = 5 and 50)")


def cmd_train(args):
    from numpyvae import plots
    from numpyvae.atomicfile import remove_abandoned_temp_files
    from numpyvae.rundir import FIGURES_DIR, TrainConfig, read_config
    from numpyvae.train import Interrupted, NothingToDo, train

    names = [f.name for f in fields(TrainConfig)] + ["hidden_dim"]     # the older name, still a flag
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if not args.resume:
        _refuse_iwae_without_samples(given)
    run_dir = Path(args.run_dir)
    config = replace(read_config(run_dir), **given) if args.resume else TrainConfig(**given)
    try:
        result = train(config, run_dir, resume=args.resume, download=args.download, threads=args.threads)
    except NothingToDo as done:
        print(done)
        return 0
    if args.figures:
        draw_them = f"Draw them with: numpyvae figures {shell_quote(run_dir)}"
        try:
            remove_abandoned_temp_files(run_dir / FIGURES_DIR, ".png")     # a drawing killed outright left them
            paths = plots.make_all(result.model, result.test_images, result.test_labels, result.metrics,
                                   run_dir / FIGURES_DIR, result.config.objective, result.config.samples)
        except KeyboardInterrupt as stop:      # the run itself is saved and finished: only pictures are missing
            raise Interrupted(f"{stopped_by(signal_of(stop))} while drawing the figures; the run is complete. "
                              f"{draw_them}", signal_of(stop)) from None
        except OSError as error:       # a full disk, a file in the way: training finished and was saved
            warnings.warn(f"figures not drawn ({one_line(error)}); the run is complete. {draw_them}")
            return 0
        print(f"figures: {len(paths)} PNG files in {shown(run_dir / FIGURES_DIR)}")
    return 0


def _test_set(config, data_dir):
    from numpyvae import datasets
    return datasets.load_fashion_mnist("test", data_dir if data_dir is not None else config.data_dir, download=False)


def cmd_evaluate(args):
    import numpy as np

    from numpyvae import evaluate
    from numpyvae.progress import Progress
    from numpyvae.rundir import RunError, check_input_fits, load_run
    from numpyvae.threads import Threads

    config, model, saved = load_run(args.run_dir, backend=args.backend)
    images, labels = _test_set(config, args.data_dir)
    check_input_fits(config, images.shape[1:])
    data = evaluate.test_dataset(images, model.backend, model.dtype, config.binarize,
                                 labels=labels if model.conditional else None)
    started = time.perf_counter()
    with Threads(args.threads if model.backend.name in ("numpy", "fakegpu") else None) as blas:
        with np.errstate(all="ignore"):
            how_long = evaluate.forecast(model, data, args.samples, args.iw_samples)   # None when it is quick
        if how_long:
            print(f"numpyvae evaluate: {how_long}", file=sys.stderr, flush=True)
        progress = Progress(on_tick=blas.tick)
        with np.errstate(all="ignore"):   # an overflow is reported below, once, not as NumPy's warnings
            results = evaluate.evaluate(model, data, elbo_samples=args.samples, iw_samples=args.iw_samples,
                                        seed=args.seed, progress=progress)
        progress.close()
    broken = [name for name, value in results.items() if isinstance(value, float) and not math.isfinite(value)]
    if broken:        # never printed as NaN (which is not JSON), never with exit 0
        raise RunError(f"{shown(args.run_dir)}'s parameters give a {' and '.join(broken)} of NaN or Inf "
                       "on the test set; the run cannot be evaluated")
    is_bound = model.recon_term.is_density(binary=config.binarize)
    results = {"run_dir": str(args.run_dir), "epoch": saved.epoch, "likelihood": config.likelihood,
               "binarize": config.binarize, "conditional": model.conditional, **results, "is_bound": is_bound,
               "seconds": round(time.perf_counter() - started, 2)}
    if args.json:
        print(json.dumps(results, allow_nan=False))
        return 0
    where = f"after epoch {saved.epoch}" + (f", step {saved.step_in_epoch}" if saved.step_in_epoch else "")
    print(f"{shown(args.run_dir)} {where}, {results['test_images']} test images, nats per image:")
    print(f"  negative ELBO      {results['test_loss']:8.2f} = recon {results['test_recon']:.2f} + "
          f"KL {results['test_kl']:.2f}   (mean over {args.samples} posterior samples per image)")
    # a bound on -log p(x) only where the likelihood is a density over these pixels (losses.py);
    # a conditional VAE models each class, so its bound is on -log p(x | y)
    target = "-log p(x | y)" if model.conditional else "-log p(x)"
    if results["is_bound"]:
        label = f"IWAE bound, {target} <="
    else:
        pixels = "binary" if config.binarize else "grey"
        label = f"IWAE estimate ({config.likelihood} is no density over {pixels} pixels, so no bound on {target})"
    print(f"  {label} {results['iwae_nll']:8.2f}   (k = {args.iw_samples} importance samples, "
          f"Burda et al. 2016)")
    print(f"  active units       {results['active_units']:>5} of {results['latent_dim']}   (latent dimensions whose "
          f"posterior mean varies over the test set by more than {evaluate.ACTIVE_THRESHOLD}, Burda et al. 2016)")
    return 0


def cmd_figures(args):
    from numpyvae import plots
    from numpyvae.atomicfile import remove_abandoned_temp_files
    from numpyvae.rundir import FIGURES_DIR, check_input_fits, load_run, read_metrics, saved_rows

    config, model, saved = load_run(args.run_dir, backend=args.backend)
    images, labels = _test_set(config, args.data_dir)
    check_input_fits(config, images.shape[1:])
    out = Path(args.out) if args.out else Path(args.run_dir) / FIGURES_DIR
    metrics = saved_rows(read_metrics(args.run_dir), saved)
    remove_abandoned_temp_files(out, ".png")          # a drawing killed outright left them
    for path in plots.make_all(model, images, labels, metrics, out, config.objective,
                               config.samples):
        print(shown(path))
    return 0


def cmd_generate(args):
    from numpyvae import generate
    from numpyvae.datafiles import IMAGE_SHAPE
    from numpyvae.atomicfile import remove_abandoned_temp_files
    from numpyvae.rundir import check_input_fits, load_run

    config, model, saved = load_run(args.run_dir, backend=args.backend)
    check_input_fits(config, IMAGE_SHAPE)
    generate.check_request(model, args.n, args.out, wants_class=args.class_name is not None)
    remove_abandoned_temp_files(Path(args.out).parent, Path(args.out).name)     # what a killed write of it left
    class_index = None if args.class_name is None else generate.parse_class(args.class_name, model.num_classes)
    images, labels = generate.generate(model, args.n, seed=args.seed, class_index=class_index)
    what = (f"{generate.CLASS_NAMES[class_index]}" if class_index is not None
            else "every class in turn" if model.conditional else "the prior")
    title = f"{args.n} new images from {shown(args.run_dir)} (epoch {saved.epoch}), {what}, seed {args.seed}"
    print(shown(generate.save(images, labels, args.out, title)))
    return 0


def cmd_gradcheck(args):
    from numpyvae import gradcheck, gradcheck_plan
    from numpyvae.rundir import ConfigError, RunError, TrainConfig, load_run, read_config
    from numpyvae.threads import Threads

    given = {name: getattr(args, name) for name in NETWORK_FLAGS if hasattr(args, name)}
    if args.run_dir is not None and given:
        flag = {"num_classes": "conditional"}.get(next(iter(given)), next(iter(given))).replace("_", "-")
        raise ConfigError(f"give a run directory or model flags, not both (the run fixes --{flag})")
    if args.trained and args.run_dir is None:
        raise RunError("--trained checks a run's own weights: give its RUN_DIR")
    settings, options = None, {}
    if args.run_dir is not None:      # the run's model, checked on the run's own objective, K and beta
        config = read_config(args.run_dir)
        settings = config.model_settings()
        options = {"objectives": (config.objective,), "samples": config.samples, "beta": config.beta}
        if args.trained:
            if args.quick:
                raise RunError("--trained checks the full-size model at the run's weights, which --quick leaves out")
            _, trained, saved = load_run(args.run_dir, backend="numpy")
            options["trained"] = (trained.flat_params, f"trained weights (epoch {saved.epoch})",
                                  _check_images(config))
    elif given:
        settings = TrainConfig(**given).validate().model_settings()
    sections = gradcheck_plan.plan(settings, full=not args.quick, small=True, dtype=args.dtype, backend=args.backend,
                                   entries=args.entries, seed=args.seed, **options)
    started = time.perf_counter()
    checked = failed = crashed = 0
    with Threads(args.threads if args.backend in ("numpy", "fakegpu") else None) as blas:
        for section in sections:      # each section's rows as it ends: a long run shows its results as it goes
            try:
                rows = section.run()
            except Exception as error:     # one line naming the section; the others still run
                crashed += 1
                message = one_line(f"{type(error).__name__}: {error}")
                print(f"\n{section.title}\n  crashed: {message}", flush=True)
                print(f"numpyvae gradcheck: error: the section \"{section.title}\" crashed: {message}",
                      file=sys.stderr, flush=True)
                continue
            finally:
                blas.tick()
            print(gradcheck.format_table([(section.title, rows)]), flush=True)
            print(f"checked: {section.title} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
            checked += len(rows)
            failed += sum(not row.passed for row in rows)
    print(f"\n{checked - failed} of {checked} gradients pass" + (f"; {failed} FAIL" if failed else "")
          + (f"; {crashed} section{'s' * (crashed > 1)} crashed" if crashed else ""))
    return 1 if failed or crashed else 0


def _check_images(config, count=4):
    """(x (count, D) pixels, labels) of the run's first test images, where the trained weights meet the data
    they were trained for; None (uniform noise pixels) when the data is not there."""
    from numpyvae.datasets import DataError, to_pixels
    try:
        images, labels = _test_set(config, None)
    except DataError:
        return None
    if images[0].size != math.prod(config.input_shape):      # not the images this model reads
        return None
    return to_pixels(images[:count], "float64"), labels[:count].astype(int)


def cmd_reference_state(args):
    from numpyvae import reference_state
    from numpyvae.rundir import TrainConfig
    from numpyvae.vae import check_settings

    given = {name: getattr(args, name) for name in NETWORK_FLAGS + STEP_FLAGS if hasattr(args, name)}
    _refuse_iwae_without_samples(given)
    config = TrainConfig(**given).validate()
    reference_state.check_out_path(args.out)       # before any work
    info = reference_state.write(args.out, config, data_dir=args.data_dir, synthetic=args.synthetic)
    print(f"{shown(args.out)}: one {config.objective} step of a float64 "
          f"{check_settings(**config.model_settings()).describe()}, batch {config.batch_size} ({info['data']})")
    return 0


def cmd_download(args):
    from numpyvae.datasets import default_data_dir
    from numpyvae.download import download_fashion_mnist

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    for path in download_fashion_mnist(data_dir):
        print(shown(path))
    return 0


def cmd_show_data(args):
    from numpyvae.atomicfile import remove_abandoned_temp_files
    from numpyvae.plots_data import save_data_grid
    from numpyvae import datasets

    images, labels = datasets.load_fashion_mnist(args.split, args.data_dir, download=False)
    remove_abandoned_temp_files(Path(args.out).parent, Path(args.out).name)     # what a killed write of it left
    save_data_grid(images, labels, args.out, n=args.n)
    print(shown(args.out))
    return 0


def cmd_explore(args):
    import signal

    from numpyvae import explore

    manifest, missing = explore.explore(args.run_dir, args.out, data_dir=args.data_dir)
    if missing:
        print(f"numpyvae explore: warning: the page has no map and no KL order: {one_line(missing)}", file=sys.stderr)
    if not args.serve:
        print(f"explore: the page is in {shown(args.out)}; a browser needs it served (--serve)")
        return 0
    print(f"explore: the page is in {shown(args.out)}")
    try:
        explore.serve(args.out, lambda url: print(f"serving at {url} (Ctrl-C to stop)", flush=True))
    except KeyboardInterrupt as stop:     # Ctrl-C is how a server is meant to stop; SIGTERM still reports itself
        if signal_of(stop) != signal.SIGINT:
            raise
        print("explore: stopped serving")
    return 0


# -- entry point ------------------------------------------------------------------------------

def _known_errors():
    """The exceptions that mean bad input or a bad environment: reported in one line, no traceback."""
    from numpyvae.backend import BackendError
    from numpyvae.checkpoint import CheckpointError
    from numpyvae.datasets import DataError
    from numpyvae.generate import GenerateError
    from numpyvae.idx import IDXError
    from numpyvae.memory import WontFit
    from numpyvae.rundir import RunError
    return (RunError, CheckpointError, DataError, IDXError, BackendError, GenerateError, WontFit, OSError)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"numpyvae: warning: {one_line(message)}", file=sys.stderr if file is None else file)


def main(argv=None):
    """Run the command in argv (default sys.argv[1:]); return the exit status."""
    name = "numpyvae"
    if hasattr(sys.stdout, "reconfigure"):      # a path that is not UTF-8 prints escaped, not as a traceback
        sys.stdout.reconfigure(errors="backslashreplace")
    with signals_raise() as received:
        try:        # Ctrl-C or SIGTERM may come at any moment, while NumPy imports or arguments parse too
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as exit:                 # --help, or a bad command line (already reported)
                return exit.code
            name = f"numpyvae {args.command}"
            return _run(name, args)
        except KeyboardInterrupt as stop:
            signum = signal_of(stop)
        except ImportError:        # a signal while a C extension (NumPy's) was loading surfaces as this
            if not received:
                raise
            signum = received[-1]
    print(f"{name}: {stopped_by(signum)}", file=sys.stderr)
    return 128 + signum


def _run(name, args):
    from numpyvae.rundir import Interrupted     # not train: only `train` needs tqdm and the loop
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return args.run(args)
        except Interrupted as stop:
            print(f"{name}: {one_line(stop)}", file=sys.stderr)
            return 128 + stop.signum
        except _known_errors() as error:
            print(f"{name}: error: {_one_line(error)}", file=sys.stderr)
            return 1
        except MemoryError:     # the last resort: settings are checked first, but memory is shared
            resume = "; a run that has taken no step yet may resume with a smaller --batch-size"
            resume = resume if args.run is cmd_train else ""          # the other commands have no run to resume
            print(f"{name}: error: out of memory (try a smaller model, --batch-size or number of samples{resume})",
                  file=sys.stderr)
            return 1


def _one_line(error):
    """An error as one line. An OSError reads as its file and the system's reason, without Python's "[Errno N]",
    and a hidden temporary file of atomic_write's is named as the file it was to become."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename is None:          # numpyvae's own wording, which names its file already
            return one_line(error.strerror)
        path = _written_file(error.filename2 if error.filename2 is not None else error.filename)
        if isinstance(error, FileExistsError) and Path(path).exists() and not Path(path).is_dir():
            return one_line(f"{shown(path)} exists and is not a folder")      # mkdir's "File exists"
        return one_line(f"{shown(path)}: {error.strerror}")
    return one_line(str(error) or type(error).__name__)


def _written_file(path):
    """The file a path stands for: atomic_write's `.NAME.RANDOM.tmp` stands for NAME, in the same folder."""
    import os
    import re

    from numpyvae.atomicfile import TOKEN_BYTES

    folder, name = os.path.split(os.fsdecode(path))
    temporary = re.fullmatch(rf"\.(.+)\.[0-9a-f]{{{2 * TOKEN_BYTES}}}\.tmp", name)
    return os.path.join(folder, temporary.group(1)) if temporary else os.fsdecode(path)

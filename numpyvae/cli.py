"""The `numpyvae` command: train, evaluate, figures, gradcheck, download, show-data.

    numpyvae train [--epochs 10] [--run-dir runs/default] [--resume] ...   train (or continue) a run
    numpyvae evaluate RUN_DIR [--samples 10] [--iw-samples 100] [--json]
    numpyvae figures RUN_DIR                                          every picture, into RUN_DIR/figures
    numpyvae generate RUN_DIR -n 16 --out new.png [--class sneaker]   new clothes from the prior
    numpyvae gradcheck [--quick] [--dtype float64] [--entries 20]     every gradient against finite differences
    numpyvae download [--data-dir data]                               fetch Fashion-MNIST
    numpyvae show-data [--split train] [--out fashion-mnist.png]      a grid of the data with class names

Bad input gets one line on stderr and a non-zero exit status, never a traceback:
2 for a bad command line, 1 for anything else that went wrong, 130 after Ctrl-C and 143 after
SIGTERM (128 + the signal's number, as shells report a process the signal ended).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import fields, replace
from pathlib import Path

RUN_DIR = "runs/default"
MAX_SHOW = 100          # show-data draws one subplot per image: 2,000 took 330 s and 1 GB


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    from numpyvae.rundir import MAX_SEED
    value = natural(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEED}, got {text}")
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


def positive_float(text):
    return _number(float, 0, False, text)


def nonnegative_float(text):
    return _number(float, 0, True, text)


def build_parser():
    from numpyvae.backend import BACKEND_NAMES          # light: imports numpy only
    from numpyvae.evaluate import ELBO_SAMPLES, IW_SAMPLES
    from numpyvae.datafiles import CLASS_NAMES
    from numpyvae.losses import LIKELIHOODS
    from numpyvae.vae import OBJECTIVES

    parser = Parser(prog="numpyvae", description="A variational autoencoder on NumPy/CuPy with hand-written "
                                                 "gradients, trained on Fashion-MNIST.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # train: only the flags given on the command line land in args (argument_default=SUPPRESS),
    # so --resume can take the rest from the run and refuse any that disagree with it.
    train = commands.add_parser("train", help="train a VAE, or continue one with --resume",
                                argument_default=argparse.SUPPRESS,
                                description="Train a VAE on Fashion-MNIST (defaults: the seed's 784-400-20 model, "
                                            "batch 128, Adam 1e-3, 10 epochs, Bernoulli likelihood).")
    train.add_argument("--epochs", type=natural,
                       help="epochs in total (default 10); with --resume, go on until this many")
    train.add_argument("--batch-size", type=positive_int, help="images per step (default 128)")
    train.add_argument("--lr", type=positive_float, help="Adam learning rate (default 1e-3)")
    train.add_argument("--hidden-dim", type=positive_int, help="hidden units (default 400)")
    train.add_argument("--latent-dim", type=positive_int, help="latent dimensions (default 20)")
    train.add_argument("--likelihood", choices=tuple(LIKELIHOODS), help="reconstruction term (default bernoulli): "
                       + "; ".join(f"{name}: {term.description}" for name, term in LIKELIHOODS.items()))
    train.add_argument("--conditional", dest="num_classes", action="store_const", const=len(CLASS_NAMES),
                       help="a conditional VAE: encoder and decoder also read each image's class, so "
                            "`numpyvae generate --class` can ask for one (default off)")
    train.add_argument("--beta", type=nonnegative_float, help="KL weight (default 1)")
    train.add_argument("--warmup-epochs", type=nonnegative_float,
                       help="ramp the KL weight from 0 to beta over this many epochs (default 0: no warm-up)")
    train.add_argument("--objective", choices=OBJECTIVES,
                       help="what to train on (default elbo): elbo, the evidence lower bound; iwae, the tighter "
                            "importance-weighted bound of Burda et al. with --samples K samples per image")
    train.add_argument("--samples", type=positive_int,
                       help="K, samples per image for --objective iwae (default 1; the ELBO takes 1)")
    train.add_argument("--binarize", action=argparse.BooleanOptionalAction,
                       help="train on pixels drawn as x ~ Bernoulli(pixel), anew every batch (default off)")
    train.add_argument("--seed", type=seed, help="seed for weights, shuffling and noise, 0 to 2**63-1 (default 0)")
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
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="test negative ELBO and importance-weighted bound of a run")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", type=directory)
    evaluate.add_argument("--samples", type=positive_int, default=ELBO_SAMPLES,
                          help=f"posterior samples per image for the negative ELBO (default {ELBO_SAMPLES})")
    evaluate.add_argument("--iw-samples", type=positive_int, default=IW_SAMPLES,
                          help=f"importance samples k per image for the IWAE bound (default {IW_SAMPLES})")
    evaluate.add_argument("--seed", type=natural, default=0, help="seed of the evaluation noise (default 0)")
    _model_options(evaluate, BACKEND_NAMES)
    evaluate.add_argument("--json", action="store_true", help="print the results as one JSON object")
    evaluate.set_defaults(run=cmd_evaluate)

    figures = commands.add_parser("figures", help="draw every figure of a run")
    figures.add_argument("run_dir", metavar="RUN_DIR", type=directory)
    figures.add_argument("--out", help="directory for the PNG files (default RUN_DIR/figures)")
    _model_options(figures, BACKEND_NAMES)
    figures.set_defaults(run=cmd_figures)

    generate = commands.add_parser("generate", help="new clothes from a run's prior, as a PNG grid or a .npy array",
                                   description="Decode z ~ N(0, I) with a run's last checkpoint. For a conditional "
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

    gradcheck = commands.add_parser("gradcheck", help="check every hand-written gradient against finite differences")
    gradcheck.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                           help="dtype of the models checked (default float64)")
    gradcheck.add_argument("--backend", choices=BACKEND_NAMES, default="numpy", help="default numpy")
    gradcheck.add_argument("--entries", type=positive_int, default=20,
                           help="entries checked per tensor of the full-size model (default 20)")
    gradcheck.add_argument("--quick", action="store_true", help="small models only (skip the 784-400-20 one)")
    gradcheck.add_argument("--seed", type=natural, default=0)
    gradcheck.set_defaults(run=cmd_gradcheck)

    download = commands.add_parser("download", help="download Fashion-MNIST into the data directory")
    download.add_argument("--data-dir", help="default $NUMPYVAE_DATA_DIR or ./data")
    download.set_defaults(run=cmd_download)

    show = commands.add_parser("show-data", help="save a grid of Fashion-MNIST images with their class names")
    show.add_argument("--data-dir", help="default $NUMPYVAE_DATA_DIR or ./data, then the system's")
    show.add_argument("--split", choices=("train", "test"), default="train")
    show.add_argument("-n", type=show_count, default=40, help=f"how many images, 1 to {MAX_SHOW} (default 40)")
    show.add_argument("--out", default="fashion-mnist.png", help="PNG to write (default fashion-mnist.png)")
    show.set_defaults(run=cmd_show_data)
    return parser


def _model_options(parser, backend_names):
    parser.add_argument("--backend", choices=backend_names, default="numpy", help="default numpy")
    parser.add_argument("--data-dir", help="Fashion-MNIST directory (default: the run's)")


# -- commands -------------------------------------------------------------------------------

def cmd_train(args):
    from numpyvae import plots
    from numpyvae.rundir import FIGURES_DIR, TrainConfig, read_config
    from numpyvae.train import Interrupted, NothingToDo, train

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    run_dir = Path(args.run_dir)
    config = replace(read_config(run_dir), **given) if args.resume else TrainConfig(**given)
    try:
        result = train(config, run_dir, resume=args.resume, download=args.download)
    except NothingToDo as done:
        print(done)
        return 0
    if args.figures:
        try:
            paths = plots.make_all(result.model, result.test_images, result.test_labels, result.metrics,
                                   run_dir / FIGURES_DIR)
        except KeyboardInterrupt:      # the run itself is saved and finished: only pictures are missing
            raise Interrupted(f"interrupted while drawing the figures; the run is complete. "
                              f"Draw them with: numpyvae figures {run_dir}") from None
        print(f"figures: {len(paths)} PNG files in {run_dir / FIGURES_DIR}")
    return 0


def _test_set(config, data_dir):
    from numpyvae import datasets
    return datasets.load_fashion_mnist("test", data_dir if data_dir is not None else config.data_dir, download=False)


def cmd_evaluate(args):
    from numpyvae import evaluate
    from numpyvae.rundir import load_run

    config, model, saved = load_run(args.run_dir, backend=args.backend)
    images, labels = _test_set(config, args.data_dir)
    data = evaluate.test_dataset(images, model.backend, model.dtype, config.binarize,
                                 labels=labels if model.conditional else None)
    started = time.perf_counter()
    results = evaluate.evaluate(model, data, elbo_samples=args.samples, iw_samples=args.iw_samples, seed=args.seed)
    is_bound = model.recon_term.is_density(binary=config.binarize)
    results = {"run_dir": str(args.run_dir), "epoch": saved.epoch, "likelihood": config.likelihood,
               "binarize": config.binarize, "conditional": model.conditional, **results, "is_bound": is_bound,
               "seconds": round(time.perf_counter() - started, 2)}
    if args.json:
        print(json.dumps(results))
        return 0
    where = f"after epoch {saved.epoch}" + (f", step {saved.step_in_epoch}" if saved.step_in_epoch else "")
    print(f"{args.run_dir} {where}, {results['test_images']} test images, nats per image:")
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
    from numpyvae.rundir import FIGURES_DIR, load_run, read_metrics

    config, model, _ = load_run(args.run_dir, backend=args.backend)
    images, labels = _test_set(config, args.data_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / FIGURES_DIR
    for path in plots.make_all(model, images, labels, read_metrics(args.run_dir), out):
        print(path)
    return 0


def cmd_generate(args):
    from numpyvae import generate
    from numpyvae.rundir import load_run

    _, model, saved = load_run(args.run_dir, backend=args.backend)
    generate.check_request(model, args.n, args.out, wants_class=args.class_name is not None)
    class_index = None if args.class_name is None else generate.parse_class(args.class_name, model.num_classes)
    images, labels = generate.generate(model, args.n, seed=args.seed, class_index=class_index)
    what = (f"{generate.CLASS_NAMES[class_index]}" if class_index is not None
            else "every class in turn" if model.conditional else "the prior")
    title = f"{args.n} new images from {args.run_dir} (epoch {saved.epoch}), {what}, seed {args.seed}"
    print(generate.save(images, labels, args.out, title))
    return 0


def cmd_gradcheck(args):
    from numpyvae import gradcheck

    sections = gradcheck.run_checks(full=not args.quick, small=True, dtype=args.dtype, backend=args.backend,
                                    entries=args.entries, seed=args.seed)
    print(gradcheck.format_table(sections))
    failed = sum(not row.passed for _, rows in sections for row in rows)
    checked = sum(len(rows) for _, rows in sections)
    print(f"\n{checked - failed} of {checked} gradients pass" + (f"; {failed} FAIL" if failed else ""))
    return 1 if failed else 0


def cmd_download(args):
    from numpyvae.datasets import default_data_dir
    from numpyvae.download import download_fashion_mnist

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    for path in download_fashion_mnist(data_dir):
        print(path)
    return 0


def cmd_show_data(args):
    from numpyvae.plots_data import save_data_grid
    from numpyvae import datasets

    images, labels = datasets.load_fashion_mnist(args.split, args.data_dir, download=False)
    save_data_grid(images, labels, args.out, n=args.n)
    print(args.out)
    return 0


# -- entry point ------------------------------------------------------------------------------

def _known_errors():
    """The exceptions that mean bad input or a bad environment: reported in one line, no traceback."""
    from numpyvae.backend import BackendError
    from numpyvae.checkpoint import CheckpointError
    from numpyvae.datasets import DataError
    from numpyvae.generate import GenerateError
    from numpyvae.idx import IDXError
    from numpyvae.rundir import RunError
    return (RunError, CheckpointError, DataError, IDXError, BackendError, GenerateError, OSError)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"numpyvae: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None):
    """Run the command in argv (default sys.argv[1:]); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:                 # --help, or a bad command line (already reported)
        return exit.code
    from numpyvae.rundir import Interrupted     # not train: only `train` needs tqdm and the loop
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return args.run(args)
        except Interrupted as stop:
            print(f"numpyvae {args.command}: {stop}", file=sys.stderr)
            return 128 + stop.signum
        except KeyboardInterrupt:
            print(f"numpyvae {args.command}: interrupted", file=sys.stderr)
            return 130
        except _known_errors() as error:
            print(f"numpyvae {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 1
        except MemoryError:     # the last resort: settings are checked first, but memory is shared
            print(f"numpyvae {args.command}: error: out of memory (try a smaller model, --batch-size "
                  f"or number of samples)", file=sys.stderr)
            return 1


def _one_line(error):
    text = str(error) or type(error).__name__
    return " ".join(text.split())

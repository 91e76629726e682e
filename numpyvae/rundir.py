"""A run's settings and its directory: TrainConfig, config.json, metrics.csv, and loading a run.

A run directory holds

    config.json      the TrainConfig, as JSON
    metrics.csv      one row per epoch: epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds
                     (an IWAE run adds train_iwae,test_iwae: the negative K-sample bound it trains on)
    checkpoint.npz   everything needed to continue (see checkpoint.py), rewritten atomically each epoch
    figures/         the pictures (plots.py)

Every file is written atomically (a temporary file, then a rename), so a crash
leaves the old version or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import signal
from dataclasses import InitVar, asdict, dataclass, fields
from pathlib import Path

import numpy as np

from numpyvae import checkpoint, output_bias
from numpyvae.atomicfile import atomic_write, temp_name_pattern
from numpyvae.backend import BACKEND_NAMES
from numpyvae.messages import shown
from numpyvae.optim import BETAS, EPS
from numpyvae.network import ARCHITECTURES, make_spec
from numpyvae.objectives import OBJECTIVES
from numpyvae.priors import DEFAULT_PSEUDO_INPUTS, PRIORS
from numpyvae.vae import MODEL_SETTINGS, VAE, check_settings

CONFIG_FILE, METRICS_FILE, FIGURES_DIR = "config.json", "metrics.csv", "figures"
LOCK_FILE = ".lock"     # held by the process training in the directory
METRICS_COLUMNS = ("epoch", "train_loss", "train_recon", "train_kl",
                   "test_loss", "test_recon", "test_kl", "seconds")
IWAE_COLUMNS = ("train_iwae", "test_iwae")   # an IWAE run's extra columns: -log (1/K) sum_k w_k, per image
DTYPES = ("float32", "float64")
MAX_INT64 = 2 ** 63 - 1         # the checkpoint stores the seed, epochs and steps as int64: no setting may pass it
MAX_FLOAT_INT = int(np.finfo(np.float64).max)     # the largest integer a float holds
MAX_EPOCH_SECONDS = 100 * 86400  # a checkpoint claiming an epoch trained for more than 100 days is not believed


@dataclass
class TrainConfig:
    """Everything that defines a run. The defaults are the seed's model and recipe."""
    epochs: int = 10                  # passes over the 60,000 training images
    batch_size: int = 128             # images per Adam step
    lr: float = 1e-3                  # Adam's learning rate
    input_shape: tuple = (1, 28, 28)  # one image, channels first (taken from the data)
    arch: str = "dense"               # the network: "dense" (the seed's) or "conv" (network.ARCHITECTURES)
    hidden_dims: tuple | None = None  # dense: hidden widths (400,); conv: channels (32, 64); None: the arch's
    latent_dim: int = 20              # Z: size of the latent code
    likelihood: str = "bernoulli"     # a name in losses.LIKELIHOODS: "bernoulli", "gaussian", "continuous-bernoulli"
    num_classes: int = 0              # C: 0 for a plain VAE; a conditional one (--conditional) reads 10 labels
    prior: str = "normal"             # p(z): "normal", N(0, I), or "vamp", the VampPrior (priors.PRIORS)
    pseudo_inputs: int = DEFAULT_PSEUDO_INPUTS   # the VampPrior's K learned pseudo-inputs
    sigma: str = "fixed"              # the Gaussian decoder's sigma: "fixed", "learned" or "optimal" (losses.py)
    beta: float = 1.0                 # KL weight: objective = recon + beta * KL (1 is the plain VAE)
    warmup_epochs: float = 0.0        # ramp the KL weight linearly from 0 to beta over this many epochs
    binarize: bool = False            # train on x ~ Bernoulli(pixels), drawn anew for every batch
    seed: int = 0                     # initial weights, shuffling, eps and binarization noise
    backend: str = "numpy"            # "numpy", "cupy", "auto" (CuPy when a GPU is usable) or "fakegpu"
    dtype: str = "float32"            # float32 to train; float64 is there for checking
    data_dir: str | None = None       # the Fashion-MNIST files (None: $NUMPYVAE_DATA_DIR, else ./data)
    objective: str = "elbo"           # what is trained on: "elbo", or "iwae", the K-sample bound (objectives.py)
    samples: int = 1                  # K, samples per image for the IWAE objective (1 for the ELBO)
    init_output_bias: str = "default"  # the decoder's output bias at the start: as drawn, or "mean" (output_bias.py)
    # the older names, read by runs made before `arch` existed: D pixels and one hidden width H
    input_dim: InitVar[int | None] = None
    hidden_dim: InitVar[int | None] = None

    def __post_init__(self, input_dim, hidden_dim):
        """Older names to newer, lists (from JSON) to tuples, and hidden_dims None to the arch's default."""
        if input_dim is not None or hidden_dim is not None:
            try:
                spec = make_spec(input_dim, hidden_dim, input_shape=self.input_shape if input_dim is None else None,
                                 hidden_dims=None if hidden_dim is not None else self.hidden_dims, arch=self.arch)
            except ValueError as error:
                raise ConfigError(str(error)) from None
            self.input_shape, self.hidden_dims = spec.input_shape, spec.hidden_dims
        for name in ("input_shape", "hidden_dims"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        if self.hidden_dims is None and self.arch in ARCHITECTURES:
            self.hidden_dims = ARCHITECTURES[self.arch].hidden_dims

    def validate(self):
        """Raise ConfigError naming the first setting that cannot work."""
        def need(ok, message):
            if not ok:
                raise ConfigError(message)
        try:                          # the network's own settings: the model says what it accepts
            check_settings(**self.model_settings())
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name in ("epochs", "batch_size", "seed", "samples"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, not {value!r}")
        need(self.epochs >= 0, f"epochs must be 0 or more, not {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be at least 1, not {self.batch_size}")
        need(self.seed >= 0, f"seed must be 0 or more, not {self.seed}")
        for name in ("epochs", "batch_size", "seed", "samples"):
            need(getattr(self, name) <= MAX_INT64, f"{name} must be at most 2**63-1, not {_short(getattr(self, name))}")
        for name in ("lr", "beta", "warmup_epochs"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and not isinstance(value, bool),
                 f"{name} must be a number, not {value!r}")
            # an integer of 310+ digits is a valid JSON number that no float can hold (OverflowError)
            need(not isinstance(value, int) or abs(value) <= MAX_FLOAT_INT,
                 f"{name} must be a finite number, not {_short(value)}")
        for name in ("backend", "dtype"):
            need(isinstance(getattr(self, name), str), f"{name} must be a name, not {getattr(self, name)!r}")
        need(self.data_dir is None or isinstance(self.data_dir, str),
             f"data_dir must be a directory name or null, not {self.data_dir!r}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, not {self.lr}")
        need(math.isfinite(self.beta) and self.beta >= 0, f"beta must be 0 or more, not {self.beta}")
        need(math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0,
             f"warmup_epochs must be 0 or more, not {self.warmup_epochs}")
        need(self.backend in BACKEND_NAMES, f"backend must be one of {', '.join(BACKEND_NAMES)}, "
                                            f"not {self.backend!r}")
        need(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        need(isinstance(self.binarize, bool), f"binarize must be true or false, not {self.binarize!r}")
        need(isinstance(self.objective, str) and self.objective in OBJECTIVES,
             f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        goal = OBJECTIVES[self.objective]
        need(self.samples >= 1, f"samples must be at least 1, not {self.samples}")
        need(self.init_output_bias in output_bias.CHOICES,
             f"init_output_bias must be one of {', '.join(output_bias.CHOICES)}, not {self.init_output_bias!r}")
        takes = " or ".join(f"--objective {name}" for name, o in OBJECTIVES.items() if o.takes_samples)
        need(goal.takes_samples or self.samples == 1,
             f"samples {self.samples} is for {takes}; {goal.noun} takes 1 sample per image")
        need(goal.takes_kl_weight or (self.beta == 1 and self.warmup_epochs == 0),
             f"{goal.noun} has no KL weight: beta must be 1 and warmup_epochs 0")
        return self

    def model_settings(self):
        """The settings that define the network, as VAE(**settings) takes them."""
        return {name: getattr(self, name) for name in MODEL_SETTINGS}

    @classmethod
    def from_dict(cls, values, source="config"):
        """A validated TrainConfig from a dict (e.g. config.json); unknown keys are refused."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source} is not a JSON object")
        # a run written before a setting existed was made with the value that reproduces it
        values = {**ADDED_LATER, **values}
        for old, new in RENAMED.items():
            if old in values and new not in values:
                values[new] = None      # __post_init__ fills it in from the older setting
        names = {f.name for f in fields(cls)}
        unknown, missing = set(values) - names - set(RENAMED), names - set(values)
        if unknown:
            raise ConfigError(f"{source} has unknown setting(s): {', '.join(sorted(unknown))}")
        if missing:   # a default filled in here would silently define a different run
            raise ConfigError(f"{source} lacks setting(s): {', '.join(sorted(missing))}")
        try:
            return cls(**values).validate()
        except ConfigError as error:      # the message names the file the setting came from
            raise ConfigError(f"{source}: {error}") from None


def _short(value):
    """A number as a message shows it: all of it, or its size if it has more digits than fit on a line."""
    text = str(value)
    return text if len(text) <= 30 else f"an integer of {len(text.lstrip('-'))} digits"


# Settings added after runs were first written, with the value every older run had.
ADDED_LATER = {"num_classes": 0, "arch": "dense", "objective": "elbo", "samples": 1, "prior": "normal",
               "pseudo_inputs": DEFAULT_PSEUDO_INPUTS, "init_output_bias": "default", "sigma": "fixed"}
# Settings renamed when the network became a description (network.ModelSpec): older name -> newer.
RENAMED = {"input_dim": "input_shape", "hidden_dim": "hidden_dims"}

# Settings a resumed run may change: how long to go on, where to compute, where the data is.
# Everything else defines the run, and changing it would make the resumed run a different one.
RESUMABLE_CHANGES = ("epochs", "backend", "data_dir")


class RunError(RuntimeError):
    """A run cannot start or go on; the one-line message says why and what to do."""


class ConfigError(RunError, ValueError):
    """A setting out of range, or one that disagrees with the run being resumed."""


class Interrupted(RunError):
    """Ctrl-C or SIGTERM stopped training (the message says what was saved and how to go on).

    signum: the signal, so that the command can exit as the signal's convention says (128 + signum).
    """

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class Diverged(RunError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class NothingToDo(RunError):
    """--resume of a run that already has the epochs asked for."""


def read_config(run_dir):
    """The TrainConfig in run_dir/config.json; RunError if the directory is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"no run directory {shown(run_dir)}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{shown(run_dir)} is not a numpyvae run directory (it has no {CONFIG_FILE})")
    try:
        values = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:   # bad JSON, bad UTF-8, an integer of 4,300+ digits, deep nesting
        raise RunError(f"{shown(path)} is not valid JSON ({str(error)[:200] or type(error).__name__})") from None
    return TrainConfig.from_dict(values, source=shown(path))


def write_config(run_dir, config):
    with atomic_write(Path(run_dir) / CONFIG_FILE) as file:
        file.write((json.dumps(asdict(config), indent=2) + "\n").encode())


def read_metrics(run_dir):
    """The rows of run_dir/metrics.csv as dicts of numbers ([] if there is no file yet)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunError(f"{shown(path)} is not UTF-8 text ({error.reason} at byte {error.start}); "
                       "it has been damaged") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = tuple(reader.fieldnames or ())
    if columns not in (METRICS_COLUMNS, METRICS_COLUMNS + IWAE_COLUMNS):
        raise RunError(f"{shown(path)} does not have the columns {','.join(METRICS_COLUMNS)}")
    try:
        rows = [{key: int(row[key]) if key == "epoch" else float(row[key]) for key in columns}
                for row in reader]
    except (TypeError, ValueError) as error:
        raise RunError(f"{shown(path)} has a malformed row ({error})") from None
    # training writes one finite row per epoch, 1, 2, 3, ...: anything else is damage, not a result
    for number, row in enumerate(rows, start=1):
        if row["epoch"] != number:
            raise RunError(f"{shown(path)} has a row for epoch {row['epoch']} where epoch {number} should be; "
                           "it has been damaged or edited")
        broken = [key for key in columns[1:] if not math.isfinite(row[key])]
        if broken:
            raise RunError(f"{shown(path)} has {', '.join(broken)} of NaN or Inf in epoch {number}; "
                           "it has been damaged or edited")
        for part in ("train", "test"):    # the loss is recon + KL, each written to 4 decimals
            if abs(row[f"{part}_loss"] - row[f"{part}_recon"] - row[f"{part}_kl"]) > 1e-3:
                raise RunError(f"{shown(path)} says epoch {number}'s {part} loss is {row[f'{part}_loss']:g}, but "
                               f"its recon and KL add up to {row[f'{part}_recon'] + row[f'{part}_kl']:g}; "
                               "it has been damaged or edited")
        if not 0 <= row["seconds"] <= MAX_EPOCH_SECONDS:
            raise RunError(f"{shown(path)} says epoch {number} took {row['seconds']:g} seconds; "
                           "it has been damaged or edited")
    return rows


def saved_rows(rows, saved):
    """The rows of metrics.csv for the epochs the checkpoint `saved` holds: a save that failed after
    its epoch's row was written (and could not take the row back) leaves one row more."""
    return [row for row in rows if row["epoch"] <= saved.epoch]


def write_metrics(run_dir, rows, iwae=False):
    """Rewrite run_dir/metrics.csv atomically with `rows` (and, iwae=True, the IWAE_COLUMNS after them)."""
    extra = IWAE_COLUMNS if iwae else ()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(METRICS_COLUMNS + extra)
    for row in rows:
        writer.writerow([row["epoch"]] + [f"{row[key]:.4f}" for key in METRICS_COLUMNS[1:-1]]
                        + [f"{row['seconds']:.2f}"] + [f"{row[key]:.4f}" for key in extra])
    with atomic_write(Path(run_dir) / METRICS_FILE) as file:
        file.write(text.getvalue().encode())


def check_same_run(saved, other, what, may_differ=()):
    """Raise ConfigError if `other` differs from `saved` in a setting that defines the run
    (other than those in may_differ)."""
    for field in fields(TrainConfig):
        name = field.name
        if name not in RESUMABLE_CHANGES + tuple(may_differ) and getattr(saved, name) != getattr(other, name):
            raise ConfigError(f"{what}: {name} is {getattr(other, name)!r}, but the run was made with "
                              f"{name} {getattr(saved, name)!r}")


def build_model(config, backend=None):
    """A fresh VAE for `config` (on `backend` if given, else the config's)."""
    return VAE(**config.model_settings(), backend=backend or config.backend, dtype=np.dtype(config.dtype),
               seed=config.seed)


def open_run(run_dir):
    """(config, checkpoint) of the run in run_dir, once the checkpoint is shown to belong to it.

    The config is config.json's. A checkpoint whose own copy of the config disagrees with it
    in a setting that defines the run came from another run: CheckpointError.
    """
    config = read_config(run_dir)
    path = Path(run_dir) / checkpoint.FILENAME
    saved = checkpoint.load(path)
    try:
        saved_config = TrainConfig.from_dict(saved.config, source=shown(path))
        # before its first step a run may resume with another batch size and K (see train._resumable)
        check_same_run(config, saved_config, str(path),
                       may_differ=() if saved.adam["t"] else ("batch_size", "samples"))
    except ConfigError as error:
        raise checkpoint.CheckpointError(f"{shown(path)} does not belong to this run: {error}") from None
    check_written_by(config, saved_config, saved, path)
    return config, saved


def check_written_by(config, saved_config, saved, path):
    """Refuse (CheckpointError) a checkpoint holding values that a run with `config` never writes.

    saved_config: the checkpoint's own copy of the config. Its CRCs may all be valid and still a
    value be impossible: an Adam setting that is not the run's would silently train another run.
    """
    def need(ok, message):
        if not ok:
            raise checkpoint.CheckpointError(f"{shown(path)} cannot be resumed: {message}")
    adam = saved.adam
    for name, value in (("lr", config.lr), ("beta1", BETAS[0]), ("beta2", BETAS[1]), ("eps", EPS)):
        need(adam[name] == value, f"Adam's {name} is {adam[name]!r}, but the run trains with {value!r}")
    need(saved.seed == config.seed, f"its seed is {saved.seed}, but the run's is {config.seed}")
    need(saved.params.dtype == np.dtype(config.dtype), f"its parameters are {saved.params.dtype}, "
                                                       f"but the run trains in {config.dtype}")
    for name in ("m", "v"):
        need(adam[name].dtype == saved.params.dtype, f"Adam's {name} is {adam[name].dtype}, "
                                                     f"its parameters {saved.params.dtype}")
    started = saved.epoch + (1 if saved.step_in_epoch else 0)      # the epochs it had begun
    need(started <= saved_config.epochs, f"it has begun {started} epochs of a run of {saved_config.epochs}")
    iwae = bool(OBJECTIVES[config.objective].bound_columns)     # it sums its own bound too
    need(saved.running.shape == ((4,) if iwae else (3,)),
         f"its running sums have shape {saved.running.shape}, which does not fit the {config.objective} objective")
    recon, kl, images = (float(value) for value in saved.running[:3])
    need(saved.epoch_seconds >= 0, f"the unfinished epoch took {saved.epoch_seconds} seconds")
    need(saved.epoch_seconds <= MAX_EPOCH_SECONDS, f"the unfinished epoch took {saved.epoch_seconds:g} seconds, "
                                                   f"more than {MAX_EPOCH_SECONDS // 86400} days")
    if iwae:
        # Jensen: log of the mean of the K weights >= the mean of their logs, image by image, so the
        # negative bound is never above the K-sample negative ELBO, recon + (log q - log p); the slack
        # covers float32 rounding of the per-batch sums
        bound = float(saved.running[3])
        need(bound <= recon + kl + 1e-4 * (abs(recon) + abs(kl)) + 1,
             f"the unfinished epoch's IWAE loss sum {bound:g} exceeds its ELBO sum {recon + kl:g}, which "
             f"a K-sample bound never does")
    # a KL in closed form is never negative; an estimate, log q - log p at samples (IWAE's, a VampPrior's), can be
    closed_form = not iwae and PRIORS[config.prior].kl_closed_form
    need(not closed_form or kl >= 0, f"the unfinished epoch's KL sum is {kl}, but a KL divergence is never negative")
    need(images == int(images) and images >= 0, f"the unfinished epoch counts {images} images")
    if saved.step_in_epoch == 0:
        need(not saved.running.any() and saved.epoch_seconds == 0,
             "it is at an epoch boundary but holds sums or seconds of an unfinished epoch")


def check_recorded(config, saved, rows, path, metrics_path):
    """Refuse (RunError) a resume whose checkpoint and metrics.csv rows do not tell one story.

    What can be defended, and is checked: every epoch the checkpoint has finished has its row (so an
    epoch counter edited upwards is caught), an IWAE run's rows have its bound and an ELBO run's do
    not (else the first row written would fail after a whole epoch), and the unfinished epoch's loss
    so far is within a wide band of the last finished epoch's: |loss - last| <= 2 |last| + 100 nats
    per image (a real epoch's running loss moves a few percent from the one before; an edited sum
    lands far outside). What cannot be checked: the first epoch's sums (no row to compare with).
    """
    def need(ok, message):
        if not ok:
            raise RunError(f"{shown(path)} and {shown(metrics_path)} disagree: {message}; the run cannot be resumed")
    need(len(rows) >= saved.epoch, f"the checkpoint has finished {saved.epoch} epochs but "
                                   f"{len(rows)} are recorded")
    iwae = bool(OBJECTIVES[config.objective].bound_columns)
    if rows:
        need(("train_iwae" in rows[0]) == iwae,
             f"the rows {'lack' if iwae else 'have'} the IWAE columns {', '.join(IWAE_COLUMNS)} "
             f"of a run with the {config.objective} objective")
    images = float(saved.running[2])
    if saved.step_in_epoch and saved.epoch and images:
        last = rows[saved.epoch - 1]["train_iwae" if iwae else "train_loss"]
        loss = float(saved.running[3] if iwae else saved.running[0] + saved.running[1]) / images
        need(abs(loss - last) <= 2 * abs(last) + 100,
             f"the unfinished epoch's {'IWAE ' if iwae else ''}loss so far is {loss:.2f} per image, "
             f"epoch {saved.epoch}'s was {last:.2f}")


def check_position(saved, steps, batch_size, num_images, path):
    """Refuse (CheckpointError) a checkpoint whose place in the run does not fit the data:
    `steps` optimizer steps of `batch_size` per epoch over `num_images` training images."""
    def need(ok, message):
        if not ok:
            raise checkpoint.CheckpointError(f"{shown(path)} is corrupt: {message}")
    need(saved.step_in_epoch <= steps, f"it is at step {saved.step_in_epoch} of an epoch of {steps} steps")
    taken = saved.epoch * steps + saved.step_in_epoch
    need(saved.adam["t"] == taken, f"Adam has taken {saved.adam['t']} steps, but {saved.epoch} epochs of "
                                   f"{steps} per epoch and {saved.step_in_epoch} more make {taken}")
    images = min(saved.step_in_epoch * batch_size, num_images)   # only the last batch of an epoch is smaller
    need(saved.running[2] == images, f"the unfinished epoch counts {saved.running[2]:g} images, but its "
                                     f"{saved.step_in_epoch} steps of {batch_size} saw {images}")


def check_input_fits(config, image_shape):
    """Refuse (RunError) a run whose model does not take images of `image_shape` (evaluate, figures, generate)."""
    pixels, takes = math.prod(image_shape), math.prod(config.input_shape)
    if takes != pixels:
        raise RunError(f"the run's model takes {takes} pixels per image, but the images are "
                       f"{' x '.join(map(str, image_shape))} = {pixels} pixels; numpyvae can evaluate, draw and "
                       f"generate only with a model made for them")


# What a new run writes before its first checkpoint. A directory holding nothing else is a run that
# stopped before it had anything to resume (a crash, kill -9, a failed start), and a new run may
# start there; any other file in it is someone's, and the new run is refused.
NEW_RUN_FILES = (CONFIG_FILE, METRICS_FILE, LOCK_FILE)


def check_new_run_dir(run_dir):
    """Refuse (RunError) to start a new run in run_dir unless it is missing, empty, or a numpyvae
    run that stopped before its first checkpoint; touch nothing."""
    run_dir = Path(run_dir)
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    if not run_dir.is_dir():
        raise RunError(f"{shown(run_dir)} exists and is not a directory; choose another --run-dir")
    if (run_dir / checkpoint.FILENAME).exists():
        raise RunError(f"{shown(run_dir)} already holds a run; continue it with --resume, or choose another --run-dir")
    refuse = ("a new run starts only in a missing or empty directory, or one a numpyvae run left before its "
              "first checkpoint; choose another --run-dir")
    temporary = [temp_name_pattern(name) for name in (CONFIG_FILE, METRICS_FILE, checkpoint.FILENAME)]
    for entry in sorted(run_dir.iterdir()):
        name = entry.name
        ours = name in NEW_RUN_FILES or any(pattern.fullmatch(name) for pattern in temporary)
        if not ours or not entry.is_file() or entry.is_symlink():
            raise RunError(f"{shown(run_dir)} holds {name!r}, which no numpyvae run left there: {refuse}")
    if (run_dir / CONFIG_FILE).exists():
        try:
            read_config(run_dir)
        except RunError as error:
            raise RunError(f"{shown(run_dir)} holds a {CONFIG_FILE} that is not a numpyvae run's ({error}): "
                           f"{refuse}") from None
    metrics = run_dir / METRICS_FILE
    headers = [(",".join(columns) + "\n").encode() for columns in (METRICS_COLUMNS, METRICS_COLUMNS + IWAE_COLUMNS)]
    if metrics.exists() and metrics.read_bytes() not in headers:
        raise RunError(f"{shown(run_dir)} holds a {METRICS_FILE} with results but no checkpoint: {refuse}")


def load_run(run_dir, backend=None):
    """(config, model, checkpoint) of a run, for evaluating and drawing it."""
    config, saved = open_run(run_dir)
    model = build_model(config, backend)
    checkpoint.restore(saved, model, path=Path(run_dir) / checkpoint.FILENAME)
    return config, model, saved


@contextlib.contextmanager
def exclusive(run_dir):
    """Hold run_dir's lock while training, so two processes never write into one run.

    An advisory flock on run_dir/.lock: the operating system drops it when the process
    ends, even on a crash, so a stale lock cannot block the next run. (No fcntl, no lock:
    on Windows the run goes ahead unguarded.)
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        handle = open(Path(run_dir) / LOCK_FILE, "a")
    except OSError as error:           # a read-only folder: name it, not the hidden lock file
        raise OSError(error.errno, f"cannot write in {shown(run_dir)}: {error.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another numpyvae process is training in {shown(run_dir)}; "
                           "wait for it to finish or choose another --run-dir") from None
        yield

"""Training: the loop, exact resume, and a Ctrl-C that loses nothing.

The run's settings and the files of its directory are in rundir.py. Losses in metrics.csv and in the per-epoch line are per image, in nats: "loss" is the
negative ELBO, recon + KL, whatever the KL weight beta (with beta != 1 the objective being
minimized is recon + beta * KL; both parts are in the table). "seconds" is the time spent
on the epoch's training steps; the test pass after it is not counted.
A run with --objective iwae trains on the negative K-sample IWAE bound (iwae.py) and adds
the columns train_iwae and test_iwae, that bound on the training batches and on the test set
(at the same K); its recon and KL are then averages over the K samples, KL as log q - log p.

Exact resume. Epoch e draws all its randomness from streams seeded by (seed, e): the
shuffle, the eps of every step and, with binarize, the pixels' coin flips. Resuming
re-creates the streams of the epoch it stopped in and replays them, drawing without
training, up to the step it stopped at, so a resumed run is bit for bit the one that
never stopped (on the NumPy backend; a GPU's sums may be ordered differently run to run).

Ctrl-C (SIGINT) or SIGTERM (`kill`, a batch system's preemption) sets a flag; the step in
flight finishes, the state is saved mid-epoch, and train() raises Interrupted (also when the
signal came during the last epoch's test pass or save: the run is then complete, but the
signal is not swallowed). A second signal acts at once and saves nothing (the last checkpoint
stays). A NaN or Inf loss raises Diverged at the end of the epoch, before anything of that
epoch is saved.

Shapes: N = training images, B = batch, D = pixels, Z = latent.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from numpyvae import checkpoint, datasets, evaluate, memory, output_bias
from numpyvae.atomicfile import remove_stale_temp_files
from numpyvae.backend import get_backend
from numpyvae.batches import DeviceDataset
from numpyvae.layers import Workspace
from numpyvae.messages import shell_quote, shown
from numpyvae.network import make_spec
from numpyvae.objectives import get_objective
from numpyvae.optim import Adam
from numpyvae.rundir import (CONFIG_FILE, LOCK_FILE, METRICS_FILE, NEW_RUN_FILES, RESUMABLE_CHANGES,  # noqa: F401
                             ConfigError, Diverged, Interrupted, NothingToDo, RunError,
                             TrainConfig, build_model, check_new_run_dir, check_position, check_recorded,
                             check_same_run, exclusive, open_run, read_metrics, saved_rows, write_config,
                             write_metrics)
from numpyvae.signals import signal_of, stopped_by
from numpyvae.threads import Threads
from numpyvae.vae import VAE

# Streams of epoch e: shuffle from SeedSequence((seed, e)) (batches.py), the others from these.
EPS_STREAM, BINARIZE_STREAM = 1, 2
PROGRESS_EVERY = 50     # steps between running-loss reads for the progress bar (each read is a sync)
PLAIN_PROGRESS_SECONDS = 30   # without a terminal (batch jobs, log files): one plain line this often
# NEW_RUN_FILES (rundir.py): what a new run writes before its first checkpoint, removed again if it
# fails before then (the lock last: it is removed while still held, so no other process can have
# begun writing in between).


class TrainResult(NamedTuple):
    config: TrainConfig
    model: VAE
    metrics: list             # one dict per epoch, keys METRICS_COLUMNS
    test_images: np.ndarray   # (N, 28, 28) uint8, as loaded (for the pictures)
    test_labels: np.ndarray   # (N,) uint8


# -- data ---------------------------------------------------------------------------------

def kl_weight(config, epoch, step, steps):
    """beta for step `step` (0-based) of epoch `epoch` (1-based): ramped from 0 over warmup_epochs."""
    if config.warmup_epochs <= 0:
        return config.beta
    return config.beta * min(1.0, (epoch - 1 + step / steps) / config.warmup_epochs)


# -- Ctrl-C and SIGTERM -----------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)     # Ctrl-C; `kill` and batch systems' preemption


class StopRequest:
    """While active, the first Ctrl-C or SIGTERM only sets `signum`; the loop stops at the next step boundary.

    The handler then puts the previous ones back, so a second signal acts at once (Ctrl-C raises
    KeyboardInterrupt; SIGTERM ends the process, or under the `numpyvae` command raises
    signals.Terminated, a KeyboardInterrupt too). Signals can only be caught in the main thread;
    elsewhere this does nothing.
    """

    def __init__(self):
        self.signum = None                 # the signal received, if any
        self._previous = {}

    @property
    def requested(self):
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous is None:       # set outside Python: we cannot put it back, so put the default
                    previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
                self._previous[signum] = previous
                signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        self._restore()

    def _restore(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def __exit__(self, *exc_info):
        self._restore()
        return False


# -- the loop ---------------------------------------------------------------------------------

class Trainer:
    """One run: its config, model, optimizer and data, and the position it has reached."""

    threads = None           # a threads.Threads to tick after every step (set by train()), or None

    def __init__(self, config, run_dir, model, optimizer, train_images, test_images,
                 metrics, log=print, on_step=None, progress=None, train_labels=None, test_labels=None):
        self.config, self.run_dir = config, Path(run_dir)
        self.model, self.optimizer = model, optimizer
        self.backend, self.xp = model.backend, model.xp
        # labels go to the device only for a conditional model, which reads them every step
        if not model.conditional:
            train_labels = test_labels = None
        self.train_data = DeviceDataset(train_images, model.backend, model.dtype, labels=train_labels)
        self.test_data = evaluate.test_dataset(test_images, model.backend, model.dtype, config.binarize,
                                               labels=test_labels)
        self.steps = self.train_data.num_batches(config.batch_size)
        self.metrics = metrics
        self.log, self.on_step = log, on_step
        terminal = sys.stderr.isatty()
        self.progress = terminal if progress is None else progress
        self.plain_progress = progress is None and not terminal   # lines, not a bar that redraws itself
        self.buffers = Workspace(self.xp, model.dtype)   # the step's noise and coins, reused: a workspace of
                                                         # its own, so they cannot collide with the model's
        self.objective = get_objective(config.objective)
        self.iwae = bool(self.objective.bound_columns)    # a bound of its own (IWAE's), and its sum, are tracked too

    @property
    def checkpoint_path(self):
        return self.run_dir / checkpoint.FILENAME

    def save(self, epoch, step_in_epoch=0, running=None, seconds=0.0):
        if running is None:       # at an epoch boundary: nothing summed yet (an IWAE run also sums its bound)
            running = np.zeros(4 if self.iwae else 3)
        try:
            checkpoint.save(self.checkpoint_path, asdict(self.config), self.model, self.optimizer,
                            epoch, step_in_epoch, running, seconds)
        except checkpoint.CheckpointError as error:
            # e.g. Adam's v overflowed float32 while the parameters stayed finite; the refusal
            # comes before anything is written, so the old checkpoint is still there
            raise Diverged(f"{error} (try a smaller --lr); training stopped and {self._kept()}") from None

    def run(self, start_epoch, start_step=0, running=None, seconds=0.0):
        """Train epochs start_epoch..config.epochs, the first from step start_step on."""
        # NaN and Inf are caught at the end of each epoch with a message saying what to do;
        # NumPy's warnings from the operations that made them would only repeat it, many times.
        with StopRequest() as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(start_epoch, self.config.epochs + 1):
                self._epoch(epoch, start_step, running, seconds, stop)
                start_step, running, seconds = 0, None, 0.0
                if stop.requested and epoch < self.config.epochs:
                    raise Interrupted(f"{stopped_by(stop.signum)} after epoch {epoch}; saved to "
                                      f"{shown(self.checkpoint_path)}. {self._how_to_resume()}", stop.signum)
            if stop.requested:     # during the last epoch's test pass or save: done, but the signal still counts
                raise Interrupted(f"{stopped_by(stop.signum)} after the last epoch ({self.config.epochs}); the run "
                                  f"is complete and saved to {shown(self.checkpoint_path)}, its figures not drawn. "
                                  f"Draw them with: numpyvae figures {shell_quote(self.run_dir)}", stop.signum)

    def _how_to_resume(self):
        return f"Continue with: numpyvae train --run-dir {shell_quote(self.run_dir)} --resume"

    def _epoch(self, epoch, start_step, running, seconds, stop):
        """One pass over the training set (from start_step on), then the test pass, metrics and checkpoint."""
        config, model, xp = self.config, self.model, self.xp
        eps_rng = self.backend.rng((config.seed, epoch, EPS_STREAM))
        coin_rng = self.backend.rng((config.seed, epoch, BINARIZE_STREAM)) if config.binarize else None
        # recon and KL summed over the epoch so far, on the device: read once, at the end
        sums = xp.zeros(3 if self.iwae else 2, dtype=np.float64)   # an IWAE run's third: its negative bound
        images = 0
        if running is not None:
            sums[...] = self.backend.to_device(np.asarray(np.delete(running, 2), dtype=np.float64))
            images = int(running[2])
        done = start_step                    # steps of this epoch taken, counting those before a resume
        step_finished = True                 # False while a step is half done: no saving then
        bar = tqdm(total=self.steps, initial=start_step, desc=f"epoch {epoch}/{config.epochs}", unit="step",
                   leave=False, disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        started = last_line = time.perf_counter()
        try:
            batches = self.train_data.labeled_batches(config.batch_size, shuffle=True, seed=(config.seed, epoch))
            for step, (x, y) in enumerate(batches):     # y: (B,) labels, or None for a plain VAE
                eps_shape = self.objective.noise_shape(config.samples, x.shape[0], model.latent_dim)   # ([K,] B, Z)
                eps = self.buffers.get("train.eps", eps_shape)
                self.backend.standard_normal(eps_rng, eps)
                if config.binarize:
                    uniform = self.backend.uniform(coin_rng, self.buffers.get("train.uniform", x.shape))
                    x = xp.less(uniform, x, out=self.buffers.get("train.coins", x.shape))   # 1 with probability x
                if step < start_step:
                    continue                 # replaying a resumed epoch's streams up to where it stopped
                step_finished = False
                total, recon, kl = model.loss_and_grads(x, eps=eps, beta=kl_weight(config, epoch, step, self.steps),
                                                        y=y, objective=config.objective)
                if self.iwae:
                    sums[2] += total
                self.optimizer.step()
                if self.threads is not None:
                    self.threads.tick()          # --threads auto: fewer BLAS threads when others take cores
                sums[0] += recon
                sums[1] += kl
                images += x.shape[0]
                done, step_finished = step + 1, True
                if self.progress and done % PROGRESS_EVERY == 0:
                    bar.set_postfix({self._loss_name: f"{self.backend.scalar(self._loss_sum(sums)) / images:.2f}"})
                bar.update()
                if self.plain_progress and time.perf_counter() - last_line >= PLAIN_PROGRESS_SECONDS:
                    last_line = time.perf_counter()
                    print(f"epoch {epoch}/{config.epochs}: step {done}/{self.steps}, {self._loss_name} "
                          f"{self.backend.scalar(self._loss_sum(sums)) / images:.2f}, {last_line - started:.0f} s",
                          file=sys.stderr, flush=True)
                if self.on_step is not None:
                    self.on_step(epoch, done)
                if stop.requested:
                    raise KeyboardInterrupt
            self.backend.synchronize()
        except KeyboardInterrupt as interrupt:
            bar.close()
            signum = stop.signum or signal_of(interrupt)   # no flag set: the signal's own KeyboardInterrupt
            if not step_finished:
                raise Interrupted(f"{stopped_by(signum)} in the middle of a step of epoch {epoch}; nothing saved, "
                                  f"{self._kept()}", signum) from None
            self._save_interrupted(epoch, done, sums, images, seconds + time.perf_counter() - started, signum)
        bar.close()
        seconds += time.perf_counter() - started
        self._finish_epoch(epoch, self.backend.to_host(sums) / images, seconds)

    @property
    def _loss_name(self):
        return self.objective.loss_name(self.config.samples)

    def _loss_sum(self, sums):
        """The sum of the loss being trained on, from the epoch's running sums (on the device)."""
        return sums[2] if self.iwae else sums.sum()

    def _save_interrupted(self, epoch, done, sums, images, seconds, signum):
        """Save the state after `done` steps of `epoch` (unless it holds NaN or Inf), then raise Interrupted."""
        running = np.insert(self.backend.to_host(sums), 2, images)      # recon, KL, images (, IWAE) so far
        if not (np.isfinite(running).all() and bool(self.xp.isfinite(self.model.flat_params).all())):
            raise Diverged(f"interrupted in epoch {epoch}, whose loss had become NaN or Inf; nothing saved, "
                           f"{self._kept()}")
        self.save(epoch - 1, done, running, seconds)
        raise Interrupted(f"{stopped_by(signum)} at step {done} of {self.steps} in epoch {epoch}; saved to "
                          f"{shown(self.checkpoint_path)}. {self._how_to_resume()}", signum)

    def _kept(self):
        if self.checkpoint_path.is_file():
            kept = checkpoint.load(self.checkpoint_path)
            where = f"epoch {kept.epoch}" + (f", step {kept.step_in_epoch}" if kept.step_in_epoch else "")
            return f"the last good checkpoint ({where}) is kept in {shown(self.checkpoint_path)}"
        return "and no checkpoint had been written yet"

    def _finish_epoch(self, epoch, train, seconds):
        """Check, test, record and save a finished epoch; print its line."""
        recon, kl = (float(v) for v in train[:2])
        if not (math.isfinite(recon) and math.isfinite(kl) and bool(self.xp.isfinite(self.model.flat_params).all())):
            raise Diverged(f"the training loss became NaN or Inf in epoch {epoch} (try a smaller --lr); "
                           f"training stopped and {self._kept()}")
        test = evaluate.negative_elbo(self.model, self.test_data, samples=1)
        if not math.isfinite(test["loss"]):
            raise Diverged(f"the test loss became NaN or Inf after epoch {epoch} (try a smaller --lr); "
                           f"training stopped and {self._kept()}")
        row = {"epoch": epoch, "train_loss": recon + kl, "train_recon": recon, "train_kl": kl,
               "test_loss": test["loss"], "test_recon": test["recon"], "test_kl": test["kl"], "seconds": seconds}
        if self.iwae:
            row.update(self._iwae_columns(epoch, float(train[2])))
        before = [r for r in self.metrics if r["epoch"] < epoch]
        self.metrics = before + [row]
        write_metrics(self.run_dir, self.metrics, iwae=self.iwae)    # before the checkpoint: a resume drops rows past it
        try:
            self.save(epoch)
        except (OSError, Diverged):
            # the checkpoint was not replaced (a full disk, say): take the row back, so that metrics.csv
            # shows only what the checkpoint holds (if this write fails too, the next resume drops it)
            try:
                write_metrics(self.run_dir, before, iwae=self.iwae)
                self.metrics = before
            except OSError:
                pass
            raise
        self.log(format_epoch(row, self.config.epochs, self.config.samples if self.iwae else None))

    def _iwae_columns(self, epoch, train_bound):
        """An IWAE run's extra metrics: its negative bound on the training batches and on the test set."""
        test_bound = -evaluate.importance_weighted_bound(self.model, self.test_data, k=self.config.samples)
        if not (math.isfinite(train_bound) and math.isfinite(test_bound)):
            raise Diverged(f"the IWAE loss became NaN or Inf in epoch {epoch} (try a smaller --lr); "
                           f"training stopped and {self._kept()}")
        return {"train_iwae": train_bound, "test_iwae": test_bound}


def format_epoch(row, epochs, samples=None):
    """The per-epoch line: per-image train and test loss = reconstruction + KL, and seconds.

    For an IWAE run (samples = K), the negative bound it trains on comes first."""
    width = len(str(epochs))
    bound = (f"train IWAE-{samples} loss {row['train_iwae']:8.2f}  test IWAE-{samples} loss {row['test_iwae']:8.2f}  |  "
             if samples else "")
    return (f"epoch {row['epoch']:>{width}}/{epochs}  {bound}"
            f"train loss {row['train_loss']:8.2f} = recon {row['train_recon']:8.2f} + KL {row['train_kl']:6.2f}  |  "
            f"test loss {row['test_loss']:8.2f} = recon {row['test_recon']:8.2f} + KL {row['test_kl']:6.2f}  |  "
            f"{row['seconds']:6.1f} s")


def describe(config, backend_name, images, steps):
    goal = get_objective(config.objective)
    objective = f", trained on the {goal.title(config.samples)}" if goal.takes_samples else ""
    return (f"{make_spec(**config.model_settings()).describe()}{objective}, {config.likelihood} likelihood"
            f"{', binarized pixels' if config.binarize else ''}"
            f"{', output bias at the training mean' if config.init_output_bias == 'mean' else ''}, beta {config.beta:g}"
            f"{f' (warm-up {config.warmup_epochs:g} epochs)' if config.warmup_epochs else ''}, "
            f"Adam lr {config.lr:g}, batch {config.batch_size}, {config.dtype} on {backend_name}; "
            f"{images} training images, {steps} steps per epoch")


def train(config, run_dir, resume=False, *, download=False, log=print, on_step=None, progress=None, threads=None):
    """Train a new run in `run_dir`, or with resume=True continue the one there to config.epochs.

    When resuming, `config` gives the new number of epochs (and may change the backend
    and data directory); every other setting must equal the run's (ConfigError otherwise).
    on_step(epoch, step) is called after every optimizer step (tests raise KeyboardInterrupt
    from it). progress: show a tqdm bar (default: when stderr is a terminal).
    threads: BLAS threads, as threads.Threads takes them: a number, "auto" (follow the machine's
    load, as the command does by default) or None (leave them as they are).
    Returns a TrainResult. Raises RunError and its kinds (Interrupted, Diverged, ConfigError),
    CheckpointError, DataError and BackendError, each with a one-line message.
    """
    config.validate()
    if not str(run_dir).strip():      # Path("") is ".": the run would go into the working directory
        raise RunError("the run directory must name a directory, not be empty")
    run_dir = Path(run_dir)
    if resume and not run_dir.is_dir():
        raise RunError(f"no run directory {run_dir}")
    if not resume:
        check_new_run_dir(run_dir)   # before anything is made or locked: a folder that is not ours stays untouched
    made = _make_dirs(run_dir)       # the directories this call created, innermost first
    try:
        with exclusive(run_dir):     # checking for a run and then writing one must not interleave with another process
            if not resume:
                check_new_run_dir(run_dir)     # again, now that no other numpyvae can be writing here
            try:
                return _train_locked(config, run_dir, resume, download, log, on_step, progress, threads)
            except BaseException:
                if not resume and not (run_dir / checkpoint.FILENAME).exists():
                    _remove_files(run_dir, NEW_RUN_FILES)     # written by this call, under its lock
                raise
    except BaseException:
        if not (run_dir / checkpoint.FILENAME).exists():
            _remove_empty_dirs(made)
        raise


def _make_dirs(run_dir):
    """Create run_dir and its missing parents; return those this call created, innermost first.

    One mkdir at a time, so a directory another process made meanwhile is never counted as ours.
    """
    missing = []
    while not run_dir.exists():
        missing.append(run_dir)
        run_dir = run_dir.parent
    made = []
    try:
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                continue                 # made by someone else: not ours to remove
            made.insert(0, directory)
    except BaseException:
        _remove_empty_dirs(made)
        raise
    return made


def _remove_files(directory, names):
    for name in names:
        try:
            (directory / name).unlink()
        except OSError:
            pass                         # never written (the run failed before it), or not ours to remove


def _remove_empty_dirs(made):
    """Remove the directories this call made, innermost first, stopping at the first that holds anything.

    rmdir, never rmtree: a directory made by this call may since hold another run's files.
    """
    for directory in made:
        try:
            directory.rmdir()
        except OSError:
            return


def _train_locked(config, run_dir, resume, download, log, on_step, progress, threads=None):
    # a save killed outright (kill -9, power cut) leaves its temporary file; only a process that
    # holds the run's lock can know that no save is under way, so this is the place to clear them
    remove_stale_temp_files(run_dir, (checkpoint.FILENAME, CONFIG_FILE, METRICS_FILE))
    if resume:
        saved, config, recorded = _resumable(run_dir, config)

    backend = get_backend(config.backend)
    train_images, train_labels = datasets.load_fashion_mnist("train", config.data_dir, download)
    test_images, test_labels = datasets.load_fashion_mnist("test", config.data_dir, download)
    input_shape = (1,) + tuple(train_images.shape[1:])      # grey images: one channel
    if resume and input_shape != config.input_shape:
        raise ConfigError(f"the data has images of shape {input_shape} but the run's model takes {config.input_shape}")
    config = replace(config, input_shape=input_shape)

    model = build_model(config, backend)
    # before anything is written and before the first step, which the kernel would end unannounced
    memory.check_step_fits(model, min(config.batch_size, len(train_images)), config.samples, config.objective,
                           "try a smaller --samples or --batch-size (a run that has taken no step yet may "
                           "resume with smaller ones)")
    if not resume:       # a resumed run's bias is its checkpoint's
        output_bias.apply(config.init_output_bias, model, train_images)
    optimizer = Adam(model, lr=config.lr)
    if resume:
        checkpoint.restore(saved, model, optimizer, path=run_dir / checkpoint.FILENAME)
        start_epoch, start_step = saved.epoch + 1, saved.step_in_epoch
        metrics = saved_rows(recorded, saved)
    else:
        start_epoch, start_step, metrics = 1, 0, []
    write_config(run_dir, config)
    trainer = Trainer(config, run_dir, model, optimizer, train_images, test_images, metrics,
                      train_labels=train_labels, test_labels=test_labels,
                      log=log, on_step=on_step, progress=progress)
    about = describe(config, model.backend.name, len(train_images), trainer.steps) + describe_threads(threads)
    if resume:
        check_position(saved, trainer.steps, config.batch_size, len(train_images), run_dir / checkpoint.FILENAME)
    with Threads(threads if model.backend.name in ("numpy", "fakegpu") else None) as trainer.threads:
        if resume:
            where = f"at step {start_step} of epoch {start_epoch}" if start_step else f"after epoch {saved.epoch}"
            log(f"resuming {shown(run_dir)} {where}: {about}")
            trainer.run(start_epoch, start_step, saved.running, saved.epoch_seconds)
        else:
            log(f"training in {shown(run_dir)}: {about}")
            write_metrics(run_dir, [], iwae=bool(get_objective(config.objective).bound_columns))
            trainer.save(0)        # a checkpoint from the start, so there is always a last good one
            trainer.run(start_epoch)
    return TrainResult(config, model, trainer.metrics, test_images, test_labels)


def describe_threads(threads):
    """The banner's note on BLAS threads (threads.py)."""
    if threads is None:
        return ""
    if threads == "auto":
        return "; BLAS threads: auto (one per usable CPU, fewer while other processes take cores)"
    return f"; BLAS threads: {threads}"


def _resumable(run_dir, wanted):
    """(checkpoint, config, metrics.csv's rows) to resume run_dir with: the run's config with `wanted`'s
    allowed changes, once the checkpoint and the rows are shown to tell one story (check_recorded)."""
    if not (run_dir / checkpoint.FILENAME).exists():
        raise RunError(f"cannot resume: {shown(run_dir)} has no {checkpoint.FILENAME} (start it without --resume)")
    run_config, saved = open_run(run_dir)
    # a run that has taken no step yet (it ran out of memory on its first batch, say) may take
    # another batch size and K: nothing done so far depends on them
    changes = RESUMABLE_CHANGES + (() if saved.adam["t"] else ("batch_size", "samples"))
    check_same_run(run_config, replace(wanted, input_shape=run_config.input_shape),
                   "cannot resume with different settings (start a new --run-dir to change them)", may_differ=changes)
    config = replace(run_config, **{name: getattr(wanted, name) for name in changes})
    if config.epochs <= saved.epoch:
        raise NothingToDo(f"{shown(run_dir)} has already trained {saved.epoch} epochs (--epochs {config.epochs}); "
                          f"nothing to do")
    # now, not after an epoch of training: the rows it would write must fit those already there
    recorded = read_metrics(run_dir)
    check_recorded(config, saved, recorded, run_dir / checkpoint.FILENAME, run_dir / METRICS_FILE)
    return saved, config, recorded

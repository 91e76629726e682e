"""How many epochs does the conditional VAE need before its new clothes follow the class asked for?

    python benchmarks/conditional_epochs.py            # 10 epochs, about as long as training them
    python benchmarks/conditional_epochs.py --epochs 3 --out DIR

Trains `numpyvae train --conditional` with every other default, one epoch at a time (train() with
resume, so it is the very run the command makes), and after each epoch draws SAMPLES images of
every class from the prior, z ~ N(0, I) decoded with that class. A judge that never saw these
images says which class each one shows: softmax regression on the raw pixels, fitted here on the
60,000 training images (its accuracy on the 10,000 real test images is reported next to it, as
the ceiling of what it can recognize). "Follows its class" is the share of drawn images the judge
assigns to the class they were drawn for; chance is 10%.

Writes conditional_epochs.{json,md} into --out (default benchmarks/results/), with the load average.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # numpyvae itself, when run from a checkout

from numpyvae import datasets, load_run, train as training   # noqa: E402
from numpyvae.rundir import TrainConfig                       # noqa: E402
from numpyvae.threads import Threads                          # noqa: E402

SAMPLES = 100          # drawn images per class after each epoch
JUDGE_EPOCHS = 3       # passes of minibatch gradient descent for the softmax regression


def fit_judge(images, labels, epochs=JUDGE_EPOCHS, batch=128, lr=0.5):
    """Softmax regression on pixels in [0, 1]: (W (D, 10), b (10,)), by minibatch gradient descent."""
    x = images.reshape(len(images), -1).astype(np.float32) / 255
    onehot = np.eye(10, dtype=np.float32)[labels]
    W, b = np.zeros((x.shape[1], 10), np.float32), np.zeros(10, np.float32)
    order = np.random.default_rng(0)
    with Threads(1) as threads:          # one thread: the same judge on any load (and no spinning threads)
        for _ in range(epochs):
            for rows in np.array_split(order.permutation(len(x)), len(x) // batch):
                _judge_step(x[rows], onehot[rows], W, b, lr)
                threads.tick()
    return W, b


def _judge_step(x, onehot, W, b, lr):
    """One gradient step of the mean cross-entropy, W and b updated in place."""
    logits = x @ W + b                               # (N, 10)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    d = (p - onehot) / len(x)                        # d(mean cross-entropy)/d logits
    W -= lr * (x.T @ d)
    b -= lr * d.sum(axis=0)


def judge(W, b, pixels):
    return np.argmax(pixels @ W + b, axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--threads", default="1", help="BLAS threads for training: a number (default 1: the same "
                                                       "weights on any load) or auto")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads == "auto" else int(args.threads)

    started = time.perf_counter()
    train_images, train_labels = datasets.load_fashion_mnist("train", download=False)
    test_images, test_labels = datasets.load_fashion_mnist("test", download=False)
    W, b = fit_judge(train_images, train_labels)
    judge_accuracy = float(np.mean(judge(W, b, test_images.reshape(len(test_images), -1) / np.float32(255))
                                   == test_labels))
    print(f"judge: softmax regression, {judge_accuracy:.1%} on the real test images", file=sys.stderr)

    wanted = np.repeat(np.arange(10), SAMPLES)                       # (10 * SAMPLES,) the class asked for
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "cond"
        for epoch in range(1, args.epochs + 1):
            config = TrainConfig(epochs=epoch, num_classes=10)
            load = os.getloadavg()
            training.train(config, run_dir, resume=epoch > 1, log=lambda line: None, progress=False, threads=threads)
            run = load_run(run_dir)
            z = np.random.default_rng(epoch).standard_normal((len(wanted), run.model.latent_dim))
            drawn = run.model.decode(z, wanted)                       # (10 * SAMPLES, 784) pixel means
            said = judge(W, b, np.asarray(drawn))
            per_class = [float(np.mean(said[wanted == c] == c)) for c in range(10)]
            rows.append({"epoch": epoch, "follows": float(np.mean(said == wanted)), "per_class": per_class,
                         "worst_class": datasets.CLASS_NAMES[int(np.argmin(per_class))],
                         "worst": min(per_class), "loadavg": load})
            print(f"epoch {epoch}: {rows[-1]['follows']:.1%} follow their class "
                  f"(worst: {rows[-1]['worst_class']}, {rows[-1]['worst']:.0%})", file=sys.stderr)

    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "samples_per_class": SAMPLES,
              "judge": "softmax regression on pixels", "judge_test_accuracy": judge_accuracy, "rows": rows,
              "seconds": time.perf_counter() - started,
              "command": "python benchmarks/conditional_epochs.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    lines = [
        f"The conditional VAE (`numpyvae train --conditional`, every other default, seed 0) after each epoch: "
        f"{SAMPLES} images of every class drawn from the prior and judged by softmax regression on pixels, fitted "
        f"on the training images ({judge_accuracy:.1%} right on the real test images). Chance is 10%. "
        f"1-minute load average while training: {min(r['loadavg'][0] for r in rows):.1f} to "
        f"{max(r['loadavg'][0] for r in rows):.1f} (speed does not enter this measurement).",
        "",
        "| epoch | drawn images the judge assigns to the class asked for | worst class |",
        "|---:|---:|---|",
    ] + [f"| {r['epoch']} | {r['follows']:.1%} | {r['worst_class']} ({r['worst']:.0%}) |" for r in rows] + [
        "", f"Command: `{report['command'].strip()}` ({report['date']})."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conditional_epochs.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "conditional_epochs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every ``attnkit demo`` shares: flags, seeding, the output folder, progress.

A demo module uses it like this::

    def add_arguments(parser):
        common.add_common_arguments(parser, epochs=10, out="attnkit-out/mydemo")

    def run(args):
        out = common.start(args, "mydemo")  # seeds, makes the folder, prints
        common.step("training")
        model.fit(..., verbose=common.fit_verbosity())
        common.report("model", common.save_model(model, out / "mydemo.keras"))
        return 0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BACKENDS = ("jax", "torch", "tensorflow")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def int_at_least(minimum):
    """argparse type factory: an integer >= ``minimum``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}. Received: {text!r}"
            )
        return value

    return parse


def _add(parser, *names, **kwargs):
    try:
        parser.add_argument(*names, **kwargs)
    except argparse.ArgumentError:  # the demo defines this flag itself
        pass


def add_common_arguments(parser, *, epochs, out):
    """Adds ``--epochs --seed --out DIR --backend`` (skipping any the parser has)."""
    _add(
        parser,
        "--epochs",
        type=positive_int,
        default=epochs,
        help=f"training epochs (default: {epochs})",
    )
    _add(
        parser,
        "--seed",
        type=int,
        default=0,
        help="random seed; a fixed seed gives the same run on a given backend (default: 0)",
    )
    _add(
        parser,
        "--out",
        type=Path,
        default=Path(out),
        metavar="DIR",
        help=f"folder for the model and plots, created if missing (default: {out})",
    )
    _add(
        parser,
        "--backend",
        choices=BACKENDS,
        help="Keras backend to run on (default: $KERAS_BACKEND, else attnkit's default)",
    )


def seed_everything(seed):
    """Seeds Python, NumPy and the backend (``keras.utils.set_random_seed``).

    That is enough for identical runs on CPU with all three backends (the demo
    smoke tests check it by comparing saved weights). TensorFlow's process-wide
    ``enable_op_determinism`` is deliberately not switched on: the demos use no
    kernel it would change on CPU, and it would leak into the caller's process.
    """
    import keras

    keras.utils.set_random_seed(seed)


def start(args, name):
    """Seeds, creates the output folder, prints what runs where; returns the folder."""
    import keras

    seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"attnkit demo {name}: backend {keras.backend.backend()}, seed {args.seed}, "
        f"epochs {args.epochs}, output {out}",
        flush=True,
    )
    return out


def step(message):
    """Announces a step of the demo."""
    print(f"==> {message}", flush=True)


def report(what, path):
    """Prints where an artefact was written."""
    print(f"    {what}: {path}", flush=True)


def fit_verbosity():
    """Keras ``verbose``: live progress bars on a terminal, else a line per epoch."""
    stream = sys.stdout
    return 1 if hasattr(stream, "isatty") and stream.isatty() else 2


def save_model(model, path):
    """Saves ``model`` to a ``.keras`` file and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(os.fspath(path))
    return path

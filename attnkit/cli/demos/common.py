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

``--backend`` is not among the flags here: ``attnkit.cli.main`` adds it to
every command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def int_at_least(minimum, expected=None):
    """argparse type factory: an integer >= ``minimum``.

    ``expected`` words the requirement in the error (default: "an integer >=
    ``minimum``").
    """
    expected = expected or f"an integer >= {minimum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}. Received: {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")  # argparse type: an integer >= 1


def add_common_arguments(parser, *, epochs, out):
    """Adds ``--epochs --seed --out DIR``."""
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=epochs,
        help=f"training epochs (default: {epochs})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; a fixed seed gives the same run on a given backend (default: 0)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(out),
        metavar="DIR",
        help=f"folder for the model and plots, created if missing (default: {out})",
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


DISTRIBUTIONS = ("data", "model")
_FORCE_DEVICES = "--xla_force_host_platform_device_count"


def add_distribution_arguments(parser):
    """Adds ``--distribute data|model`` and ``--devices N``."""
    parser.add_argument(
        "--distribute",
        choices=DISTRIBUTIONS,
        help="train and evaluate under keras.distribution (JAX backend): data = "
        "DataParallel over all devices; model = ModelParallel on a (devices/2, 2) "
        "mesh with the attention layers sharded by attnkit.distribution.layout_map "
        "(default: one device)",
    )
    parser.add_argument(
        "--devices",
        type=positive_int,
        metavar="N",
        help="devices to distribute over; on a CPU host JAX is given N virtual "
        "devices (XLA_FLAGS) when XLA_FLAGS does not set a count "
        "(default: all devices, 8 virtual ones on a CPU host)",
    )


class Distributed:
    """The distribution a demo runs under, and the batch axis it splits data over."""

    def __init__(self, kind, distribution, devices, mesh):
        self.kind = kind
        self.distribution = distribution
        self.devices = devices
        self.mesh = mesh  # axis name -> size
        self.batch_shards = mesh["batch"]

    def __str__(self):
        return (
            f"{type(self.distribution).__name__} over {len(self.devices)} devices, mesh {self.mesh}"
        )

    def trim(self, *arrays):
        """The arrays cut to a multiple of the batch axis (so every batch splits)."""
        n = len(arrays[0]) - len(arrays[0]) % self.batch_shards
        return [a[:n] for a in arrays]

    def batch(self, size):
        """The largest batch size <= ``size`` that splits over the batch axis."""
        return max(self.batch_shards, size - size % self.batch_shards)

    def pad(self, x):
        """``x`` with rows repeated at the end so that the batch axis splits evenly."""
        import numpy as np

        extra = -len(x) % self.batch_shards
        if not extra:
            return x
        return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])


def distribute(args, attention_layers):
    """Sets up ``args.distribute`` (``--distribute``); returns a ``Distributed`` or None.

    ``attention_layers`` names the model's attention layers, which ModelParallel
    shards with ``attnkit.distribution.layout_map``. Call it before anything
    touches a JAX device (seeding included): on a CPU host it may still set the
    number of virtual devices. Raises ``ValueError`` naming the flag when the
    distribution cannot be set up. ``keras.distribution.set_distribution(None)``
    undoes it.
    """
    if args.distribute is None:
        if args.devices is not None:
            raise ValueError(
                f"`--devices` needs `--distribute`. Received: --devices {args.devices}"
            )
        return None
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError(
            "`--distribute` runs on keras.distribution, which needs the JAX backend "
            f"(--backend jax). Received: backend={keras.backend.backend()!r}"
        )
    if _FORCE_DEVICES not in os.environ.get("XLA_FLAGS", ""):
        # Only the host platform reads it; JAX reads XLA_FLAGS when it first
        # looks for devices, which a demo has not done yet.
        count = args.devices or 8
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FORCE_DEVICES}={count}"
    devices = keras.distribution.list_devices()
    wanted = args.devices or len(devices)
    if wanted > len(devices):
        raise ValueError(
            f"`--devices` asks for {wanted} devices but JAX has {len(devices)} "
            f"({', '.join(devices)}); start Python with "
            f"XLA_FLAGS={_FORCE_DEVICES}={wanted} for virtual CPU devices. "
            f"Received: --devices {wanted}"
        )
    devices = devices[:wanted]
    if args.distribute == "data":
        distribution = keras.distribution.DataParallel(devices=devices)
        batch_shards = wanted
        shape = (wanted,)
    else:
        from attnkit.distribution import layout_map

        model_shards = 2 if wanted % 2 == 0 else 1
        batch_shards = wanted // model_shards
        shape = (batch_shards, model_shards)
        mesh = keras.distribution.DeviceMesh(shape, ("batch", "model"), devices)
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map(list(attention_layers), mesh), batch_dim_name="batch"
        )
    if args.batch_size % batch_shards:
        raise ValueError(
            f"`--batch-size` must split evenly over the {batch_shards} devices of the "
            f"batch axis. Received: --batch-size {args.batch_size}"
        )
    keras.distribution.set_distribution(distribution)
    return Distributed(
        args.distribute, distribution, devices, dict(zip(("batch", "model"), shape, strict=False))
    )

"""The ``attnkit`` command line."""

from __future__ import annotations

import argparse
import os
import sys


def _set_backend(argv):
    """Honours ``--backend`` before Keras is imported anywhere."""
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            os.environ["KERAS_BACKEND"] = argv[i + 1]
        elif arg.startswith("--backend="):
            os.environ["KERAS_BACKEND"] = arg.split("=", 1)[1]


def cmd_info(args):
    import platform

    import keras

    import attnkit

    print(f"attnkit   {attnkit.__version__}")
    print(f"keras     {keras.__version__}")
    print(f"backend   {keras.backend.backend()}")
    print(f"python    {platform.python_version()} ({platform.machine()})")
    print(f"cpus      {os.cpu_count()}")
    for name in ("jax", "torch", "tensorflow", "numpy"):
        try:
            module = __import__(name)
            print(f"{name:<9} {module.__version__}")
        except ImportError:
            print(f"{name:<9} not installed")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    elif backend == "torch":
        import torch

        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    elif backend == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_logical_devices()]
    else:
        devices = ["unknown"]
    print(f"devices   {', '.join(devices)}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="attnkit",
        description="attnkit: attention layers for Keras 3 on JAX, PyTorch and TensorFlow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions, backend and devices")
    info.add_argument("--backend", choices=("jax", "torch", "tensorflow"), help="Keras backend")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    _set_backend(argv)
    from attnkit._default_backend import apply_default_backend

    apply_default_backend()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

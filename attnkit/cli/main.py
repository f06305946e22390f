"""The ``attnkit`` command line.

    attnkit info                         versions, backend, devices
    attnkit demo dates|addition|digits   train a demo model, print accuracy, save plots
    attnkit bench                        the attention benchmark table
    attnkit show MODEL.keras INPUT...    interactive attention view + PNG of a saved model

Every command takes ``--backend``. Keras fixes its backend when it is first
imported, and importing ``attnkit.cli`` already imports Keras (through
``attnkit``), so when ``--backend`` names another backend the console script
re-runs itself in a fresh interpreter with ``KERAS_BACKEND`` set. Called
in-process (``main([...])``), a mismatched ``--backend`` is an error instead.

``BACKENDS`` and ``add_backend_argument`` are the one definition of the
backends and of ``--backend``; commands do not add their own.

Subcommands live in their own modules, imported only when chosen, each with
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

BACKENDS = ("jax", "torch", "tensorflow")
DEMOS = {
    "dates": (
        "attnkit.cli.demos.dates",
        "human-readable dates to ISO 8601: encoder-decoder with attention",
    ),
    "addition": (
        "attnkit.cli.demos.addition",
        "Raffel & Ellis (2015) addition problem with attention pooling",
    ),
    "digits": (
        "attnkit.cli.demos.digits",
        "scikit-learn digits: conv net with spatial self-attention",
    ),
    "lm": (
        "attnkit.cli.demos.lm",
        "a small GPT-style language model with grouped-query attention and a key/value cache",
    ),
}
BENCH_MODULE = "attnkit.cli.bench"
SHOW_MODULE = "attnkit.cli.show"
_REEXEC_FLAG = "ATTNKIT_CLI_REEXEC"


def _requested_backend(argv):
    """The value of the last ``--backend`` option in ``argv``, or None."""
    backend = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--backend" and i + 1 < len(argv):
            backend = argv[i + 1]
        elif arg.startswith("--backend="):
            backend = arg.split("=", 1)[1]
    return backend


def _running_backend():
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def add_backend_argument(parser):
    """Adds ``--backend`` (one of ``BACKENDS``)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend to run on (default: $KERAS_BACKEND, else attnkit's default)",
    )


def cmd_info(args):
    import platform

    import keras

    import attnkit

    print(f"attnkit   {attnkit.__version__}")
    print(f"keras     {keras.__version__}")
    print(f"backend   {keras.backend.backend()}")
    print(f"python    {platform.python_version()} ({platform.machine()})")
    print(f"cpus      {os.cpu_count()}")
    for name in (*BACKENDS, "numpy"):
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


def _add_module_command(sub, name, module_name, help_text, selected):
    """A subcommand whose arguments and behaviour come from ``module_name``.

    The module is imported only when this subcommand is the one being run, so
    ``attnkit --help`` and the other commands never pay for (or break on) it.
    """
    parser = sub.add_parser(name, help=help_text, description=help_text)
    if not selected:
        return parser
    module = importlib.import_module(module_name)
    module.add_arguments(parser)
    add_backend_argument(parser)
    parser.set_defaults(func=module.run)
    return parser


def build_parser(argv=()):
    """The full parser; only the subcommand named in ``argv`` imports its module."""
    argv = list(argv)
    parser = argparse.ArgumentParser(
        prog="attnkit",
        description=("attnkit: attention layers for Keras 3 on JAX, PyTorch and TensorFlow."),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="versions, backend and devices")
    add_backend_argument(info)
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser(
        "demo",
        help="train a demo model, print its accuracy and save attention plots",
        description="Train a demo model, print its accuracy and save attention plots.",
    )
    demos = demo.add_subparsers(dest="demo", required=True, metavar="DEMO")
    chosen = argv[1] if len(argv) > 1 and argv[0] == "demo" else None
    for name, (module_name, help_text) in DEMOS.items():
        _add_module_command(demos, name, module_name, help_text, name == chosen)

    _add_module_command(
        sub,
        "bench",
        BENCH_MODULE,
        "attention benchmark table",
        bool(argv) and argv[0] == "bench",
    )
    _add_module_command(
        sub,
        "show",
        SHOW_MODULE,
        "write the interactive attention view (HTML) and a PNG of a saved model's attention",
        bool(argv) and argv[0] == "show",
    )
    return parser


def main(argv=None):
    from_console = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    requested = _requested_backend(argv)
    running = _running_backend()
    if requested in BACKENDS and running is not None and requested != running:
        if from_console and not os.environ.get(_REEXEC_FLAG):
            env = {**os.environ, "KERAS_BACKEND": requested, _REEXEC_FLAG: "1"}
            return subprocess.call([sys.executable, "-m", "attnkit.cli.main", *argv], env=env)
        print(
            f"attnkit: --backend {requested} was asked for, but Keras already runs on "
            f"{running} in this process; set KERAS_BACKEND={requested} before "
            "starting Python.",
            file=sys.stderr,
        )
        return 2
    if requested in BACKENDS:
        os.environ["KERAS_BACKEND"] = requested
    from attnkit._default_backend import apply_default_backend

    apply_default_backend()
    from attnkit._optional import MissingDependencyError

    try:
        args = build_parser(argv).parse_args(argv)
        return args.func(args)
    except MissingDependencyError as error:  # an extra is not installed: one line, no traceback
        print(f"attnkit: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

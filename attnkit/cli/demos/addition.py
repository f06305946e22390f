"""``attnkit demo addition``: Raffel & Ellis (2015)'s addition problem.

Each sequence holds (value, marker) pairs; two steps are marked and the target
is ``0.5 + (X1 + X2) / 4`` of their values (arXiv:1512.08756, MECHANISMS.md).
Solving it means finding two steps anywhere in a long sequence: feed-forward
attention pooling does this with no recurrence.

Training data are drawn fresh for every batch (as in the paper: one epoch is
``--steps`` updates of ``--batch-size`` sequences), from a seed derived from
``--seed``, the epoch and the batch index, so runs repeat exactly. After each
epoch the demo prints the test accuracy, the share of held-out sequences with
``|error| < 0.04`` (the paper's criterion), and at the end it saves the model
(``addition.keras``) and ``addition_attention.png``: the attention over a few
test sequences with the two marked steps shaded; those sequences as
``addition_inputs.npy`` and the ``attnkit show`` line that opens them in the
interactive matrix view.

Data: ``attnkit.data.addition``; model: ``attnkit.models.addition_model``.
"""

from __future__ import annotations

from attnkit.cli import show
from attnkit.cli.demos import common

NAME = "addition"
SHOWN = 3  # test sequences in the figure
MIN_LENGTH = 11  # attnkit.data.addition draws the first marked step from [1, 9]


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=3, out=f"attnkit-out/{NAME}")
    parser.add_argument(
        "--length",
        type=common.int_at_least(MIN_LENGTH),
        default=100,
        metavar="T",
        help="minimum sequence length T0; lengths are drawn from [T0, 1.1 T0] (default: 100)",
    )
    parser.add_argument(
        "--steps",
        type=common.positive_int,
        default=1000,
        help="updates per epoch; the paper uses 1000 (default: 1000)",
    )
    parser.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=100,
        help="sequences per update; the paper uses 100 (default: 100)",
    )
    parser.add_argument(
        "--test-size",
        type=common.positive_int,
        default=1000,
        help="held-out sequences scored after each epoch (default: 1000)",
    )


def _batches(args):
    import keras
    import numpy as np

    from attnkit.data import addition

    class FreshBatches(keras.utils.PyDataset):
        """A new batch for every (epoch, index), reproducible from the seed."""

        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __len__(self):
            return args.steps

        def __getitem__(self, index):
            seed = np.random.SeedSequence([args.seed, self.epoch, index]).generate_state(1)[0]
            return addition.generate(args.batch_size, args.length, seed=int(seed))

        def on_epoch_end(self):
            self.epoch += 1

    return FreshBatches()


def marked_positions(x):
    """Indices of the two marked steps (marker == 1) of each sequence, (N, 2)."""
    import numpy as np

    return np.stack([np.flatnonzero(row[:, 1] == 1.0)[:2] for row in x])


def run(args):
    import keras
    import numpy as np

    from attnkit.data.addition import TOLERANCE, generate
    from attnkit.maps import attention_maps
    from attnkit.models.addition_model import build_addition_model
    from attnkit.viz import plot_sequence_attention, save_figure

    out = common.start(args, NAME)
    common.step(f"addition problem, T0 = {args.length}")
    x_test, y_test = generate(args.test_size, args.length, seed=2**31 - 1 - args.seed)
    y_test = np.asarray(y_test).reshape(-1)
    print(
        f"    {args.steps} updates of {args.batch_size} fresh sequences per epoch, "
        f"{len(x_test)} held-out test sequences"
    )

    model = build_addition_model(seed=args.seed)  # compiled: Adam, MSE

    def score():
        pred = model.predict(x_test, batch_size=500, verbose=0).reshape(-1)
        return float(np.mean(np.abs(pred - y_test) < TOLERANCE)), pred

    class PrintTestAccuracy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accuracy, _ = score()
            print(
                f"epoch {epoch + 1}: test accuracy {100 * accuracy:.1f}% (|error| < {TOLERANCE})",
                flush=True,
            )

    common.step("training")
    model.fit(
        _batches(args),
        epochs=args.epochs,
        # An explicit progress bar first, so each epoch's bar prints before its score.
        callbacks=[keras.callbacks.ProgbarLogger(), PrintTestAccuracy()],
        verbose=common.fit_verbosity(),
    )
    accuracy, pred = score()
    print(f"test accuracy: {100 * accuracy:.2f}% (|error| < {TOLERANCE})", flush=True)

    common.step("saving")
    model_path = common.save_model(model, out / f"{NAME}.keras")
    common.report("model", model_path)
    shown = x_test[:SHOWN]
    (weights,) = attention_maps(model, shown).values()  # (N, T)
    weights = np.asarray(weights).reshape(len(shown), -1)
    fig = plot_sequence_attention(
        weights,
        highlight=marked_positions(shown).tolist(),
        values=shown[..., 0],
        titles=[
            f"target {t:.3f}, predicted {p:.3f}"
            for t, p in zip(y_test[:SHOWN], pred[:SHOWN], strict=True)
        ],
        title=f"Attention over the sequence (marked steps in red), T0 = {args.length}",
    )
    common.report("attention figure", save_figure(fig, out / f"{NAME}_attention.png"))
    inputs = out / f"{NAME}_inputs.npy"
    np.save(inputs, shown)
    common.report("inputs", inputs)
    common.report("interactive view", show.command_line(model_path, [inputs], out=out / "show"))
    return 0

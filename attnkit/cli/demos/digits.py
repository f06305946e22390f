"""``attnkit demo digits``: handwritten digits with spatial self-attention.

Data: scikit-learn's ``load_digits`` (1,797 8x8 grayscale digits, shipped with
scikit-learn, no download), split 80/20 stratified with a fixed split seed, so
every run is scored on the same 360 test images.

Model (``attnkit.models.digits_classifier``): two 3x3 convolutions give a
feature vector at each of the 8x8 positions; multi-head self-attention over
both spatial axes (``attention_axes=(1, 2)``: every position attends to all
64) with a residual connection and layer norm; then the average over the 64
positions, dropout and a softmax classifier. Adam with a cosine learning-rate
decay to 0; 40 epochs take well under a minute on two CPU cores with JAX.

Output: the test accuracy, the model as ``digits.keras``, and
``digits_attention.png``: test digits, each overlaid with the attention its
positions receive (self-attention weights averaged over heads and querying
positions, read with ``attnkit.attention_maps``); those digits as
``digits_inputs.npy`` and the ``attnkit show`` line that opens them in the
interactive model view (2 heads over 64 positions).
"""

from __future__ import annotations

import math

from attnkit.cli import show
from attnkit.cli.demos import common

NAME = "digits"
GRID = 16  # digits in the attention figure


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=40, out=f"attnkit-out/{NAME}")
    parser.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=32,
        help="batch size (default: 32)",
    )
    parser.add_argument(
        "--limit",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="train and test on the first N images only, for quick checks (default: all)",
    )


def load_data(limit=None):
    """(x_train, y_train, x_test, y_test); images (N, 8, 8, 1) float32 in [0, 16]."""
    from attnkit._optional import require

    require("sklearn", "attnkit demo digits")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype("float32")[..., None]  # (N, 8, 8, 1)
    y = digits.target.astype("int32")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y if limit is None else None
    )
    return x_train, y_train, x_test, y_test


def run(args):
    import numpy as np

    from attnkit._optional import require

    require("sklearn", "attnkit demo digits")  # before training, and before the viz check
    from attnkit.maps import attention_maps
    from attnkit.models.digits_classifier import ATTENTION_LAYER, build_digits_classifier
    from attnkit.viz import plot_image_attention, save_figure

    out = common.start(args, NAME)
    common.step("loading scikit-learn digits")
    x_train, y_train, x_test, y_test = load_data(args.limit)
    print(f"    {len(x_train)} training and {len(x_test)} test images of 8x8 pixels")

    common.step("training")
    steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    model = build_digits_classifier(args.seed, decay_steps=steps)
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=common.fit_verbosity(),
    )

    common.step("evaluating on held-out images")
    probs = model.predict(x_test, batch_size=256, verbose=0)
    pred = probs.argmax(-1)
    correct = int((pred == y_test).sum())
    accuracy = correct / len(y_test)
    print(f"test accuracy: {100 * accuracy:.2f}% ({correct}/{len(y_test)})", flush=True)

    common.step("saving")
    model_path = common.save_model(model, out / f"{NAME}.keras")
    common.report("model", model_path)
    shown = np.arange(min(GRID, len(x_test)))
    weights = attention_maps(model, x_test[shown])[ATTENTION_LAYER]  # (N, H, 8, 8, 8, 8)
    received = weights.mean(axis=(1, 2, 3))  # (N, 8, 8): over heads and query positions
    fig = plot_image_attention(
        x_test[shown, ..., 0],
        received,
        titles=[f"{p} (true {t})" for p, t in zip(pred[shown], y_test[shown], strict=True)],
        title=f"Attention received per position · test accuracy {100 * accuracy:.1f}%",
    )
    common.report("attention figure", save_figure(fig, out / f"{NAME}_attention.png"))
    inputs = out / f"{NAME}_inputs.npy"
    np.save(inputs, x_test[shown])
    common.report("inputs", inputs)
    command = show.command_line(model_path, [inputs], view="model", out=out / "show")
    common.report("interactive view", command)
    return 0

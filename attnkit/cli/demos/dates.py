"""``attnkit demo dates``: human-readable dates to ISO 8601 with attention.

The date-translation task of the deeplearning.ai Sequence Models course:
"3 may 1979", "thursday may 3 1979" or "5/3/79" -> "1979-05-03". Data come
from ``attnkit.data.dates`` (the course's formats, stdlib only, seeded).
Held-out dates use another seed, and any held-out input string that also
occurs in the training set is dropped, so accuracy is measured on unseen
inputs only.

Model (``attnkit.models.date_translator``): a bidirectional LSTM encoder and
an LSTM decoder trained with teacher forcing, with attnkit's Bahdanau
attention (``AdditiveAttention(units=...)``) from every decoder step over the
encoded characters. ``--decoder cell`` uses the recurrent decoder
``keras.layers.RNN(AttentionRNNCell(LSTMCell, BahdanauAttention))`` instead.
Evaluation decodes greedily with ``attnkit.decoding`` (the model reads its
own previous output).

``--distribute data`` trains and evaluates under ``keras.distribution``'s
DataParallel, ``--distribute model`` under ModelParallel with the attention
layer's projections sharded by units (``attnkit.distribution.layout_map``);
both need the JAX backend, and on a CPU host run on virtual devices.

Output: exact-match accuracy on the held-out dates, a few translations, the
share of held-out examples whose year digits attend inside the input's year,
the model as ``dates.keras`` with its character tokenizer
``dates.tokenizer.json`` (for ``attnkit show``), the alignments of a few inputs
as ``dates_attention.png``, and the ``attnkit show`` line that opens the model
as an interactive alignment view.
"""

from __future__ import annotations

import math
import sys

from attnkit.cli import show
from attnkit.cli.demos import common
from attnkit.models import date_translator as dt

NAME = "dates"
SHOWN = ("3 may 1979", "5/3/79", "tuesday april 27 2055", "09.11.89")


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=10, out=f"attnkit-out/{NAME}")
    parser.add_argument(
        "--samples",
        type=common.positive_int,
        default=30000,
        metavar="N",
        help="training dates (default: 30000)",
    )
    parser.add_argument(
        "--test-samples",
        type=common.positive_int,
        default=2000,
        metavar="N",
        help="held-out dates for the accuracy (default: 2000)",
    )
    parser.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=64,
        help="batch size (default: 64)",
    )
    parser.add_argument(
        "--decoder",
        choices=dt.DECODERS,
        default="additive",
        help="additive: decoder LSTM then Bahdanau AdditiveAttention over all "
        "steps; cell: RNN(AttentionRNNCell(LSTMCell, BahdanauAttention)) "
        "(default: additive)",
    )
    common.add_distribution_arguments(parser)


def held_out(n, train_texts, seed):
    """``n`` dates, drawn with another seed, whose inputs are not in training."""
    from attnkit.data import dates

    seen = set(train_texts)
    draw = 2 * n + 100
    while True:
        texts, isos, _, _ = dates.load(draw, seed + 1_000_003)
        keep = [i for i, t in enumerate(texts) if t not in seen][:n]
        if len(keep) == n:
            texts = [texts[i] for i in keep]
            isos = [isos[i] for i in keep]
            return texts, isos, dates.encode_human(texts), dates.encode_machine(isos)
        draw *= 2


def run(args):
    import keras

    try:
        # Before seeding: on a CPU host it may still set JAX's device count.
        dist = common.distribute(args, [dt.ATTENTION_LAYER, dt.MECHANISM_LAYER])
    except ValueError as error:
        print(f"attnkit demo dates: {error}", file=sys.stderr)
        return 2
    try:
        return _run(args, dist)
    finally:
        if dist is not None:
            keras.distribution.set_distribution(None)


def _run(args, dist):
    import keras
    import numpy as np

    from attnkit.data import dates
    from attnkit.viz import plot_alignments, save_figure

    out = common.start(args, NAME)
    if dist is not None:
        print(f"    {dist}", flush=True)
    common.step("generating dates")
    texts, _, x, y = dates.load(args.samples, args.seed)
    test_texts, test_isos, x_test, y_test = held_out(args.test_samples, texts, args.seed)
    print(
        f"    {len(x)} training and {len(x_test)} held-out dates; "
        f"e.g. {texts[0]!r} -> {dates.decode_machine(y[:1])[0]!r}"
    )

    eval_batch = 512
    if dist is not None:
        texts, x, y = dist.trim(texts, x, y)  # every batch splits over the devices
        eval_batch = dist.batch(eval_batch)

    def translate(x):
        # Decoding calls the model directly, which takes any batch; predict (in
        # alignments) needs batches that split over the devices.
        return dt.greedy_translate(model, x, batch_size=eval_batch)

    def alignments(x, targets):
        n = len(x)
        if dist is not None:
            x, targets = dist.pad(x), dist.pad(targets)
        return dt.alignments(model, x, targets, batch_size=eval_batch)[:n]

    common.step("training")
    model = dt.build_training_model(args.decoder, seed=args.seed)
    if dist is not None and dist.kind == "model":
        for v in model.weights:
            spec = tuple(v.value.sharding.spec)
            if any(axis is not None for axis in spec):
                print(f"    sharded {v.path} {tuple(v.shape)} as {spec}", flush=True)
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(f"    {model.count_params():,} parameters")
    model.fit(
        [x, dates.teacher_inputs(y)],
        y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=common.fit_verbosity(),
    )

    common.step("evaluating on held-out dates (greedy decoding)")
    pred = dates.decode_machine(translate(x_test))
    correct = sum(p == t for p, t in zip(pred, test_isos, strict=True))
    accuracy = correct / len(test_isos)
    print(
        f"exact-match accuracy: {100 * accuracy:.2f}% ({correct}/{len(test_isos)})",
        flush=True,
    )
    weights = alignments(x_test, dates.encode_machine(pred))
    year_rate = dt.year_attention_rate(weights, test_texts)
    digit_rate = dt.year_attention_rate(weights, test_texts, per_digit=True)
    all_rate = dt.year_attention_rate(weights, test_texts, outputs="all")
    year_mass = dt.year_attention_mass(weights, test_texts)
    print(
        f"year attention: {100 * year_rate:.2f}% of held-out dates read the year digits "
        "written in the input from the input's year (argmax of those outputs' summed "
        f"attention); {100 * digit_rate:.2f}% by each digit's own argmax; "
        f"{100 * all_rate:.2f}% counting the inferred century of two-digit years too; "
        f"{100 * year_mass:.2f}% of the attention lies on the year",
        flush=True,
    )

    shown = list(SHOWN)
    x_shown = dates.encode_human(shown)
    shown_pred = dates.decode_machine(translate(x_shown))
    for text, iso in zip(shown, shown_pred, strict=True):
        print(f"    {text:<24} -> {iso}")
    wrong = [(t, p, r) for t, p, r in zip(test_texts, pred, test_isos, strict=True) if p != r]
    for text, p, r in wrong[:5]:
        print(f"    {text:<24} -> {p}  (expected {r})")

    common.step("saving")
    model_path = common.save_model(model, out / f"{NAME}.keras")
    common.report("model", model_path)
    common.report("tokenizer", save_tokenizer(model_path))
    w = alignments(x_shown, dates.encode_machine(shown_pred))
    width = max(len(t) for t in shown) + 1  # a padding column shows the mask
    fig = plot_alignments(
        w[:, :, :width],
        query_labels=list("YYYY-MM-DD"),
        titles=[f"{t!r} -> {p}" for t, p in zip(shown, shown_pred, strict=True)],
        ncols=2,
        title=f"Bahdanau attention · held-out exact match {100 * accuracy:.2f}%",
    )
    for ax, text in zip(fig.axes, shown, strict=False):
        ax.set_xticks(np.arange(width))
        ax.set_xticklabels(list(text.ljust(width)), fontsize=7)
        ax.set_yticks(np.arange(dates.TY))
        ax.set_yticklabels(list(shown_pred[shown.index(text)]), fontsize=7)
    common.report("attention figure", save_figure(fig, out / f"{NAME}_attention.png"))
    common.report("interactive view", show.command_line(model_path, [SHOWN[0]], out=out / "show"))
    return 0


def save_tokenizer(model_path):
    """Writes the character tokenizer ``attnkit show`` reads texts with, beside the model."""
    from attnkit.data import dates

    return show.save_tokenizer(
        model_path,
        input_name="human",
        vocab=list(dates.HUMAN_VOCAB),  # in id order
        length=dates.TX,
        pad_id=dates.HUMAN_VOCAB[dates.PAD],
        unknown_id=dates.HUMAN_VOCAB[dates.UNK],
        lowercase=True,
        remove=",",  # as dates.encode_human
        decoder={
            "input": "decoder_input",
            "start_id": dates.GO_ID,
            "vocab": list(dates.MACHINE_VOCAB),
            "length": dates.TY,
        },
    )

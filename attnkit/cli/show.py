"""``attnkit show MODEL.keras INPUT... [--out DIR] [--view auto|head|model|matrix]``.

Loads a saved model in Keras' safe mode (no arbitrary code runs), runs the
input through it, extracts every attention layer's weights with
``attnkit.attention_maps`` and writes the interactive HTML view and its PNG.

Inputs:

- ``.npy`` arrays, one file per model input in the model's input order, with
  or without the batch axis (loaded with ``allow_pickle=False``);
- text, for models saved with a tokenizer file beside them
  (``dates.keras`` -> ``dates.tokenizer.json``, written by ``save_tokenizer``;
  the dates demo writes one). Each text is one example and gets its own pair
  of files. A tokenizer with a ``decoder`` entry describes a teacher-forced
  encoder-decoder: the output is decoded greedily first (the model reads its
  own previous output, as ``attnkit.models.date_translator.greedy_translate``
  does), then the weights are those of that output, labelled with the output
  characters (rows) and the input characters (columns).

Bad input (a file that is not a Keras model, a model without attention
layers, an input of the wrong shape or kind) prints one line on stderr and
exits with code 2.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

from attnkit.cli.demos.common import positive_int

VIEWS = ("auto", "head", "model", "matrix")
TOKENIZER_FORMAT = "attnkit.characters/1"
_NAME = "attnkit show"


class ShowError(Exception):
    """A bad argument: reported as one line, exit code 2."""


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="a model saved as .keras")
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="one .npy array per model input, or texts for a model saved with a tokenizer",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("attnkit-out/show"),
        metavar="DIR",
        help="folder for the HTML view and the PNG, created if missing (default: attnkit-out/show)",
    )
    parser.add_argument(
        "--view",
        choices=VIEWS,
        default="auto",
        help="auto: matrix for alignments and single maps, head for text self-attention, "
        "model otherwise (default: auto)",
    )
    parser.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="show only this attention layer (repeatable; default: all)",
    )
    parser.add_argument(
        "--example",
        type=int,
        default=0,
        metavar="N",
        help="the example of a batch of .npy inputs to show (default: 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="batch size of the forward pass (default: 32)",
    )


def tokenizer_path(model_path) -> Path:
    """Where the tokenizer of ``model_path`` lives: ``x.keras`` -> ``x.tokenizer.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".tokenizer.json")


def save_tokenizer(
    model_path,
    *,
    input_name,
    vocab,
    length,
    pad_id=0,
    unknown_id=1,
    lowercase=True,
    remove="",
    decoder=None,
) -> Path:
    """Writes the character tokenizer ``attnkit show`` reads beside a saved model.

    Args:
        model_path: the model's ``.keras`` path; the tokenizer goes beside it.
        input_name: the name of the model input that takes the character ids.
        vocab: the tokens in id order (a list), one character each except the
            special tokens at ``pad_id`` and ``unknown_id``.
        length: the input length (texts are padded and truncated to it).
        pad_id: id of padding. Defaults to `0`.
        unknown_id: id of characters outside ``vocab``. Defaults to `1`.
        lowercase: lower-case texts first. Defaults to `True`.
        remove: characters deleted from texts first. Defaults to `""`.
        decoder: for a teacher-forced encoder-decoder, a dict with ``input``
            (the decoder input's name), ``start_id`` (its first token),
            ``vocab`` (output tokens in id order) and ``length`` (output
            steps). Defaults to `None`.

    Returns:
        The written path.
    """
    spec = {
        "format": TOKENIZER_FORMAT,
        "input": str(input_name),
        "vocab": [str(t) for t in vocab],
        "length": int(length),
        "pad_id": int(pad_id),
        "unknown_id": int(unknown_id),
        "lowercase": bool(lowercase),
        "remove": str(remove),
        "decoder": None if decoder is None else dict(decoder),
    }
    path = tokenizer_path(model_path)
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return path


def command_line(model_path, inputs, view=None, out=None) -> str:
    """The ``attnkit show`` line that opens ``model_path`` on ``inputs`` (for the demos)."""
    import shlex

    parts = ["attnkit", "show", os.fspath(model_path), *(os.fspath(i) for i in inputs)]
    if view is not None:
        parts += ["--view", view]
    if out is not None:
        parts += ["--out", os.fspath(out)]
    return shlex.join(parts)


def _one_line(text) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 400 else text[:397] + "..."


def _load_model(path):
    path = Path(path)
    if not path.is_file():
        raise ShowError(f"`MODEL` must be an existing .keras file. Received: MODEL={str(path)!r}")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ShowError(
            "`MODEL` must be a Keras model saved as .keras (a zip archive). "
            f"Received: MODEL={str(path)!r}"
        )
    import keras

    import attnkit  # noqa: F401  registers attnkit's layers for deserialization

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # any failure to read the file is the file's problem
        raise ShowError(
            f"`MODEL` could not be loaded in safe mode ({type(error).__name__}: "
            f"{_one_line(error)}). Received: MODEL={str(path)!r}"
        ) from None
    if not isinstance(model, keras.Model):
        raise ShowError(f"`MODEL` must hold a keras.Model. Received: MODEL={str(path)!r}")
    return model


def _input_specs(model):
    return [(x.name, tuple(x.shape)) for x in model.inputs]


def _load_arrays(model, paths):
    import numpy as np

    specs = _input_specs(model)
    if len(paths) != len(specs):
        names = ", ".join(n for n, _ in specs)
        raise ShowError(
            f"`INPUT` must be one .npy file per model input ({len(specs)}: {names}). "
            f"Received: {len(paths)} files"
        )
    arrays = []
    for path, (name, shape) in zip(paths, specs, strict=True):
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ShowError(
                f"`INPUT` must be a readable .npy array ({_one_line(error)}). "
                f"Received: INPUT={path!r}"
            ) from None
        if x.ndim == len(shape) - 1:
            x = x[None]  # one example without its batch axis
        wanted = "(N, " + ", ".join("?" if d is None else str(d) for d in shape[1:]) + ")"
        if x.ndim != len(shape) or any(
            d is not None and d != n for d, n in zip(shape[1:], x.shape[1:], strict=True)
        ):
            raise ShowError(
                f"`INPUT` must have shape {wanted} for the model input {name!r}. "
                f"Received: INPUT={path!r} of shape {x.shape}"
            )
        if x.dtype.kind not in "biuf":
            raise ShowError(
                f"`INPUT` must hold numbers. Received: INPUT={path!r} of dtype {x.dtype}"
            )
        arrays.append(x)
    return arrays


def _read_tokenizer(model_path):
    path = tokenizer_path(model_path)
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ShowError(
            f"the tokenizer file must be JSON ({_one_line(error)}). Received: {str(path)!r}"
        ) from None
    if not isinstance(spec, dict) or spec.get("format") != TOKENIZER_FORMAT:
        raise ShowError(
            f"the tokenizer file must have format {TOKENIZER_FORMAT!r}. Received: {str(path)!r}"
        )
    return spec


def _encode(spec, texts):
    import numpy as np

    ids = {t: i for i, t in enumerate(spec["vocab"])}
    out = np.full((len(texts), spec["length"]), spec["pad_id"], dtype="int32")
    shown = []
    for row, text in enumerate(texts):
        if spec["lowercase"]:
            text = text.lower()
        text = "".join(c for c in text if c not in spec["remove"])[: spec["length"]]
        out[row, : len(text)] = [ids.get(c, spec["unknown_id"]) for c in text]
        shown.append(text)
    return out, shown


def _text_examples(model, spec, texts, batch_size):
    """[(maps, query labels, key labels or None)] per text, for a tokenized model."""
    import numpy as np

    from attnkit.maps import attention_maps

    names = [n for n, _ in _input_specs(model)]
    x, shown = _encode(spec, texts)
    decoder = spec.get("decoder")
    feeds = {spec["input"]: x}
    outputs = None
    if decoder is not None:
        steps = int(decoder["length"])
        tokens = np.full((len(x), steps), decoder["start_id"], dtype="int32")
        predicted = np.zeros((len(x), steps), dtype="int64")
        for t in range(steps):  # greedy: each step reads the previous prediction
            # predict: one compiled function for all steps (eager JAX is slow).
            probs = model.predict(
                {spec["input"]: x, decoder["input"]: tokens}, batch_size=batch_size, verbose=0
            )  # (N, Ty, V)
            predicted[:, t] = probs[:, t].argmax(-1)
            if t + 1 < steps:
                tokens[:, t + 1] = predicted[:, t]
        feeds[decoder["input"]] = tokens
        outputs = [[decoder["vocab"][int(i)] for i in row] for row in predicted]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ShowError(
            f"the tokenizer must feed every model input {tuple(names)}. "
            f"Received: a tokenizer for {tuple(feeds)}"
        )
    maps = _maps(attention_maps, model, [feeds[n] for n in names], batch_size)
    examples = []
    for e, text in enumerate(shown):
        keys = list(text) + (["<pad>"] if len(text) < spec["length"] else [])
        width = len(keys)
        one = {}
        for name, w in maps.items():
            w = np.asarray(w[e : e + 1])
            # Padding past the first pad column is masked: it carries no weight.
            if w.shape[-1] == spec["length"]:
                w = w[..., :width]
            if w.ndim >= 3 and w.shape[-2] == spec["length"]:
                w = w[..., :width, :]
            one[name] = w
        examples.append((one, outputs[e] if outputs else None, keys, text))
    return examples


def _maps(attention_maps, model, inputs, batch_size):
    try:
        return attention_maps(model, inputs, batch_size=batch_size)
    except ValueError as error:
        message = str(error)
        if "at least one attention layer" in message:
            raise ShowError(
                "`MODEL` must contain an attention layer (one whose call takes "
                f"`return_attention_scores`). Received: MODEL={model.name!r}"
            ) from None
        raise ShowError(f"the model could not be run on the input: {_one_line(message)}") from None


def _choose(view, maps, text):
    """The view to draw for ``--view auto``."""
    import numpy as np

    if view != "auto":
        return view
    shapes = [np.asarray(w).shape for w in maps.values()]
    single = len(maps) == 1 and (len(shapes[0]) < 4 or shapes[0][1] == 1)
    cross = any(len(s) >= 3 and s[-1] != s[-2] for s in shapes)
    if single or cross:
        return "matrix"
    return "head" if text else "model"


def _write(maps, view_kind, out, stem, queries, keys, title):
    from attnkit.viz import head_view, matrix_view, model_view

    try:
        if view_kind == "head":
            view = head_view(maps, query_tokens=queries, key_tokens=keys, title=title)
        elif view_kind == "model":
            view = model_view(maps, query_tokens=queries, key_tokens=keys, title=title)
        else:
            view = matrix_view(maps, queries, keys, title=title)
    except ValueError as error:
        raise ShowError(
            f"the {view_kind} view cannot show these maps: {_one_line(error)}"
        ) from None
    html = view.save(out / f"{stem}.html")
    png = view.save(out / f"{stem}.png")
    return html, png


def _select(maps, layers):
    if not layers:
        return maps
    unknown = [n for n in layers if n not in maps]
    if unknown:
        raise ShowError(
            f"`--layer` must name attention layers of the model {tuple(maps)}. "
            f"Received: --layer {unknown[0]}"
        )
    return {n: maps[n] for n in layers}


def run(args) -> int:
    from attnkit._optional import require

    require("matplotlib", "attnkit show")  # before the model is loaded
    try:
        return _run(args)
    except ShowError as error:
        print(f"{_NAME}: {error}", file=sys.stderr)
        return 2


def _run(args):
    import numpy as np

    from attnkit.maps import attention_maps

    model = _load_model(args.model)
    stem = Path(args.model).stem
    out = Path(args.out)
    npy = [p for p in args.inputs if p.endswith(".npy")]
    if npy and len(npy) != len(args.inputs):
        raise ShowError(
            "`INPUT` must be all .npy files or all texts. "
            f"Received: INPUT={' '.join(args.inputs)!r}"
        )
    written = []
    if npy:
        arrays = _load_arrays(model, args.inputs)
        n = len(arrays[0])
        if not 0 <= args.example < n:
            raise ShowError(
                f"`--example` must be below the batch size {n}. Received: --example {args.example}"
            )
        maps = _select(_maps(attention_maps, model, arrays, args.batch_size), args.layer)
        maps = {k: np.asarray(v)[args.example : args.example + 1] for k, v in maps.items()}
        kind = _choose(args.view, maps, text=False)
        title = f"{stem}: example {args.example}"
        written.append(_write(maps, kind, out, f"{stem}_{kind}", None, None, title))
    else:
        spec = _read_tokenizer(args.model)
        if spec is None:
            raise ShowError(
                "`INPUT` must be .npy files: the model has no tokenizer file "
                f"({tokenizer_path(args.model).name}) to read text with. "
                f"Received: INPUT={args.inputs[0]!r}"
            )
        examples = _text_examples(model, spec, args.inputs, args.batch_size)
        for e, (maps, outputs, keys, text) in enumerate(examples):
            maps = _select(maps, args.layer)
            kind = _choose(args.view, maps, text=True)
            queries = outputs if outputs is not None else None
            if outputs is None:  # self-attention over the text: both sides are its characters
                queries = keys
            title = f"{text!r} -> {''.join(outputs)}" if outputs else repr(text)
            name = f"{stem}_{kind}" + (f"_{e}" if len(examples) > 1 else "")
            written.append(_write(maps, kind, out, name, queries, keys, title))
            if outputs:
                print(f"{text!r} -> {''.join(outputs)}")
    for html, png in written:
        print(f"view: {html}")
        print(f"png:  {png}")
    return 0

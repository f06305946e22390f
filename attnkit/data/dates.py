"""Human-readable dates and their ISO 8601 form, for the date-translation demo.

The task of the deeplearning.ai Sequence Models course: read a date written as
a person would ("3 may 1979", "tuesday march 5 1991", "12/24/07") and write it
as ``YYYY-MM-DD``. The course rendered random dates with babel's ``en_US``
patterns; this module reproduces those patterns with the standard library only
(no locale data, no download):

    short          M/d/yy                 3/5/79
    medium         MMM d, y               mar 5 1979
    long           MMMM d, y              march 5 1979
    full (x10)     EEEE, MMMM d, y        monday march 5 1979
    d MMM YYY                             5 mar 1979
    d MMMM YYY                            5 march 1979
    dd MMM YYY                            05 mar 1979
    d MMM, YYY                            5 mar 1979
    d MMMM, YYY                           5 march 1979
    dd, MMM YYY                           05 mar 1979
    d MM YY                               5 03 79
    MMMM d YYY                            march 5 1979
    MMMM d, YYY                           march 5 1979
    dd.MM.YY                              05.03.79

Every string is lower-cased and has its commas removed, as in the course.
``full`` appears ten times in the course's list, so it is drawn with weight 10.

One deliberate difference: babel's ``Y`` is the *week-numbering* year, which
in the course data puts e.g. "30 dec 2019" under 2020 for a date in 2019.
Here ``Y`` is the calendar year, so the target is always a function of the
input. Dates are drawn uniformly from 1970-01-01 to 2069-12-31, a century, so a
two-digit year names one year only (70-99 -> 19xx, 00-69 -> 20xx).

The year is always the last run of digits of an input (see ``year_span``).
"""

from __future__ import annotations

import datetime

import numpy as np

TX = 30  # input length in characters (padded / truncated)
TY = 10  # output length: "YYYY-MM-DD"
FIRST_DATE = datetime.date(1970, 1, 1)
LAST_DATE = datetime.date(2069, 12, 31)

PAD = "<pad>"
UNK = "<unk>"
GO = "<go>"

_MONTHS = (
    "january february march april may june july august september october november december"
).split()
_MONTHS_ABBR = [m[:3] for m in _MONTHS]
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()

# The course's list, in its order (``full`` ten times in the course).
FORMATS = (
    "short",
    "medium",
    "long",
    "full",
    "d MMM YYY",
    "d MMMM YYY",
    "dd MMM YYY",
    "d MMM, YYY",
    "d MMMM, YYY",
    "dd, MMM YYY",
    "d MM YY",
    "MMMM d YYY",
    "MMMM d, YYY",
    "dd.MM.YY",
)
FORMAT_WEIGHTS = tuple(10 if f == "full" else 1 for f in FORMATS)

# babel's en_US patterns for the four named formats.
_NAMED = {
    "short": "M/d/yy",
    "medium": "MMM d, y",
    "long": "MMMM d, y",
    "full": "EEEE, MMMM d, y",
}

# Characters any rendered date can contain, plus padding and unknown.
HUMAN_VOCAB = {
    token: i
    for i, token in enumerate(
        [PAD, UNK, " ", ".", "/"]
        + [str(d) for d in range(10)]
        + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    )
}
# Target characters; the decoder's input also has a start token after them.
MACHINE_VOCAB = {token: i for i, token in enumerate([str(d) for d in range(10)] + ["-"])}
INV_MACHINE_VOCAB = {i: token for token, i in MACHINE_VOCAB.items()}
GO_ID = len(MACHINE_VOCAB)  # 11: the decoder's first input


def _field(letter: str, count: int, date: datetime.date) -> str:
    if letter == "d":
        return f"{date.day:0{count}d}"
    if letter == "M":
        if count >= 4:
            return _MONTHS[date.month - 1]
        if count == 3:
            return _MONTHS_ABBR[date.month - 1]
        return f"{date.month:0{count}d}"
    if letter in "yY":
        if count == 2:
            return f"{date.year % 100:02d}"
        return f"{date.year:0{count}d}"
    if letter == "E":
        return _WEEKDAYS[date.weekday()]
    raise ValueError(f"unsupported pattern letter. Received: letter={letter!r}")


def render(date: datetime.date, fmt: str) -> str:
    """``date`` in one of ``FORMATS``, lower-cased and without commas.

    Example:
        >>> import datetime
        >>> from attnkit.data.dates import render
        >>> render(datetime.date(1979, 5, 3), "d MMM YYY")
        '3 may 1979'
        >>> render(datetime.date(1979, 5, 3), "full")
        'thursday may 3 1979'
    """
    if fmt not in FORMATS:
        raise ValueError(f"expected one of {FORMATS}. Received: fmt={fmt!r}")
    pattern = _NAMED.get(fmt, fmt)
    pieces, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch.isalpha():
            j = i
            while j < len(pattern) and pattern[j] == ch:
                j += 1
            pieces.append(_field(ch, j - i, date))
            i = j
        else:
            pieces.append(ch)
            i += 1
    return "".join(pieces).lower().replace(",", "")


def year_span(text: str) -> tuple[int, int]:
    """Character span ``[start, end)`` of the year in a rendered date.

    In every format the year is the last run of digits.

    Example:
        >>> from attnkit.data.dates import year_span
        >>> year_span("3 may 1979")
        (6, 10)
        >>> year_span("5/3/79")
        (4, 6)
    """
    end = len(text)
    while end > 0 and not text[end - 1].isdigit():
        end -= 1
    start = end
    while start > 0 and text[start - 1].isdigit():
        start -= 1
    if start == end:
        raise ValueError(f"expected a date with digits. Received: text={text!r}")
    return start, end


def random_dates(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` pairs ``(human, iso)`` drawn with a fixed seed.

    Dates are uniform over ``FIRST_DATE .. LAST_DATE``; formats follow
    ``FORMAT_WEIGHTS``.
    """
    rng = np.random.default_rng(seed)
    span = (LAST_DATE - FIRST_DATE).days + 1
    offsets = rng.integers(0, span, size=n)
    p = np.asarray(FORMAT_WEIGHTS, dtype="float64")
    fmts = rng.choice(len(FORMATS), size=n, p=p / p.sum())
    pairs = []
    for offset, f in zip(offsets, fmts, strict=True):
        date = FIRST_DATE + datetime.timedelta(days=int(offset))
        pairs.append((render(date, FORMATS[f]), date.isoformat()))
    return pairs


def encode_human(texts, length: int = TX) -> np.ndarray:
    """Character ids ``(N, length)`` int32, padded with ``PAD`` and truncated."""
    unk = HUMAN_VOCAB[UNK]
    out = np.full((len(texts), length), HUMAN_VOCAB[PAD], dtype="int32")
    for row, text in enumerate(texts):
        ids = [HUMAN_VOCAB.get(c, unk) for c in text.lower().replace(",", "")]
        ids = ids[:length]
        out[row, : len(ids)] = ids
    return out


def encode_machine(isos) -> np.ndarray:
    """Target ids ``(N, TY)`` int32 of ISO dates."""
    return np.array([[MACHINE_VOCAB[c] for c in iso] for iso in isos], dtype="int32")


def decode_machine(ids) -> list[str]:
    """Strings from target ids ``(N, TY)``."""
    return ["".join(INV_MACHINE_VOCAB[int(i)] for i in row) for row in np.asarray(ids)]


def teacher_inputs(targets: np.ndarray) -> np.ndarray:
    """Decoder inputs for teacher forcing: ``GO`` then the targets shifted right."""
    go = np.full((len(targets), 1), GO_ID, dtype="int32")
    return np.concatenate([go, targets[:, :-1]], axis=1)


def load(n: int, seed: int = 0):
    """``(texts, isos, x, y)`` for ``n`` dates: ``x`` (n, TX), ``y`` (n, TY)."""
    pairs = random_dates(n, seed)
    texts = [h for h, _ in pairs]
    isos = [m for _, m in pairs]
    return texts, isos, encode_human(texts), encode_machine(isos)

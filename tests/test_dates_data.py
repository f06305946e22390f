"""The date generator: the course's formats, targets, vocabularies, year spans."""

import datetime

import numpy as np
import pytest

from attnkit.data import dates

MAY_3_1979 = datetime.date(1979, 5, 3)


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("short", "5/3/79"),
        ("medium", "may 3 1979"),
        ("long", "may 3 1979"),
        ("full", "thursday may 3 1979"),
        ("d MMM YYY", "3 may 1979"),
        ("d MMMM YYY", "3 may 1979"),
        ("dd MMM YYY", "03 may 1979"),
        ("d MMM, YYY", "3 may 1979"),
        ("d MMMM, YYY", "3 may 1979"),
        ("dd, MMM YYY", "03 may 1979"),
        ("d MM YY", "3 05 79"),
        ("MMMM d YYY", "may 3 1979"),
        ("MMMM d, YYY", "may 3 1979"),
        ("dd.MM.YY", "03.05.79"),
    ],
)
def test_render_may_3_1979(fmt, expected):
    assert dates.render(MAY_3_1979, fmt) == expected


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("short", "12/24/07"),
        ("medium", "dec 24 2007"),
        ("long", "december 24 2007"),
        ("full", "monday december 24 2007"),
        ("d MMMM, YYY", "24 december 2007"),
        ("dd, MMM YYY", "24 dec 2007"),
        ("d MM YY", "24 12 07"),
    ],
)
def test_render_two_digit_fields_and_abbreviations(fmt, expected):
    assert dates.render(datetime.date(2007, 12, 24), fmt) == expected


def test_render_rejects_unknown_format():
    with pytest.raises(ValueError, match="Received: fmt='yyyy'"):
        dates.render(MAY_3_1979, "yyyy")


def test_full_has_ten_times_the_weight_and_all_formats_occur():
    assert dict(zip(dates.FORMATS, dates.FORMAT_WEIGHTS, strict=True))["full"] == 10
    assert sum(dates.FORMAT_WEIGHTS) == len(dates.FORMATS) + 9
    texts = [h for h, _ in dates.random_dates(3000, seed=1)]
    weekday = [t for t in texts if t.split()[0].endswith("day")]
    # full is 10/23 of the draws
    assert 0.38 < len(weekday) / len(texts) < 0.49
    assert any("/" in t for t in texts) and any("." in t for t in texts)


def test_targets_are_the_iso_form_of_the_rendered_date():
    for human, iso in dates.random_dates(500, seed=2):
        date = datetime.date.fromisoformat(iso)
        assert dates.FIRST_DATE <= date <= dates.LAST_DATE
        assert human in {dates.render(date, f) for f in dates.FORMATS}
        assert human == human.lower() and "," not in human
        assert len(human) <= dates.TX and len(iso) == dates.TY


def test_seeded():
    assert dates.random_dates(50, seed=3) == dates.random_dates(50, seed=3)
    assert dates.random_dates(50, seed=3) != dates.random_dates(50, seed=4)


def test_two_digit_years_name_one_year():
    years = {}
    for day in range(0, (dates.LAST_DATE - dates.FIRST_DATE).days, 97):
        date = dates.FIRST_DATE + datetime.timedelta(days=day)
        years.setdefault(dates.render(date, "d MM YY")[-2:], set()).add(date.year)
    assert all(len(v) == 1 for v in years.values())


@pytest.mark.parametrize(
    "text, span",
    [
        ("3 may 1979", (6, 10)),
        ("5/3/79", (4, 6)),
        ("thursday may 3 1979", (15, 19)),
        ("03.05.79", (6, 8)),
        ("3 05 79", (5, 7)),
    ],
)
def test_year_span(text, span):
    assert dates.year_span(text) == span


def test_year_span_matches_the_year_of_every_format():
    date = datetime.date(2046, 7, 19)
    for fmt in dates.FORMATS:
        text = dates.render(date, fmt)
        start, end = dates.year_span(text)
        assert text[start:end] in ("2046", "46"), fmt


def test_year_span_rejects_text_without_digits():
    with pytest.raises(ValueError, match="Received: text='may'"):
        dates.year_span("may")


def test_encoding_round_trip_and_padding():
    texts, isos, x, y = dates.load(64, seed=5)
    assert x.shape == (64, dates.TX) and x.dtype == np.int32
    assert y.shape == (64, dates.TY) and y.dtype == np.int32
    inv = {i: c for c, i in dates.HUMAN_VOCAB.items()}
    for text, row in zip(texts, x, strict=True):
        assert "".join(inv[i] for i in row[: len(text)]) == text
        assert np.all(row[len(text) :] == dates.HUMAN_VOCAB[dates.PAD])
    assert dates.decode_machine(y) == isos
    assert dates.HUMAN_VOCAB[dates.PAD] == 0  # mask_zero in the model relies on it
    assert dates.encode_human(["3 may 1979!"])[0, 10] == dates.HUMAN_VOCAB[dates.UNK]
    assert dates.encode_human(["x" * 40]).shape == (1, dates.TX)


def test_teacher_inputs_shift_right_after_go():
    y = dates.encode_machine(["1979-05-03"])
    dec = dates.teacher_inputs(y)
    assert dec[0, 0] == dates.GO_ID
    np.testing.assert_array_equal(dec[0, 1:], y[0, :-1])
    assert dates.GO_ID not in dates.MACHINE_VOCAB.values()

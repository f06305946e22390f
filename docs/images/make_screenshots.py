"""Regenerates the README screenshots of the views from a trained dates model.

    attnkit demo dates --out attnkit-out/dates
    python docs/images/make_screenshots.py attnkit-out/dates/dates.keras

Writes docs/images/head_view.png (the head view of the decoder's attention
over the input characters: output characters left, input characters right)
and docs/images/dates_alignment.png (the matrix view of the same alignment,
hovered on one cell), as headless Chromium draws them (Debian's
/usr/bin/chromium driven by Playwright).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
TEXT = "tuesday april 27 2055"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main(model_path):
    import keras
    from playwright.sync_api import sync_playwright

    from attnkit.data import dates
    from attnkit.models import date_translator as dt
    from attnkit.viz import head_view, matrix_view

    model = keras.saving.load_model(model_path)
    x = dates.encode_human([TEXT])
    pred = dt.greedy_translate(model, x)
    iso = dates.decode_machine(pred)[0]
    keys = [*TEXT, "<pad>"]
    w = dt.alignments(model, x, pred)[:, :, : len(keys)]  # (1, Ty, len + 1)
    maps = {"attention": w}
    title = f"{TEXT!r} -> {iso}"
    views = {
        "head_view.png": head_view(maps, query_tokens=list(iso), key_tokens=keys, title=title),
        "dates_alignment.png": matrix_view(maps, list(iso), keys, title=title),
    }
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 900, "height": 600})
        for name, view in views.items():
            path = view.save(Path(tmp) / "view.html")
            page.goto(path.as_uri())
            page.wait_for_function("window.attnkit && window.attnkit.ready")
            geom = page.evaluate("window.attnkit.geom")  # where the canvas draws
            box = page.locator("#view").bounding_box()
            if view.kind == "matrix":  # hover the output's third year digit on its input digit
                j = TEXT.index("2055") + 2
                page.mouse.move(
                    box["x"] + geom["left"] + (j + 0.5) * geom["cell"],
                    box["y"] + geom["top"] + 2.5 * geom["cell"],
                )
            clip = {
                "x": 0,
                "y": 0,
                "width": 900 if view.kind == "head" else box["x"] + box["width"] + 20,
                "height": box["y"] + box["height"] + 40,
            }
            page.screenshot(path=str(HERE / name), clip=clip)
            print(HERE / name, np.round(w.max(), 3))
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1])

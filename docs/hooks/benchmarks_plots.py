"""MkDocs hook: benchmarks.md's plots and tables, drawn from benchmarks/results/*.json.

``on_pre_build`` reads every result file of ``attnkit bench`` (one JSON list of runs:
backend, implementation, N, pass, causal, median and per-repeat times in ms, peak RSS
in GiB, status) and draws into ``docs/generated/benchmarks/``:

- ``forward.png``: forward time against N, one panel per backend, attnkit's ``auto``
  against the peers measured in the same file (log-log; runs that failed are marked);
- ``memory.png``: peak resident memory against N for the implementations measured
  side by side (naive, chunked, auto), with the runs that failed;
- ``passes.png``: the N=4096 runs of each backend, forward, causal forward and
  forward + backward.

``on_page_markdown`` replaces the ``<!-- benchmark-tables -->`` line of benchmarks.md
with one table per result file, so the numbers next to the plots are the plotted ones.
Files in another layout (the A/B scripts' ``ab_*.json``) are listed, not plotted.

The drawing is cached by a hash of the result files and this module: with nothing
changed, ``on_pre_build`` returns at once (``mkdocs serve`` stays fast). Run
``python docs/hooks/benchmarks_plots.py`` to draw without MkDocs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "generated" / "benchmarks"
STAMP = OUT / ".source-hash"
MARKER = "<!-- benchmark-tables -->"
PLOTS = ("forward.png", "memory.png", "passes.png")
BACKENDS = ("jax", "torch", "tensorflow")
RUN_KEYS = {"backend", "impl", "n", "pass", "status"}


def load_results() -> dict[str, list[dict[str, Any]]]:
    """{file name: runs} for every results file, runs without the plotted keys left as []."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        runs = data if isinstance(data, list) else []
        found[path.name] = [r for r in runs if isinstance(r, dict) and RUN_KEYS <= set(r)]
    return found


def _source_hash() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(RESULTS.glob("*.json")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _label(run: dict[str, Any]) -> str:
    impl = run["impl"]
    return f"attnkit {impl}" if impl in ("auto", "chunked", "naive", "fused") else impl


def _series(runs, **match):
    """{label: sorted [(n, run)]} of the runs matching ``match``."""
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for run in runs:
        if all(run.get(k) == v for k, v in match.items()):
            series.setdefault(_label(run), []).append((run["n"], run))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in sorted(series.items())}


def _plot_lines(ax, series, value, ylabel):
    for label, points in series.items():
        ok = [(n, r[value]) for n, r in points if r["status"] == "ok" and r.get(value)]
        failed = [n for n, r in points if r["status"] != "ok"]
        style = "-" if label.startswith("attnkit") else "--"
        (line,) = ax.plot([p[0] for p in ok], [p[1] for p in ok], style, marker="o", label=label)
        if failed and ok:
            top = max(p[1] for p in ok)
            ax.scatter(failed, [top] * len(failed), marker="x", color=line.get_color(), s=60)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def draw(results: dict[str, list[dict[str, Any]]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    runs = [r for name, file_runs in results.items() for r in file_runs]
    written = []

    # Forward time against N: the fwd_<backend>.json files compare attnkit with its peers.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for ax, backend in zip(axes, BACKENDS, strict=True):
        peers = [
            r
            for name, file_runs in results.items()
            if name.startswith(f"fwd_{backend}")
            for r in file_runs
            if r["pass"] == "fwd" and not r.get("causal")
        ]
        unique = {(r["impl"], r["n"]): r for r in peers}
        _plot_lines(ax, _series(unique.values()), "median_ms", "median forward time (ms)")
        ax.set_title(f"{backend}: B=1, H=8, D=64 (x: failed)")
    fig.suptitle("Forward attention, attnkit against each backend's peers")
    written.append(_save(fig, "forward.png"))

    # Peak memory against N where naive, chunked and auto ran side by side.
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    side_by_side = results.get("quick_jax.json", [])
    _plot_lines(ax, _series(side_by_side), "peak_rss_gib", "peak resident memory (GiB)")
    ax.set_title("jax forward: naive materialises N x N, chunked stays O(N)\n(x: failed)")
    written.append(_save(fig, "memory.png"))

    # The N=4096 auto runs of each backend: forward, causal forward, forward + backward.
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    kinds = (
        ("forward", "fwd", False),
        ("causal forward", "fwd", True),
        ("fwd + bwd", "fwd+bwd", False),
    )
    width = 0.25
    for k, (label, pass_, causal) in enumerate(kinds):
        heights = []
        for backend in BACKENDS:
            times = [
                r["median_ms"]
                for r in runs
                if r["backend"] == backend
                and r["impl"] == "auto"
                and r["n"] == 4096
                and r["pass"] == pass_
                and bool(r.get("causal")) == causal
                and r["status"] == "ok"
                and r.get("median_ms")
            ]
            heights.append(min(times) if times else 0.0)
        xs = [i + (k - 1) * width for i in range(len(BACKENDS))]
        bars = ax.bar(xs, heights, width, label=label)
        ax.bar_label(bars, labels=[f"{h:.0f}" if h else "n/a" for h in heights], fontsize=7)
    ax.set_xticks(range(len(BACKENDS)), BACKENDS)
    ax.set_ylabel("median time (ms), fastest recorded run")
    ax.set_title("attnkit auto at N=4096 (B=1, H=8, D=64)")
    ax.legend(fontsize=8)
    written.append(_save(fig, "passes.png"))
    plt.close("all")
    return written


def _save(fig, name: str) -> Path:
    path = OUT / name
    fig.savefig(path, dpi=110)
    return path


def tables(results: dict[str, list[dict[str, Any]]]) -> str:
    lines: list[str] = []
    other = []
    for name, runs in results.items():
        if not runs:
            other.append(name)
            continue
        lines += [
            f"### `{name}`",
            "",
            "| backend | implementation | N | pass | causal | median (ms) | peak RSS (GiB) "
            "| status |",
            "|---|---|---:|---|---|---:|---:|---|",
        ]
        for r in runs:
            median = f"{r['median_ms']:.1f}" if r.get("median_ms") else ""
            rss = f"{r['peak_rss_gib']:.2f}" if r.get("peak_rss_gib") else ""
            status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')}"
            status = status.replace("|", "/").replace("\n", " ")[:80]
            lines.append(
                f"| {r['backend']} | {r['impl']} | {r['n']} | {r['pass']} | "
                f"{bool(r.get('causal'))} | {median} | {rss} | {status} |"
            )
        lines.append("")
    if other:
        names = ", ".join(f"`{n}`" for n in other)
        lines += [f"Not plotted (the A/B scripts' own layout, read in BENCHMARKS.md): {names}.", ""]
    return "\n".join(lines)


def on_pre_build(config) -> None:
    source = _source_hash()
    if (
        STAMP.is_file()
        and STAMP.read_text() == source
        and all((OUT / name).is_file() for name in PLOTS)
    ):
        return
    draw(load_results())
    STAMP.write_text(source)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, tables(load_results()))


if __name__ == "__main__":
    for path in draw(load_results()):
        print(path)

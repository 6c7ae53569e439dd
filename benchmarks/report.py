"""Turns the result JSON into tables and a chart: nothing here is typed by hand.

    python -m benchmarks.report [--results benchmarks/results]

writes, next to the JSON files:

* `README.md`, the tables in Markdown;
* `table.rst`, the same in reStructuredText, included by docs/benchmarks.rst;
* `ratios.png`, a chart of the median ratios B/A against their targets;
* `scaling-<device>.png`, RMSE update time against batch size with its memory
  floor, for each device whose runs measured it.

It imports neither Keras nor a backend; the chart needs matplotlib.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

from keras_extras_core.files import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("tensorflow", "jax", "torch")
DEVICES = {"cpu": "CPU", "gpu": "GPU"}
COLORS = {"tensorflow": "#ff8f00", "jax": "#5e97f6", "torch": "#ee4c2c"}

INTRO = (
    "Each figure is the median, over interleaved pairs (A B A B ..., after a warm-up), "
    "of the time keras_extras takes (B) divided by the time the Keras built-in it "
    "replaces takes (A) for the same work: below 1.00 ours is faster, above 1.00 it is "
    "slower. Targets are reported, not asserted: ✓ met, ✗ missed."
)

# A document is a list of blocks, rendered to Markdown and to reStructuredText:
# ("heading", level, text), ("text", text), ("list", [items]),
# ("table", header, rows), ("image", path, alt).
Block = tuple


def load(directory: Path) -> list[dict[str, Any]]:
    """Every result file in `directory`, CPU before GPU, backends in a fixed order."""
    # Only `<device>-<backend>.json`: other JSON may sit beside them (cli.json).
    paths = sorted(p for device in DEVICES for p in directory.glob(f"{device}-*.json"))
    runs = [json.loads(p.read_text()) for p in paths]

    def order(run: dict[str, Any]) -> tuple:
        m = run["machine"]
        backend = BACKENDS.index(m["backend"]) if m["backend"] in BACKENDS else len(BACKENDS)
        return (list(DEVICES).index(m["device"]), backend)

    return sorted(runs, key=order)


def _ratio_cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "not run"
    if record["status"] != "ok":
        return record["status"]
    # Three decimals: 1.024 against a target of 1.02 must not read as 1.02.
    cell = f"{record['ratio_median']:.3f}"
    if record["target_met"] is True:
        cell += " ✓"
    elif record["target_met"] is False:
        cell += " ✗"
    return cell


def _target_cell(target: float | None) -> str:
    return "–" if target is None else f"≤ {target:.2f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g}"


def _ms_range(side: dict[str, Any]) -> str:
    return (
        f"{side['median_s'] * 1e3:,.0f} ms [{side['min_s'] * 1e3:,.0f}, {side['max_s'] * 1e3:,.0f}]"
    )


def _side_cell(side: dict[str, Any]) -> str:
    return f"{_ms(side['median_s'])} [{_ms(side['min_s'])}, {_ms(side['max_s'])}]"


def _rate(side: dict[str, Any]) -> str:
    rate = side.get("samples_per_s")
    return "–" if rate is None else f"{rate:,.0f}"


def _machine_line(run: dict[str, Any]) -> str:
    m = run["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    line = f"`{m['backend']}`: {m['device_name']}; {versions}; {run['started']}"
    if m.get("git_commit"):
        line += f", commit {m['git_commit']}"
    if "seconds" in run:
        line += f", {run['seconds']:.0f} s"
    for stage, origin in run.get("carried", {}).items():
        line += f"; {stage} from the run of {origin['started']}"
        if origin.get("git_commit"):
            line += f", commit {origin['git_commit']}"
    if run.get("quick"):
        line += " (quick smoke run: sizes too small for the figures to mean anything)"
    if not run.get("complete", True):
        line += " (interrupted: not every comparison ran)"
    return line


def document(runs: list[dict[str, Any]]) -> list[Block]:
    """The tables of all runs, one section per device."""
    blocks: list[Block] = [("text", INTRO)]
    if not runs:
        blocks.append(("text", "No measurements yet: run `make bench`, which writes them here."))
        return blocks
    blocks.append(("image", "ratios.png", "Median ratio B/A per comparison and backend"))
    for device, device_title in DEVICES.items():
        device_runs = [r for r in runs if r["machine"]["device"] == device]
        if not device_runs:
            continue
        backends = [r["machine"]["backend"] for r in device_runs]
        by_backend = {
            r["machine"]["backend"]: {rec["id"]: rec for rec in r["results"]} for r in device_runs
        }
        ids: dict[str, dict[str, Any]] = {}
        for run in device_runs:
            for record in run["results"]:
                ids.setdefault(record["id"], record)
        blocks.append(("heading", 2, device_title))
        blocks.append(("text", "Measured on:"))
        blocks.append(("list", [_machine_line(r) for r in device_runs]))
        rows = [
            [rec["title"], _target_cell(rec["target"])]
            + [_ratio_cell(by_backend[b].get(case_id)) for b in backends]
            for case_id, rec in ids.items()
        ]
        blocks.append(("table", ["Comparison (B/A)", "Target"] + backends, rows))

        missed = [
            f"{b}, {rec['title']}: {rec['ratio_median']:.3f}× (target ≤ {rec['target']:.2f}×)"
            for b in backends
            for rec in by_backend[b].values()
            if rec.get("target_met") is False
        ]
        blocks.append(("heading", 3, f"Missed targets ({device_title})"))
        blocks.append(("list", missed) if missed else ("text", "None: every target was met."))
        fixed = [
            f"{b}, {rec['title']}: {_ms_range(rec['fixed_s'])}"
            + (
                f"; its child processes used {_ms_range(rec['child_cpu_s'])} of CPU"
                if rec.get("child_cpu_s", {}).get("max_s")
                else ""
            )
            + f"; median fit {(rec['b']['median_s'] - rec['a']['median_s']) * 1e3:+,.0f} ms"
            for b in backends
            for rec in by_backend[b].values()
            if rec["status"] == "ok" and "fixed_s" in rec
        ]
        if fixed:
            blocks.append(("heading", 3, f"Fixed cost per fit ({device_title})"))
            blocks.append(
                (
                    "text",
                    "Time inside the callback's `on_train_begin` plus `on_train_end` in "
                    "each `fit` with it (for TrainingPlotter: starting the drawing process "
                    "that every plotter of a process shares, in the first fit that draws, "
                    "and waiting for the last file), and the CPU "
                    "time its child processes used during the fit, median [min, max] over "
                    "every such fit, the warm-up fit included (the max is usually that "
                    "first fit); then the median fit's time with the callback minus that "
                    "without.",
                )
            )
            blocks.append(("list", fixed))
        absent = [
            f"{b}, {rec['title']}: {rec['status']}, {rec.get('reason', '')}"
            for b in backends
            for rec in by_backend[b].values()
            if rec["status"] != "ok"
        ]
        if absent:
            blocks.append(("heading", 3, f"Not measured ({device_title})"))
            blocks.append(("list", absent))

        blocks += _scaling_blocks(device, device_title, device_runs)
        blocks.append(("heading", 3, f"Details ({device_title})"))
        blocks.append(
            (
                "text",
                "Time per sample in ms, median [min, max] over the counted repeats; "
                "samples/s is the throughput at the median (metric: predictions "
                "scored; fit: training examples).",
            )
        )
        for run in device_runs:
            b = run["machine"]["backend"]
            rows = [
                [
                    rec["title"],
                    rec["a_label"],
                    rec["b_label"],
                    _side_cell(rec["a"]),
                    _side_cell(rec["b"]),
                    f"{rec['ratio_median']:.3f}",
                    _rate(rec["a"]),
                    _rate(rec["b"]),
                ]
                for rec in run["results"]
                if rec["status"] == "ok"
            ]
            if not rows:
                continue
            blocks.append(("heading", 4, f"{b} on {device_title}"))
            header = ["Comparison", "A", "B", "A ms", "B ms", "B/A", "A samples/s", "B samples/s"]
            blocks.append(("table", header, rows))
    return blocks


SCALING_TEXT = (
    "Time of one RMSE update against the batch size (10 float32 classes), for the "
    "built-in (A: `keras.metrics.RootMeanSquaredError`, after `one_hot` for sparse "
    "labels) and ours (B), eager and compiled as in the table above. The floor is the "
    "bytes an update must read (predictions and targets, or predictions and int32 "
    "labels, once) over the bandwidth of a plain array copy (`y = -x`, {copy} MiB, "
    "bytes read plus written, the fastest of five) timed on the same device in the same "
    "run: {bandwidth}. Below the size of the caches the inputs are not read from memory "
    "and the floor bounds nothing. *Linear from* is the smallest batch from which every "
    "step to the next batch size grows the time at least 3/4 as much as the batch, that "
    "is, where the update has become bound by the data it reads rather than by a fixed "
    "cost per call (– where that never happens up to the largest batch); *× floor* is "
    "the time at the largest batch over the floor."
)


def linear_from(batches: list[int], seconds: list[float]) -> int | None:
    """The smallest batch from which time grows at least 3/4 as fast as the batch."""
    start = None
    for k in range(len(batches) - 1, 0, -1):
        growth = seconds[k] / seconds[k - 1]
        if growth < 0.75 * batches[k] / batches[k - 1]:
            break
        start = batches[k - 1]
    return start


def _scaling_curves(run: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The scaling points of one run by (kind, mode), in increasing batch."""
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for point in run.get("scaling", {}).get("points", []):
        curves.setdefault((point["kind"], point["mode"]), []).append(point)
    return {key: sorted(points, key=lambda p: p["batch"]) for key, points in curves.items()}


def _scaling_blocks(device: str, title: str, runs: list[dict[str, Any]]) -> list[Block]:
    runs = [r for r in runs if r.get("scaling", {}).get("points")]
    if not runs:
        return []
    copies = {r["scaling"]["copy"]["bytes"] for r in runs}
    bandwidth = ", ".join(
        f"{r['machine']['backend']} {r['scaling']['copy']['bandwidth_Bps'] / 1e9:,.1f} GB/s"
        for r in runs
    )
    text = SCALING_TEXT.format(
        copy="/".join(f"{c / 2**20:g}" for c in sorted(copies)), bandwidth=bandwidth
    )
    rows = []
    for run in runs:
        for (kind, mode), points in _scaling_curves(run).items():
            batches = [p["batch"] for p in points]
            row = [run["machine"]["backend"], kind, mode]
            for side in ("reference_s", "ours_s"):
                start = linear_from(batches, [p[side] for p in points])
                row.append("–" if start is None else f"{start:,}")
            for side in ("reference_s", "ours_s"):
                row.append(f"{points[-1][side] / points[-1]['floor_s']:.1f}")
            rows.append(row)
    largest = max(p["batch"] for r in runs for p in r["scaling"]["points"])
    header = [
        "Backend",
        "Targets",
        "Mode",
        "A linear from",
        "B linear from",
        f"A × floor at {largest:,}",
        f"B × floor at {largest:,}",
    ]
    return [
        ("heading", 3, f"Scaling with batch size ({title})"),
        ("image", f"scaling-{device}.png", f"RMSE update time against batch size, {title}"),
        ("text", text),
        ("table", header, rows),
    ]


def to_markdown(blocks: list[Block]) -> str:
    lines = [
        "# keras_extras benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks.report` from the JSON files in this "
        "folder; do not edit. -->",
        "",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "text":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "image":
            lines += [f"![{block[2]}]({block[1]})", ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def _rst_inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"``\1``", text)


def to_rst(blocks: list[Block]) -> str:
    """reStructuredText for inclusion in a section of docs/benchmarks.rst.

    That page underlines its title with `=` and its sections with `-`, so the
    headings here continue below them.
    """
    underline = {2: "~", 3: "^", 4: '"'}
    lines = [
        ".. Generated by ``python -m benchmarks.report`` from the JSON files in",
        "   benchmarks/results/; do not edit.",
        "",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            lines += [block[2], underline[block[1]] * len(block[2]), ""]
        elif kind == "text":
            lines += [_rst_inline(block[1]), ""]
        elif kind == "list":
            lines += [f"- {_rst_inline(item)}" for item in block[1]] + [""]
        elif kind == "image":
            # The including page shows the chart: an image path here would be
            # resolved against that page, not this file.
            continue
        elif kind == "table":
            header, rows = block[1], block[2]
            lines += [".. list-table::", "   :header-rows: 1", ""]
            for row in [header, *rows]:
                lines.append(f"   * - {_rst_inline(row[0])}")
                lines += [f"     - {_rst_inline(cell)}" for cell in row[1:]]
            lines.append("")
    return "\n".join(lines)


def chart(runs: list[dict[str, Any]], path: Path) -> None:
    """A bar per comparison and backend: the median ratio, whiskers to the min and max."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "The benchmark chart needs matplotlib: pip install 'keras-extras[plot]'."
        ) from error

    panels = []
    for device, device_title in DEVICES.items():
        # A run of the scaling stage alone has no ratios to draw.
        device_runs = [r for r in runs if r["machine"]["device"] == device and r["results"]]
        if device_runs:
            panels.append((device_title, device_runs))
    rows = max(
        (len({rec["id"] for r in rs for rec in r["results"]}) for _, rs in panels), default=0
    )
    figure = Figure(figsize=(10, 1.5 + 0.45 * max(rows, 2) * max(len(panels), 1)))
    FigureCanvasAgg(figure)
    if not panels:
        axes = figure.subplots()
        axes.axis("off")
        axes.text(0.5, 0.5, "No measurements yet: run `make bench`.", ha="center", va="center")
    else:
        axes_list = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
        for axes, (device_title, device_runs) in zip(axes_list, panels, strict=True):
            _chart_panel(axes, device_title, device_runs)
    figure.tight_layout()
    _write_png(figure, path)


def _chart_panel(axes: Any, device_title: str, device_runs: list[dict[str, Any]]) -> None:
    titles: dict[str, str] = {}
    targets: dict[str, float | None] = {}
    for run in device_runs:
        for rec in run["results"]:
            titles.setdefault(rec["id"], rec["title"])
            targets.setdefault(rec["id"], rec["target"])
    ids = list(titles)
    height = 0.8 / len(device_runs)
    extremes = [1.0]
    for k, run in enumerate(device_runs):
        backend = run["machine"]["backend"]
        ys, medians, low, high, label_at = [], [], [], [], []
        for rec in run["results"]:
            if rec["status"] != "ok":
                continue
            median = rec["ratio_median"]
            ys.append(ids.index(rec["id"]) - 0.4 + height * (k + 0.5))
            medians.append(median)
            low.append(median - min(rec["ratios"]))
            high.append(max(rec["ratios"]) - median)
            label_at.append(max(rec["ratios"]) if median >= 1 else min(rec["ratios"]))
            extremes += [min(rec["ratios"]), max(rec["ratios"])]
        # Bars grow from 1.0, left when ours is faster, right when it is slower.
        axes.barh(
            ys,
            [m - 1 for m in medians],
            left=1,
            height=height * 0.9,
            xerr=[low, high],
            label=backend,
            color=COLORS.get(backend),
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#444444"},
        )
        for y, m, x in zip(ys, medians, label_at, strict=True):
            axes.annotate(
                f"{m:.2f}",
                (x, y),
                xytext=(4 if m >= 1 else -4, 0),
                textcoords="offset points",
                va="center",
                ha="left" if m >= 1 else "right",
                fontsize=6,
            )
    for i, case_id in enumerate(ids):
        if targets[case_id] is not None:
            axes.plot([targets[case_id]] * 2, [i - 0.45, i + 0.45], color="black", lw=1.5)
            extremes.append(targets[case_id])
    axes.axvline(1.0, color="gray", lw=0.8)
    # Ratios multiply, so a log axis shows 2x slower and 2x faster alike.
    axes.set_xscale("log")
    lo, hi = min(extremes) / 1.2, max(extremes) * 1.2
    axes.set_xlim(lo, hi)
    steps = (0.8, 0.9, 1, 1.1, 1.25, 1.5, 2) if hi / lo < 3 else (0.1, 0.25, 0.5, 1, 2, 4, 10)
    ticks = [t for t in steps if lo <= t <= hi]
    axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axes.minorticks_off()
    axes.set_yticks(range(len(ids)), [titles[i] for i in ids], fontsize=8)
    axes.set_ylim(len(ids) - 0.5, -0.5)
    axes.set_xlabel(
        "time(keras_extras) / time(Keras built-in): median of pairs, "
        "whiskers min to max; black tick: target"
    )
    names = sorted({r["machine"]["device_name"] for r in device_runs})
    axes.set_title(f"{device_title}: {'; '.join(names)}", fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def scaling_chart(runs: list[dict[str, Any]], path: Path) -> None:
    """Time per update against batch size: one column per run, dense above sparse."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(4.2 * len(runs), 6.0) + 0.8, 7.5))
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, len(runs), squeeze=False, sharex=True)
    styles = {
        ("reference_s", "eager"): ("built-in, eager", "#1f77b4", "--", "o"),
        ("ours_s", "eager"): ("ours, eager", "#d62728", "--", "o"),
        ("reference_s", "compiled"): ("built-in, compiled", "#1f77b4", "-", "s"),
        ("ours_s", "compiled"): ("ours, compiled", "#d62728", "-", "s"),
    }
    for column, run in enumerate(runs):
        curves = _scaling_curves(run)
        bandwidth = run["scaling"]["copy"]["bandwidth_Bps"]
        for row, kind in enumerate(("dense", "sparse")):
            axes = grid[row, column]
            for (side, mode), (label, color, line, marker) in styles.items():
                points = curves.get((kind, mode), [])
                axes.plot(
                    [p["batch"] for p in points],
                    [p[side] * 1e6 for p in points],
                    line,
                    color=color,
                    marker=marker,
                    markersize=3,
                    label=label,
                )
            points = curves.get((kind, "eager")) or curves.get((kind, "compiled"), [])
            axes.plot(
                [p["batch"] for p in points],
                [p["floor_s"] * 1e6 for p in points],
                ":",
                color="black",
                label=f"memory floor ({bandwidth / 1e9:,.0f} GB/s copy)",
            )
            axes.set_xscale("log", base=2)
            axes.set_yscale("log")
            axes.grid(True, which="major", lw=0.3)
            m = run["machine"]
            targets = "float targets" if kind == "dense" else "int labels"
            axes.set_title(f"{m['backend']}, {kind} ({targets})", fontsize=9)
            if column == 0:
                axes.set_ylabel("µs per update")
            if row == 1:
                axes.set_xlabel("batch size (rows of 10 classes)")
            axes.legend(fontsize=6, loc="upper left")
    names = sorted({r["machine"]["device_name"] for r in runs})
    figure.suptitle(f"RMSE update time against batch size: {'; '.join(names)}", fontsize=10)
    figure.tight_layout()
    _write_png(figure, path)


def _write_png(figure: Any, path: Path) -> None:
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    atomic_write(path, png.getvalue())


def write_report(directory: Path) -> list[Path]:
    """Writes README.md, table.rst and ratios.png from the JSON in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    runs = load(directory)
    blocks = document(runs)
    outputs = [directory / "README.md", directory / "table.rst", directory / "ratios.png"]
    atomic_write(outputs[0], to_markdown(blocks))
    atomic_write(outputs[1], to_rst(blocks))
    chart(runs, outputs[2])
    for device in DEVICES:
        scaled = [r for r in runs if r["machine"]["device"] == device and "scaling" in r]
        if scaled:
            outputs.append(directory / f"scaling-{device}.png")
            scaling_chart(scaled, outputs[-1])
    return outputs


def summary(runs: list[dict[str, Any]]) -> str:
    """A short plain-text table of every run's ratios and scaling extremes."""
    lines = []
    for run in runs:
        m = run["machine"]
        state = "complete" if run.get("complete") else "INTERRUPTED"
        lines.append(f"{m['device']}-{m['backend']} on {m['device_name']} ({state})")
        for rec in run["results"]:
            lines.append(f"  {rec['title']:<48} {_ratio_cell(rec)}")
        scaling = run.get("scaling")
        if scaling:
            bandwidth = scaling["copy"]["bandwidth_Bps"] / 1e9
            lines.append(f"  scaling: copy {bandwidth:,.1f} GB/s; us per update, A / B / floor:")
            for (kind, mode), points in _scaling_curves(run).items():
                cells = [
                    f"{p['batch']}: {p['reference_s'] * 1e6:.3g}/{p['ours_s'] * 1e6:.3g}"
                    f"/{p['floor_s'] * 1e6:.3g}"
                    for p in (points[0], points[-1])
                ]
                lines.append(f"    {kind:<6} {mode:<8} " + "   ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"folder of result JSON (default {RESULTS})"
    )
    parser.add_argument(
        "--summary", action="store_true", help="print the ratios instead of writing files"
    )
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(load(args.results)))
        return 0
    for path in write_report(args.results):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

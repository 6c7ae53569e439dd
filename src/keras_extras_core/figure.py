"""The figure of `keras_extras.TrainingPlotter`, drawn in its drawing process.

`TrainingFigure` draws the `batches` and `epochs` tables of a `LossHistory` on an Agg
canvas and encodes it as a file; `keras_extras_core.plot_process` runs it in a child
process. It uses only matplotlib's object-oriented API (`Figure` on an Agg canvas),
never pyplot, so the user's matplotlib state is never touched.

The epoch panels' x axis counts the rows of the epoch table, 1-based: the epochs that
the history recorded, continuing across `fit` calls, whatever Keras's own `epoch`
index was (it restarts at 0 in a `fit` without `initial_epoch`).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_extras_core.history import INDEX_COLUMNS

# The resolution of every raster file, and what a PNG says it is.
DPI = 100


def finite(values: Any) -> np.ndarray:
    """`values` as float64, NaN for every non-finite value: a gap in a line plot."""
    values = np.array(values, dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average, debiased as in TensorBoard; NaN stays a gap.

    `s_i = weight * s_(i-1) + (1 - weight) * v_i` over the finite values, from
    `s = 0`, divided by `1 - weight ** n` after `n` of them.
    """
    if weight == 0.0:
        return values.copy()
    smoothed = np.full(len(values), np.nan)
    last, count = 0.0, 0
    for i, value in enumerate(values.tolist()):
        if math.isnan(value):
            continue
        last = weight * last + (1.0 - weight) * value
        count += 1
        smoothed[i] = last / (1.0 - weight**count)
    return smoothed


def epoch_panels(epochs: dict[str, Any]) -> list[str]:
    """One panel per metric of the epoch table, `val_x` drawn with `x`; loss first."""
    names: list[str] = []
    for name in epochs:
        if name in INDEX_COLUMNS:
            continue
        base = name[4:] if name.startswith("val_") and name[4:] in epochs else name
        if base not in names:
            names.append(base)
    return sorted(names, key=lambda n: n != "loss")


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) for `count` panels: two panels per row."""
    count = max(count, 1)
    columns = min(2, count)
    return -(-count // columns), columns


def best_index(values: np.ndarray, mode: str | None) -> int | None:
    """Index of the best finite value (`mode` "min" or "max"), or None."""
    if mode not in ("min", "max") or not np.isfinite(values).any():
        return None
    return int(np.nanargmin(values) if mode == "min" else np.nanargmax(values))


def _plain_log_formatter() -> Any:
    """A `LogFormatter` that labels the ticks it picks as "0.28", not "2.8e-01"."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        # LogFormatter picks which ticks to label (an empty label: none); plain
        # numbers read better on an axis that spans less than a decade. Only its
        # public `__call__` is overridden.
        def __call__(self, x: float, pos: int | None = None) -> str:
            if not super().__call__(x, pos):
                return ""
            return self.fix_minus(f"{abs(x):.3g}")

    return PlainLogFormatter(labelOnlyBase=False)


class TrainingFigure:
    """A figure whose axes and lines are built once and updated in place.

    Rebuilding the axes costs as much as drawing them, so they are rebuilt only
    when the panels change. Each line has a `gid` (`"loss per batch/batch"`,
    `"<metric>/train"`, `"<metric>/validation"`, `"<metric>/best"`), which an SVG
    file keeps as the `id` of its group.
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(dpi=DPI)
        self._canvas = FigureCanvasAgg(self.figure)
        self._key: Any = None
        self._panels: list[dict[str, Any]] = []

    def draw(
        self,
        data: dict[str, dict[str, Any]],
        smoothing: float = 0.0,
        yscale: str = "linear",
        modes: dict[str, str] | None = None,
        figsize: Sequence[float] | None = None,
    ) -> None:
        """Draws `data` (the `batches` and `epochs` tables) on the Agg canvas."""
        batches, epochs = data["batches"], data["epochs"]
        curves = [
            (name, tuple(k for k in (name, f"val_{name}") if k in epochs))
            for name in epoch_panels(epochs)
        ]
        batch_panel = "loss" in batches
        rows, columns = grid_shape(batch_panel + len(curves))
        # 5 x 3.2 inches per panel by default.
        size = tuple(figsize or (5.0 * columns, 3.2 * rows))
        key = (batch_panel, tuple(curves), smoothing > 0, size)
        if key != self._key:
            self._build(batch_panel, curves, smoothing, size, (rows, columns))
            self._key = key
        modes = modes or {}
        count = len(epochs["epoch"])
        x_epochs = np.arange(1.0, count + 1.0)
        for panel in self._panels:
            ax = panel["axes"]
            if panel["name"] is None:
                steps, loss = finite(batches["step"]), finite(batches["loss"])
                panel["lines"][0].set_data(steps, loss)
                if smoothing:
                    panel["lines"][1].set_data(steps, smooth(loss, smoothing))
                shown = [loss]
            else:
                shown = [finite(epochs[k]) for k in panel["keys"]]
                for line, values in zip(panel["lines"], shown, strict=True):
                    line.set_data(x_epochs, values)
                self._mark_best(panel, x_epochs, shown[-1], modes.get(panel["name"]))
            values = np.concatenate(shown)
            # A log axis needs a positive value to scale to; else it stays linear.
            positive = (values[np.isfinite(values)] > 0).any()
            scale = "log" if yscale == "log" and positive else "linear"
            if ax.get_yscale() != scale:
                ax.set_yscale(scale)
                if scale == "log":
                    ax.yaxis.set_major_formatter(_plain_log_formatter())
                    ax.yaxis.set_minor_formatter(_plain_log_formatter())
            ax.relim(visible_only=True)
            if panel["name"] is None:
                ax.autoscale_view()
            else:
                # Whole epochs, each half an epoch clear of the frame: a single epoch
                # gets one tick, 1, not a fractional range around it.
                ax.set_xlim(0.5, max(count, 1) + 0.5)
                ax.autoscale_view(scalex=False)
            self._update_legend(panel)
        self.figure.canvas.draw()

    @staticmethod
    def _update_legend(panel: dict[str, Any]) -> None:
        """Gives the panel's legend the current labels; rebuilt only when its entries change.

        A new legend costs as much as drawing one, and only the best-epoch label
        changes from one epoch to the next.
        """
        ax = panel["axes"]
        handles = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        legend = ax.get_legend()
        if legend is None or panel.get("legend_handles") != handles:
            ax.legend(handles=handles, fontsize="small", loc="best")
            panel["legend_handles"] = handles
            return
        for text, line in zip(legend.get_texts(), handles, strict=True):
            text.set_text(line.get_label())

    def _build(
        self,
        batch_panel: bool,
        curves: list,
        smoothing: float,
        figsize: tuple,
        grid: tuple[int, int],
    ) -> None:
        from matplotlib.ticker import MaxNLocator
        from matplotlib.transforms import ScaledTranslation

        figure = self.figure
        figure.clear()
        figure.set_size_inches(figsize)
        rows, columns = grid
        axes = list(figure.subplots(rows, columns, squeeze=False).flat)
        for unused in axes[batch_panel + len(curves) :]:
            unused.set_visible(False)
        self._panels = []
        if batch_panel:
            ax = axes.pop(0)
            lines = [
                ax.plot(
                    [],
                    [],
                    color="C0",
                    linewidth=0.8,
                    alpha=0.35 if smoothing else 1.0,
                    label="batch",
                    gid="loss per batch/batch",
                )[0]
            ]
            if smoothing:
                lines.append(
                    ax.plot(
                        [],
                        [],
                        color="C0",
                        linewidth=1.5,
                        label=f"smoothed ({smoothing:g})",
                        gid="loss per batch/smoothed",
                    )[0]
                )
            ax.set_title("loss per batch", y=1.0)
            ax.set_xlabel("step")
            self._panels.append({"name": None, "axes": ax, "lines": lines})
        for (name, keys), ax in zip(curves, axes, strict=False):
            kinds = ["validation" if k == f"val_{name}" else "train" for k in keys]
            lines = [
                ax.plot(
                    [],
                    [],
                    "o-",
                    color="C1" if kind == "validation" else "C0",
                    markersize=3,
                    label=kind,
                    gid=f"{name}/{kind}",
                )[0]
                for kind in kinds
            ]
            # Behind the curves (zorder 2), so that the point it marks shows inside it.
            (best,) = ax.plot(
                [], [], "*", color="C3", markersize=12, zorder=1.5, gid=f"{name}/best"
            )
            rule = ax.axvline(1.0, color="C3", linestyle=":", linewidth=1, zorder=1)
            ax.set_title(name, y=1.0)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            self._panels.append(
                {"name": name, "axes": ax, "lines": lines, "keys": keys, "best": best, "rule": rule}
            )
        # 21 points below the axes, where matplotlib puts an x label under one row of
        # tick labels; a fixed place spares measuring the tick labels at every drawing,
        # as `y=1.0` in `set_title` does for the titles.
        below = ScaledTranslation(0, -21 / 72, figure.dpi_scale_trans)
        for ax in figure.axes:
            ax.locator_params(axis="y", nbins=5)
            ax.xaxis.set_label_coords(0.5, 0.0, transform=ax.transAxes + below)
        # Fixed margins in inches: `tight_layout` would cost a second drawing.
        width, height = figsize
        gap_w, gap_h = 0.75, 0.8
        axes_width = (width - 0.85 - (columns - 1) * gap_w) / columns
        axes_height = (height - 0.9 - (rows - 1) * gap_h) / rows
        figure.subplots_adjust(
            left=0.7 / width,
            right=1 - 0.15 / width,
            bottom=0.5 / height,
            top=1 - 0.4 / height,
            wspace=gap_w / max(axes_width, 0.1),
            hspace=gap_h / max(axes_height, 0.1),
        )

    @staticmethod
    def _mark_best(panel: dict, x: np.ndarray, values: np.ndarray, mode: str | None) -> None:
        index = best_index(values, mode)
        best, rule = panel["best"], panel["rule"]
        best.set_visible(index is not None)
        rule.set_visible(index is not None)
        if index is None:
            best.set_label("_best")
            return
        which = "validation" if panel["keys"][-1] == f"val_{panel['name']}" else "train"
        best.set_data([x[index]], [values[index]])
        best.set_label(f"best {which}: {values[index]:.4g} (epoch {int(x[index])})")
        rule.set_xdata([x[index], x[index]])

    def encode(self, fmt: str) -> bytes:
        """The drawn figure as a file of format `fmt` (png, svg, pdf, ...)."""
        if fmt == "png":
            # The Agg canvas already holds the pixels: encode them, do not redraw.
            return png_bytes(np.asarray(self._canvas.buffer_rgba()), self.figure.dpi)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format=fmt, dpi=self.figure.dpi)
        return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(rgba: np.ndarray, dpi: float = DPI) -> bytes:
    """An 8-bit RGBA PNG of `rgba`, an array of shape (height, width, 4) and dtype uint8.

    Every row unfiltered, then zlib at level 1: a plot is mostly runs of one
    colour, which zlib packs as well without the per-row filter search of a
    general encoder, in about half the time (6 against 15 ms for 1000 x 640).
    The file states its resolution, `dpi`, in a pHYs chunk, as matplotlib's does.
    """
    height, width, _ = rgba.shape
    rows = np.zeros((height, 1 + 4 * width), np.uint8)  # a leading 0 per row: no filter
    rows[:, 1:] = rgba.reshape(height, 4 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    per_metre = round(dpi / 0.0254)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),  # 1: metres
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        ]
    )

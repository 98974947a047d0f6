"""Every figure the pipeline draws (matplotlib, no screen), saved as PNG and SVG side by side.

    fig = attention_figure(record, position=0, lo=0, hi=64, heads=None, color_scale="sqrt")
    save_figure(fig, "plots/attention/sft", "gsm8k_first")   # -> png/gsm8k_first.png, svg/...svg

Chinese labels need a CJK font: Noto Sans CJK SC from the pinned `mplfonts` package is registered as a
fallback behind DejaVu Sans, so each glyph comes from the first font that has it. Sizes grow with
the number of tokens (a fixed size per cell), so 64 labels per axis never overlap. Text in SVGs is
drawn as paths: they look the same on a machine without the font.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors, font_manager  # noqa: E402

from mathpipe.evaluation.attention import AttentionRecord  # noqa: E402

log = logging.getLogger(__name__)

CELL_INCHES = 0.16  # one token on an attention axis; 7-pt labels fit in it
LABEL_POINTS = 7
CJK_FONT = "Noto Sans CJK SC"
MISSING_CJK_WARNED = False


def setup() -> None:
    """Font fallback and reproducible output (no dates in SVGs, fixed SVG ids)."""
    global MISSING_CJK_WARNED
    families = ["DejaVu Sans"]
    spec = importlib.util.find_spec("mplfonts")  # only its font file is used: no need to import it
    try:
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("mplfonts")
        font = Path(spec.submodule_search_locations[0]) / "fonts" / "NotoSansCJKsc-Regular.otf"
        font_manager.fontManager.addfont(str(font))
        families.append(CJK_FONT)
    except (FileNotFoundError, OSError):
        if not MISSING_CJK_WARNED:
            log.warning("no CJK font (install mplfonts): Chinese labels will show as boxes")
            MISSING_CJK_WARNED = True
    plt.rcParams.update({
        "font.family": families,
        "svg.fonttype": "path",
        "svg.hashsalt": "mathpipe",
        "axes.titlesize": 10,
        "figure.titlesize": 11,
    })


def save_figure(fig, plots_dir: str | Path, stem: str, dpi: int = 100) -> list[Path]:
    """Write <plots_dir>/png/<stem>.png and <plots_dir>/svg/<stem>.svg, then close the figure."""
    paths = []
    for fmt in ("png", "svg"):
        path = Path(plots_dir) / fmt / f"{stem}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


def _norm(color_scale: str, vmax: float, vmin_positive: float):
    vmax = max(vmax, 1e-6)
    if color_scale == "log":
        return colors.LogNorm(vmin=max(vmin_positive, vmax * 1e-4), vmax=vmax)
    if color_scale == "sqrt":
        return colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=vmax)
    return colors.Normalize(vmin=0.0, vmax=vmax)


def _shared_norm(squares: list, color_scale: str):
    """One colour scale for several panels: up to the largest weight among them."""
    vmax = max(float(s.max()) for s in squares)
    positive = [float(s[s > 0].min()) for s in squares if (s > 0).any()]
    return _norm(color_scale, vmax, min(positive, default=1e-6))


def _scale_words(color_scale: str) -> str:
    return {"linear": "linear scale", "sqrt": "square-root scale", "log": "log scale"}[color_scale]


def _window(matrix: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The [lo, hi) square with future positions (above the diagonal) masked: a causal model never sees them."""
    square = matrix[lo:hi, lo:hi].astype(float)
    rows, cols = np.indices(square.shape)
    return np.ma.masked_where(cols > rows, square)


def _draw(ax, square, labels, lo, prompt_tokens, norm, left=True, bottom=True):
    cmap = plt.get_cmap("viridis").with_extremes(bad="#f0f0f0")  # the masked future positions
    image = ax.imshow(square, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal")
    n = square.shape[0]
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels if bottom else [], rotation=90, fontsize=LABEL_POINTS)
    ax.set_yticks(ticks, labels if left else [], fontsize=LABEL_POINTS)
    ax.tick_params(length=1.5, pad=1)
    if bottom:
        ax.set_xlabel("key: the token attended to")
    if left:
        ax.set_ylabel("query: the token attending")
    boundary = prompt_tokens - lo - 0.5
    if 0 < boundary < n:  # where the answer starts
        for line in (ax.axhline, ax.axvline):
            line(boundary, color="white", linewidth=0.9, linestyle="--")
    return image


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _window_words(record: AttentionRecord, lo: int, hi: int) -> str:
    total = len(record.labels)
    answer = total - record.prompt_tokens
    where = "dashed line: the answer starts" if lo < record.prompt_tokens < hi else (
        "answer tokens only" if lo >= record.prompt_tokens else "prompt tokens only")
    return f"tokens {lo}-{hi - 1} of {total} (prompt {record.prompt_tokens} + answer {answer}); {where}"


def _label_inches(labels: list[str]) -> float:
    """Rough printed width of the longest label (CJK glyphs are about twice as wide as Latin ones)."""
    return max((sum(0.105 if ord(c) >= 0x2E80 else 0.058 for c in label) for label in labels), default=0.0)


def _heatmap_grid(nrows: int, ncols: int, side: float, label_width: float, title_lines: int,
                  panel_title_lines: int):
    """A figure of nrows x ncols square heat maps of `side` inches with a colour bar on the right.

    The margins are computed from the label width instead of by matplotlib's layout engines, which
    measure every tick label again on each save and took most of the drawing time.
    """
    axis_title, gap, bar = 0.35, 0.25, 1.2
    left = label_width + axis_title + 0.15
    bottom = label_width + axis_title + 0.15
    panel_top = 0.2 * panel_title_lines + 0.1
    cell_w, cell_h = left + side + gap, bottom + side + panel_top
    top = 0.22 * title_lines + 0.25
    width, height = ncols * cell_w + bar, nrows * cell_h + top
    fig = plt.figure(figsize=(width, height))
    axes = []
    for r in range(nrows):
        for c in range(ncols):
            x0 = c * cell_w + left
            y0 = height - top - (r + 1) * cell_h + bottom
            axes.append(fig.add_axes((x0 / width, y0 / height, side / width, side / height)))
    colorbar_height = min(side * nrows, 6.0)
    cax = fig.add_axes(((ncols * cell_w + 0.1) / width, (height - top - nrows * cell_h / 2 - colorbar_height / 2
                        + bottom / 2) / height, 0.2 / width, colorbar_height / height))
    return fig, axes, cax, 1 - 0.12 / height


def attention_figure(record: AttentionRecord, position: int, lo: int, hi: int, heads: list[int] | None,
                     color_scale: str):
    """One layer of one model: the mean over heads, or one panel per chosen head."""
    layer = record.layers[position]
    weights = record.weights[position]  # [heads, T, T]
    panels = [(f"mean of {record.num_heads} heads", weights.mean(axis=0))] if heads is None else [
        (f"head {h}", weights[h]) for h in heads]
    squares = [(title, _window(m, lo, hi)) for title, m in panels]
    norm = _shared_norm([s for _, s in squares], color_scale)
    labels = record.labels[lo:hi]

    ncols = min(4, len(squares))
    nrows = -(-len(squares) // ncols)
    fig, axes, cax, title_y = _heatmap_grid(nrows, ncols, (hi - lo) * CELL_INCHES, _label_inches(labels),
                                            title_lines=3, panel_title_lines=0 if heads is None else 1)
    for i, ax in enumerate(axes):
        if i >= len(squares):
            ax.set_axis_off()
            continue
        title, square = squares[i]
        image = _draw(ax, square, labels, lo, record.prompt_tokens, norm,
                      left=i % ncols == 0, bottom=i + ncols >= len(squares))
        if heads is not None:
            ax.set_title(title)
    what = panels[0][0] if heads is None else f"{len(heads)} of {record.num_heads} heads"
    fig.suptitle(f"{record.model}: attention in layer {layer} of {record.num_layers} (0-based), {what}\n"
                 f"prompt '{record.prompt_name}': {_short(record.question)}\n{_window_words(record, lo, hi)}",
                 y=title_y, va="top")
    fig.colorbar(image, cax=cax, label=f"attention weight ({_scale_words(color_scale)})")
    return fig


def comparison_figure(records: list[AttentionRecord], position: int, bounds: list[tuple[int, int]],
                      color_scale: str):
    """The same layer of several models on the same prompt, side by side, on one colour scale.

    Each model answers the prompt in its own words, so each panel has its own token labels.
    """
    squares = [_window(r.weights[position].mean(axis=0), lo, hi) for r, (lo, hi) in zip(records, bounds)]
    norm = _shared_norm(squares, color_scale)
    side = max(hi - lo for lo, hi in bounds) * CELL_INCHES
    label_width = max(_label_inches(r.labels[lo:hi]) for r, (lo, hi) in zip(records, bounds))
    fig, axes, cax, title_y = _heatmap_grid(1, len(records), side, label_width, title_lines=1,
                                            panel_title_lines=2)
    for ax, record, square, (lo, hi) in zip(axes, records, squares, bounds):
        image = _draw(ax, square, record.labels[lo:hi], lo, record.prompt_tokens, norm)
        ax.set_title(f"{record.model}: layer {record.layers[position]} of {record.num_layers}, "
                     f"mean of {record.num_heads} heads\n{_window_words(record, lo, hi)}", fontsize=8)
    first = records[0]
    fig.suptitle(f"Attention by model, layer '{first.layer_specs[position]}' "
                 f"(index {first.layers[position]}), prompt '{first.prompt_name}': {_short(first.question)}",
                 y=title_y, va="top")
    fig.colorbar(image, cax=cax, label=f"attention weight ({_scale_words(color_scale)})")
    return fig


def accuracy_chart(rows: list[dict]):
    """Grouped bars: accuracy by benchmark (groups) and model (bars), with 95% intervals."""
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    by_key = {(r["model"], r["benchmark"]): r for r in rows}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(benchmarks) * len(models) * 0.8 + 1.5, 4.2),
                           layout="constrained")
    cmap = plt.get_cmap("tab10")
    for m, model in enumerate(models):
        xs, heights, low, high = [], [], [], []
        for b, bench in enumerate(benchmarks):
            row = by_key.get((model, bench))
            if row is None:
                continue
            xs.append(b + (m - (len(models) - 1) / 2) * width)
            heights.append(row["accuracy"] * 100)
            low.append((row["accuracy"] - row["ci95_low"]) * 100)
            high.append((row["ci95_high"] - row["accuracy"]) * 100)
        bars = ax.bar(xs, heights, width * 0.92, yerr=[low, high], capsize=3, label=model, color=cmap(m),
                      error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8, label_type="center", color="white")
    ns = sorted({r["n"] for r in rows})
    ax.set_xticks(range(len(benchmarks)), benchmarks)
    ax.set_ylabel("exact-answer accuracy (%)")
    ax.set_ylim(0, min(100, max(r["ci95_high"] for r in rows) * 100 + 10))
    ax.set_title(f"Accuracy by model and benchmark (greedy; bars: 95% Wilson interval; "
                 f"n = {', '.join(map(str, ns))} questions)")
    ax.legend(title="model", frameon=False, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def curve_panels(curves: dict[str, dict[str, list[tuple[float, float]]]], xlabel: str, ylabel: str, title: str):
    """One panel per stage, one line per series of (x, y) points."""
    fig, axes = plt.subplots(1, len(curves), squeeze=False, figsize=(4.4 * len(curves), 3.4),
                             layout="constrained")
    for ax, (stage, series) in zip(axes.flat, curves.items()):
        for name, points in series.items():
            xs, ys = zip(*points) if points else ((), ())
            ax.plot(xs, ys, marker="o" if len(points) < 8 else None, markersize=3, label=name)
        ax.set_title(stage)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.suptitle(title)
    return fig


def training_curves(curves: dict[str, dict[str, list[tuple[float, float]]]]):
    """Each training stage's loss series (train, eval) against the epoch."""
    return curve_panels(curves, "epoch", "loss", "Training loss (DVCLive): train, and eval on the held-out split")


def reward_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], share_series: str):
    """Each RL stage's mean reward per step (the total, and each reward function's part) and, on a
    panel beside it, `share_series`: the share of its groups whose completions all got one reward."""
    fig, axes = plt.subplots(1, 2 * len(curves), squeeze=False, figsize=(4.4 * 2 * len(curves), 3.4),
                             layout="constrained")
    panels = iter(axes.flat)
    for stage, series in curves.items():
        rewards, shares = next(panels), next(panels)
        for name, points in series.items():
            ax = shares if name == share_series else rewards
            xs, ys = zip(*points) if points else ((), ())
            ax.plot(xs, ys, marker="o" if len(points) < 8 else None, markersize=3, label=name)
        rewards.set(title=f"{stage}: reward", xlabel="step", ylabel="mean reward")
        shares.set(title=f"{stage}: groups with one reward for all completions", xlabel="step",
                   ylabel="share of the step's groups", ylim=(-0.02, 1.02))
        for ax in (rewards, shares):
            ax.grid(alpha=0.3)
        rewards.legend(frameon=False)
    fig.suptitle("RL per step (DVCLive): mean reward, and groups with no advantage")
    return fig

"""Pictures of what whitening does, drawn with matplotlib's Agg backend (no display needed).

Each `*_figure` function takes results or a fitted transform and returns a Figure; `save` writes
it as PNG and SVG. Nothing here prints; the `baihua plot` commands parse flags and call these.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from baihua.core.errors import UsageError
from baihua.core.files import write_atomic
from baihua.eval.anisotropy import PAIR_KINDS, PairCosines
from baihua.eval.transforms import TransformSpec, parse_transform

FORMATS = (".png", ".svg")
PAIR_COLOURS = {"random": "#8c8c8c", "paraphrase": "#2a9d5c", "non-paraphrase": "#d1495b"}
FAMILY_COLOURS = ["#2d5bd7", "#e07b24", "#7a4fc9", "#1d9a9a", "#c2417a", "#6b8e23"]


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, out: Path) -> list[Path]:
    """`out` with each suffix of FORMATS (a suffix given in `out` is replaced), written
    atomically; SVGs carry no date and fixed ids, so the same data gives the same file."""
    stem = out.with_suffix("") if out.suffix.lower() in FORMATS else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context({"svg.hashsalt": "baihua", "svg.fonttype": "none"}):
        for suffix in FORMATS:
            buffer = io.BytesIO()
            metadata = {"Date": None} if suffix == ".svg" else {"Software": None}
            figure.savefig(buffer, format=suffix[1:], dpi=150, metadata=metadata)
            path = stem.parent / (stem.name + suffix)
            write_atomic(path, buffer.getvalue())
            written.append(path)
    return written


def read_records(path: Path, required: Sequence[str], producer: str) -> list[dict[str, Any]]:
    """The records of a JSON result file, each checked for the fields a figure needs."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such result file")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not JSON ({err}); write one with `{producer}`") from err
    if not isinstance(records, list) or not records:
        raise UsageError(f"{path}: expected a list of results as `{producer}` writes")
    for i, record in enumerate(records):
        missing = [f for f in required if not isinstance(record, dict) or f not in record]
        if missing:
            raise UsageError(
                f"{path}: result {i} has no {', '.join(missing)}; is it from `{producer}`?"
            )
    return records


# ---------------------------------------------------------------------------------- anisotropy


def anisotropy_figure(results: Sequence[PairCosines], title: str) -> Figure:
    """One histogram panel per transform: cosines of random, paraphrase and non-paraphrase
    pairs, with their means and the paraphrase/non-paraphrase separation (ROC AUC)."""
    figure = _figure(4.2 * len(results), 3.6)
    axes = figure.subplots(1, len(results), sharey=False, squeeze=False)[0]
    bins = np.linspace(-1, 1, 81)
    for ax, result in zip(axes, results, strict=True):
        for kind in PAIR_KINDS:
            values = result.cosines[kind]
            mean = round(float(values.mean()), 2) + 0.0  # + 0.0: no "-0.00"
            ax.hist(
                values,
                bins=bins,
                density=True,
                histtype="stepfilled",
                alpha=0.35,
                color=PAIR_COLOURS[kind],
                edgecolor=PAIR_COLOURS[kind],
                label=f"{kind} (n={len(values)}, mean {mean:.2f})",
            )
            ax.axvline(values.mean(), color=PAIR_COLOURS[kind], linewidth=1)
        ax.set_title(f"{result.transform}: separation AUC {result.separation():.3f}", fontsize=10)
        ax.set_xlim(-1, 1)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7, loc="upper left", frameon=False)
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    figure.suptitle(title, fontsize=11)
    return figure


# ------------------------------------------------------------------------------ Spearman vs k


def _family(spec: TransformSpec) -> str | None:
    """The line a transform belongs to; None for rows drawn as reference marks."""
    if spec.method != "whitening":
        return None
    if spec.beta == spec.gamma == 1.0:
        return "whitening (β=γ=1)"
    if spec.beta == spec.gamma == 0.0:
        return "rotation (β=γ=0)"
    return f"β={spec.beta:g}, γ={spec.gamma:g}"


def k_sweep_figure(
    records: Sequence[dict[str, Any]], *, poolings: Sequence[str] | None = None, split: str = "test"
) -> Figure:
    """Spearman × 100 against the dimensions kept, one panel per task (and their average), one
    row per pooling; a line per transform family, raw vectors (`none`) dashed, flow a marker."""
    rows = [r for r in records if r["split"] == split]
    if not rows:
        raise UsageError(f"no results for split {split!r}")
    chosen = list(poolings) if poolings else list(dict.fromkeys(r["pooling"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    tasks = [*rows[0]["scores"], "avg"]
    specs = {r["transform"]: parse_transform_or_none(r["transform"]) for r in rows}
    ks = sorted({s.n_components for s in specs.values() if s and _family(s) and s.n_components})
    has_full = any(s and _family(s) and s.n_components is None for s in specs.values()) or (
        "flow" in specs
    )  # flow keeps every dimension
    positions = {k: i for i, k in enumerate(ks)}
    ticks = [str(k) for k in ks] + (["full"] if has_full else [])
    families = list(dict.fromkeys(f for s in specs.values() if s and (f := _family(s))))
    colours = dict(zip(families, FAMILY_COLOURS, strict=False))

    figure = _figure(2.6 * len(tasks), 2.6 * len(chosen) + 0.6)
    grid = figure.subplots(len(chosen), len(tasks), squeeze=False, sharex=True)
    for row, pooling in zip(grid, chosen, strict=True):
        results = [r for r in rows if r["pooling"] == pooling]
        if not results:
            raise UsageError(f"no results for pooling {pooling!r}")
        for ax, task in zip(row, tasks, strict=True):

            def score(record: dict[str, Any], task: str = task) -> float:
                return float(record["avg"] if task == "avg" else record["scores"][task])

            for family in families:
                points = sorted(
                    (len(ks) if s.n_components is None else positions[s.n_components], score(r))
                    for r in results
                    if (s := specs[r["transform"]]) and _family(s) == family
                )
                if points:
                    x, y = zip(*points, strict=True)
                    ax.plot(x, y, marker="o", markersize=3, color=colours[family], label=family)
            for r in results:
                if r["transform"] == "none":
                    ax.axhline(score(r), color="black", linestyle="--", linewidth=1, label="none")
                elif r["transform"] == "flow":
                    ax.plot(
                        [len(ks)], [score(r)], marker="*", markersize=9, color="#444", label="flow"
                    )
            ax.set_title(f"{task} · {pooling}", fontsize=9)
            ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("Spearman × 100")
    for ax in grid[-1]:
        ax.set_xlabel("dimensions kept (k)", fontsize=8)
    handles, labels = grid[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    figure.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=len(unique))
    figure.suptitle(f"{', '.join(models)}: STS Spearman against dimensions kept ({split})")
    return figure


def parse_transform_or_none(name: str) -> TransformSpec | None:
    """The grammar's spec, or None for rows outside it (an artifact)."""
    try:
        return parse_transform(name)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------ spectrum


def spectrum_figure(explained_variance: np.ndarray, k: int, title: str) -> Figure:
    """Each component's share of the variance (log scale) and the cumulative share, k marked."""
    ratio = explained_variance / explained_variance.sum()
    cumulative = np.cumsum(ratio)
    components = np.arange(1, len(ratio) + 1)
    figure = _figure(7, 3.8)
    ax = figure.subplots()
    ax.semilogy(components, ratio, color=FAMILY_COLOURS[0], label="explained variance ratio")
    ax.set_xlabel("component (by variance)")
    ax.set_ylabel("share of variance", color=FAMILY_COLOURS[0])
    ax.set_xlim(1, len(ratio))
    # Eigenvalues near zero (e.g. a direction LayerNorm fixes) would squash the scale.
    floor = ratio[0] * 1e-5
    off_scale = int((ratio < floor).sum())
    ax.set_ylim(bottom=max(floor, float(ratio.min())) / 2)
    right = ax.twinx()
    right.plot(components, cumulative, color=FAMILY_COLOURS[1], label="cumulative")
    right.set_ylim(0, 1.02)
    right.set_ylabel("cumulative share", color=FAMILY_COLOURS[1])
    ax.axvline(k, color="black", linestyle="--", linewidth=1)
    right.annotate(
        f"k = {k}: {cumulative[k - 1]:.1%} of the variance",
        xy=(k, cumulative[k - 1]),
        xytext=(8, 8),
        textcoords="offset points",
        fontsize=9,
    )
    half = int(np.searchsorted(cumulative, 0.5)) + 1
    subtitle = f"{len(ratio)} dims; half the variance in the first {half}"
    if off_scale:
        subtitle += f"; {off_scale} below 1e-5 of the largest, off the scale"
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.grid(alpha=0.3)
    return figure


# ----------------------------------------------------------------------------------- retrieval


def retrieval_figure(records: Sequence[dict[str, Any]], metric: str = "MRR@10") -> Figure:
    """Per dataset: `metric` against QPS and against index bytes, a point per transform and
    re-rank, coloured by transform family (none, whitening, rotation, …)."""
    missing = [i for i, r in enumerate(records) if metric not in r["metrics"]]
    if missing:
        known = ", ".join(records[missing[0]]["metrics"])
        raise UsageError(f"result {missing[0]} has no metric {metric!r}; it has {known}")
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    kinds = list(dict.fromkeys(_retrieval_kind(r["transform"]) for r in records))
    colours = dict(zip(kinds, FAMILY_COLOURS, strict=False))
    markers = {"none": "o", "geodesic": "^"}
    figure = _figure(10, 3.2 * len(datasets) + 0.6)
    grid = figure.subplots(len(datasets), 2, squeeze=False)
    for (left, right), dataset in zip(grid, datasets, strict=True):
        rows = [r for r in records if r["dataset"] == dataset]
        for r in rows:
            y = r["metrics"][metric]
            style = {
                "color": colours[_retrieval_kind(r["transform"])],
                "marker": markers.get(r["rerank"], "s"),
                "linestyle": "none",
            }
            for ax, x in ((left, r["qps"]), (right, (r["index_bytes"] + r["graph_bytes"]) / 1e6)):
                ax.plot([x], [y], **style)
                if r["rerank"] == "none":
                    ax.annotate(
                        r["transform"],
                        (x, y),
                        xytext=(3, 3),
                        textcoords="offset points",
                        fontsize=6,
                    )
        for ax in (left, right):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(_plain_number))
            ax.xaxis.set_minor_formatter(FuncFormatter(_plain_number_if_round))
        left.set_xlabel("queries per second (search only)", fontsize=8)
        right.set_xlabel("index + graph MB", fontsize=8)
        for ax in (left, right):
            ax.set_ylabel(metric, fontsize=8)
            ax.set_title(dataset, fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], color=colour, marker="o", linestyle="none", label=kind)
        for kind, colour in colours.items()
    ] + [
        Line2D(
            [],
            [],
            color="#777",
            marker=markers.get(rerank, "s"),
            linestyle="none",
            label=f"rerank {rerank}",
        )
        for rerank in dict.fromkeys(r["rerank"] for r in records)
    ]
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    figure.suptitle(f"{', '.join(models)}: retrieval {metric} against speed and size")
    return figure


def _plain_number(value: float, _position: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _plain_number_if_round(value: float, position: float) -> str:
    """Minor ticks of a log axis labelled only at 2 and 5 times a power of ten."""
    leading = value / 10 ** math.floor(math.log10(value))
    return _plain_number(value, position) if round(leading, 6) in (2.0, 5.0) else ""


def _retrieval_kind(name: str) -> str:
    spec = parse_transform_or_none(name)
    if spec is None or spec.method != "whitening":
        return name
    return _family(spec) or name

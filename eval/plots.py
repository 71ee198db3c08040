"""The report's PNG plots, drawn from the results table (`eval.report.rows`).

- accuracy_vs_power.png: top-1 against normalised power, one curve per topology (retrained
  dashed) and value of any other swept axis (`variants`, e.g. backend: dotted past the first),
  one panel per architecture: the study's main picture.
- accuracy_vs_multiplier.png: top-1 per multiplier, multipliers ordered by PDK45 power.
- expert_load.png: share of routed rows per expert of every MoE layer, one bar per multiplier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 130


def _short(name: str) -> str:
    return name.removeprefix("mul8s_")


def _ok(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in table if r.get("status") == "ok"]


Series = tuple  # (topology, retrained, *values of the variant axes)


def _series(rows: list[dict[str, Any]], variants: tuple[str, ...]) -> dict[Series, list[dict[str, Any]]]:
    """Rows by curve: one per topology, retrained and value of each variant axis."""
    out: dict[Series, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["topology"], r["retrained"], *(r[v] for v in variants)), []).append(r)
    return out


def _color(topology: str) -> str:
    """The topology's plot colour (its `models.topology.TopologySpec`)."""
    from models.topology import list_topologies, topology_spec
    return topology_spec(topology).color if topology in list_topologies() else "#9467bd"


def _marker(topology: str) -> str:
    from models.topology import list_topologies, topology_spec
    return topology_spec(topology).marker if topology in list_topologies() else "o"


def _label(series: Series, variants: tuple[str, ...]) -> str:
    """"hard MoE, retrained, compensate weights+bias": the topology, then each swept axis by name."""
    topology, retrained, *values = series
    name = "dense" if topology == "dense" else f"{topology} MoE"
    return ", ".join([name, *(["retrained"] if retrained else []), *(f"{a} {v}" for a, v in zip(variants, values))])


def _style(series: Series, firsts: tuple) -> dict[str, Any]:
    """Retrained dashed, hollow markers; a variant other than each axis' first value dotted."""
    retrained, variant = series[1], series[2:]
    linestyle = ":" if variant != firsts else "--" if retrained else "-"
    return {"linestyle": linestyle, "markerfacecolor": "white" if retrained else None}


def _firsts(rows: list[dict[str, Any]], variants: tuple[str, ...]) -> tuple:
    return tuple(rows[0][v] for v in variants) if rows else ()


def _axes(n: int, width: float, height: float):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def multiplier_order(rows: list[dict[str, Any]]) -> list[str]:
    """Multipliers by power, highest first (unknown power last)."""
    power = {r["multiplier"]: r.get("power_mW") for r in rows}
    return sorted(power, key=lambda m: (power[m] is None, -(power[m] or 0.0)))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (lower power, higher accuracy), by power."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


#: label offsets tried in turn (points): above, below, right, left, then further out
OFFSETS = [(0, 6, "center", "bottom"), (0, -6, "center", "top"), (6, 0, "left", "center"),
           (-6, 0, "right", "center"), (6, 6, "left", "bottom"), (-6, 6, "right", "bottom"),
           (6, -6, "left", "top"), (-6, -6, "right", "top"), (0, 15, "center", "bottom"),
           (0, -15, "center", "top"), (14, 0, "left", "center"), (-14, 0, "right", "center"),
           (10, 14, "left", "bottom"), (-10, 14, "right", "bottom"), (10, -14, "left", "top"),
           (-10, -14, "right", "top"), (0, 24, "center", "bottom"), (0, -24, "center", "top")]


def place_labels(ax, items: list[tuple[float, float, str, str]]) -> None:
    """Annotate (x, y, text, color) points so labels overlap neither each other nor markers:
    each label takes the first offset whose box is free, measured by the renderer."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    marks = [ax.transData.transform((x, y)) for x, y, _, _ in items]
    radius = 4 * fig.dpi / 72
    taken = [(px - radius, py - radius, px + radius, py + radius) for px, py in marks]

    def overlap(box) -> float:
        return sum(max(0.0, min(box[2], t[2]) - max(box[0], t[0])) * max(0.0, min(box[3], t[3]) - max(box[1], t[1]))
                   for t in taken)

    for x, y, text, color in items:
        best = None
        for dx, dy, ha, va in OFFSETS:
            far = max(abs(dx), abs(dy)) > 10  # a leader line says whose label it is
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va,
                                fontsize=6.5, color=color,
                                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5, "alpha": 0.7,
                                            "shrinkA": 0, "shrinkB": 3} if far else None)
            extent = label.get_window_extent(renderer)
            box = (extent.x0, extent.y0, extent.x1, extent.y1)
            cost = overlap(box)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        taken.append(best[2])


def accuracy_vs_power(table: list[dict[str, Any]], path: Path, title: str,
                      variants: tuple[str, ...] = ()) -> Path | None:
    rows = [r for r in _ok(table) if r.get("normalised_power") is not None]
    if not rows:
        return None
    firsts = _firsts(rows, variants)
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = _axes(len(archs), 6.8, 5.0)
    for ax, arch in zip(axes, archs):
        labels = []
        for series, points in _series([r for r in rows if r["arch"] == arch], variants).items():
            topo, retrained = series[:2]
            xy = [(p["normalised_power"], 100 * p["top1"]) for p in points]
            front = pareto_front(xy)
            style = _style(series, firsts)
            ax.plot(*zip(*front), color=_color(topo), linewidth=1.6, linestyle=style["linestyle"],
                    marker=_marker(topo), markersize=6, markerfacecolor=style["markerfacecolor"],
                    label=_label(series, variants))
            ax.scatter(*zip(*xy), marker=_marker(topo), s=34, zorder=3,
                       facecolors="white" if retrained else _color(topo), edgecolors=_color(topo))
            labels += [(x, y, _short(p["multiplier"]), _color(topo)) for (x, y), p in zip(xy, points)]
        ax.axvline(1.0, color="#999999", linewidth=0.8, linestyle=":")
        ax.set_title(arch, fontsize=11)
        ax.set_xlabel("normalised power (dense model, exact multiplier = 1)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        xs = [x for x, _, _, _ in labels]
        ax.set_xlim(min(xs) - 0.06 * (max(xs) - min(xs) + 0.1), max(xs) + 0.06 * (max(xs) - min(xs) + 0.1))
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.07 * (hi - lo))
        ax.legend(fontsize=8, loc="lower right", title="line: Pareto front", title_fontsize=7.5)
        place_labels(ax, labels)
    fig.suptitle(f"{title}: accuracy vs normalised power", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def accuracy_vs_multiplier(table: list[dict[str, Any]], path: Path, title: str,
                           variants: tuple[str, ...] = ()) -> Path | None:
    rows = _ok(table)
    if not rows:
        return None
    firsts = _firsts(rows, variants)
    order = multiplier_order(rows)
    power = {r["multiplier"]: r.get("power_mW") for r in rows}
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = _axes(len(archs), max(5.5, 0.75 * len(order) + 2.5), 4.6)
    for ax, arch in zip(axes, archs):
        for series, points in _series([r for r in rows if r["arch"] == arch], variants).items():
            topo = series[0]
            by = {p["multiplier"]: p for p in points}
            x = [i for i, m in enumerate(order) if m in by]
            y = [100 * by[order[i]]["top1"] for i in x]
            ax.plot(x, y, marker=_marker(topo), color=_color(topo), label=_label(series, variants),
                    linewidth=1.6, markersize=5.5, **_style(series, firsts))
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{_short(m)}\n{power[m]:.3f} mW" if power[m] is not None else _short(m)
                            for m in order], fontsize=7.5)
        ax.set_xlabel("multiplier (PDK45 power, highest first)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(arch, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{title}: accuracy per multiplier", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def expert_load(table: list[dict[str, Any]], path: Path, title: str, variants: tuple[str, ...] = ()) -> Path | None:
    panels: dict[tuple, list[dict[str, Any]]] = {}  # (arch, *series, layer) -> rows
    for r in _ok(table):
        for layer in (r.get("expert_load") or {}):
            panels.setdefault((r["arch"], r["topology"], r["retrained"], *(r[v] for v in variants), layer),
                              []).append(r)
    if not panels:
        return None
    n = len(panels)
    cols = min(n, 2)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(8.4 * cols, 3.9 * nrows), squeeze=False)
    for ax, ((arch, topo, retrained, *variant, layer), rows) in zip(axes.flat, panels.items()):
        order = multiplier_order(rows)
        by = {r["multiplier"]: r for r in rows}
        experts = len(by[order[0]]["expert_load"][layer]["share"])
        width = 0.8 / len(order)
        colors = plt.cm.viridis(np.linspace(0.05, 0.9, len(order)))
        for i, mult in enumerate(order):
            share = by[mult]["expert_load"][layer]["share"]
            power = by[mult].get("power_mW")
            ax.bar(np.arange(experts) - 0.4 + width * (i + 0.5), [100 * s for s in share], width,
                   color=colors[i], label=f"{_short(mult)} ({power:.3f} mW)" if power else _short(mult),
                   edgecolor="white", linewidth=0.3)
        ax.axhline(100 / experts, color="#cc3333", linestyle="--", linewidth=1, label="uniform")
        ax.set_xticks(range(experts))
        ax.set_xticklabels([f"expert {e}" for e in range(experts)])
        ax.set_ylabel("routed rows (%)")
        ax.set_ylim(0, 104)
        ax.set_title(f"{arch} {topo} MoE, layer {layer}{', retrained' if retrained else ''}"
                     + "".join(f", {v}" for v in variant), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="multiplier",
                  title_fontsize=7.5, frameon=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{title}: expert load", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def draw_all(table: list[dict[str, Any]], out: Path, title: str, variants: list[str] = ()) -> dict[str, Path]:
    """Draw every plot the table has data for; returns name -> PNG path. `variants`: the rows'
    columns of swept axes beyond topology and retrained (`eval.report.variants`)."""
    out.mkdir(parents=True, exist_ok=True)
    variants = tuple(variants)
    drawn = {
        "accuracy_vs_power": accuracy_vs_power(table, out / "accuracy_vs_power.png", title, variants),
        "accuracy_vs_multiplier": accuracy_vs_multiplier(table, out / "accuracy_vs_multiplier.png", title, variants),
        "expert_load": expert_load(table, out / "expert_load.png", title, variants),
    }
    return {k: v for k, v in drawn.items() if v is not None}

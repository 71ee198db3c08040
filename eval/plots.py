"""The report's PNG plots, drawn from the results table (`eval.report.rows`).

- accuracy_vs_power.png: top-1 against normalised power, one curve per topology (retrained
  dashed), one panel per architecture: the study's main picture.
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

TOPOLOGY_COLORS = {"dense": "#333333", "hard": "#1f77b4", "soft": "#ff7f0e", "cluster": "#2ca02c"}
MARKERS = {"dense": "s", "hard": "o", "soft": "^", "cluster": "D"}
DPI = 130


def _short(name: str) -> str:
    return name.removeprefix("mul8s_")


def _ok(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in table if r.get("status") == "ok"]


def _series(rows: list[dict[str, Any]]) -> dict[tuple[str, bool], list[dict[str, Any]]]:
    out: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["topology"], r["retrained"]), []).append(r)
    return out


def _color(topology: str) -> str:
    return TOPOLOGY_COLORS.get(topology, "#9467bd")


def _label(topology: str, retrained: bool) -> str:
    name = "dense" if topology == "dense" else f"{topology} MoE"
    return f"{name}, retrained" if retrained else name


def _style(ax, retrained: bool) -> dict[str, Any]:
    return {"linestyle": "--" if retrained else "-", "markerfacecolor": "white" if retrained else None}


def _axes(n: int, width: float, height: float):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def multiplier_order(rows: list[dict[str, Any]]) -> list[str]:
    """Multipliers by power, highest first (unknown power last)."""
    power = {r["multiplier"]: r.get("power_mW") for r in rows}
    return sorted(power, key=lambda m: (power[m] is None, -(power[m] or 0.0)))


def accuracy_vs_power(table: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    rows = [r for r in _ok(table) if r.get("normalised_power") is not None]
    if not rows:
        return None
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = _axes(len(archs), 6.6, 4.8)
    for ax, arch in zip(axes, archs):
        series = _series([r for r in rows if r["arch"] == arch])
        for index, ((topo, retrained), points) in enumerate(series.items()):
            points = sorted(points, key=lambda r: r["normalised_power"])
            x = [p["normalised_power"] for p in points]
            y = [100 * p["top1"] for p in points]
            ax.plot(x, y, marker=MARKERS.get(topo, "o"), color=_color(topo), label=_label(topo, retrained),
                    linewidth=1.6, markersize=5.5, **_style(ax, retrained))
            # one row of labels per curve, alternating above and below, so names don't collide
            offset = 7 + 9 * (index // 2) if index % 2 == 0 else -(11 + 9 * (index // 2))
            for p, xi, yi in zip(points, x, y):
                ax.annotate(_short(p["multiplier"]), (xi, yi), textcoords="offset points", xytext=(0, offset),
                            ha="center", fontsize=6.5, color=_color(topo), alpha=0.9)
        ax.axvline(1.0, color="#999999", linewidth=0.8, linestyle=":")
        ax.set_title(arch, fontsize=11)
        ax.set_xlabel("normalised power (dense model, exact multiplier = 1)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo - 0.06 * (hi - lo), hi + 0.06 * (hi - lo))
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title}: accuracy vs normalised power", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def accuracy_vs_multiplier(table: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    rows = _ok(table)
    if not rows:
        return None
    order = multiplier_order(rows)
    power = {r["multiplier"]: r.get("power_mW") for r in rows}
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = _axes(len(archs), max(5.5, 0.75 * len(order) + 2.5), 4.6)
    for ax, arch in zip(axes, archs):
        for (topo, retrained), points in _series([r for r in rows if r["arch"] == arch]).items():
            by = {p["multiplier"]: p for p in points}
            x = [i for i, m in enumerate(order) if m in by]
            y = [100 * by[order[i]]["top1"] for i in x]
            ax.plot(x, y, marker=MARKERS.get(topo, "o"), color=_color(topo), label=_label(topo, retrained),
                    linewidth=1.6, markersize=5.5, **_style(ax, retrained))
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


def expert_load(table: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    panels: dict[tuple[str, str, bool, str], list[dict[str, Any]]] = {}
    for r in _ok(table):
        for layer in (r.get("expert_load") or {}):
            panels.setdefault((r["arch"], r["topology"], r["retrained"], layer), []).append(r)
    if not panels:
        return None
    n = len(panels)
    cols = min(n, 2)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(8.4 * cols, 3.9 * nrows), squeeze=False)
    for ax, ((arch, topo, retrained, layer), rows) in zip(axes.flat, panels.items()):
        order = multiplier_order(rows)
        by = {r["multiplier"]: r for r in rows}
        experts = len(by[order[0]]["expert_load"][layer]["share"])
        width = 0.8 / len(order)
        colors = plt.cm.viridis(np.linspace(0.05, 0.9, len(order)))
        for i, mult in enumerate(order):
            share = by[mult]["expert_load"][layer]["share"]
            ax.bar(np.arange(experts) - 0.4 + width * (i + 0.5), [100 * s for s in share], width,
                   color=colors[i], label=_short(mult), edgecolor="white", linewidth=0.3)
        ax.axhline(100 / experts, color="#cc3333", linestyle="--", linewidth=1, label="uniform")
        ax.set_xticks(range(experts))
        ax.set_xticklabels([f"expert {e}" for e in range(experts)])
        ax.set_ylabel("routed rows (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{arch} {topo} MoE, layer {layer}{', retrained' if retrained else ''}", fontsize=10)
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


def draw_all(table: list[dict[str, Any]], out: Path, title: str) -> dict[str, Path]:
    """Draw every plot the table has data for; returns name -> PNG path."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = {
        "accuracy_vs_power": accuracy_vs_power(table, out / "accuracy_vs_power.png", title),
        "accuracy_vs_multiplier": accuracy_vs_multiplier(table, out / "accuracy_vs_multiplier.png", title),
        "expert_load": expert_load(table, out / "expert_load.png", title),
    }
    return {k: v for k, v in drawn.items() if v is not None}

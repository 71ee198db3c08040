"""Power-vs-error picture of the catalog (what `python -m multipliers plot` draws)."""

from __future__ import annotations

from pathlib import Path

from multipliers.multiplier import Multiplier


def plot_power_vs_error(mults: list[Multiplier], out: str | Path, metric: str = "mae") -> Path:
    """Scatter of PDK45 power (relative to the exact multiplier) against an error metric.

    Filled markers: exactly decomposable (fast masked-operand path); hollow: LUT only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multipliers.registry import exact

    reference = exact().power_mW
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for m in mults:
        if m.power_mW is None:
            continue
        err = getattr(m.metrics, metric)
        power = 100 * m.power_mW / reference
        dec = m.decomposition
        style = dict(s=60, edgecolors="C0" if dec.exact and dec.num_terms == 1 else "C1")
        style["facecolors"] = style["edgecolors"] if dec.exact else "none"
        ax.scatter(max(err, 0.5), power, **style)
        ax.annotate(m.name.removeprefix("mul8s_"), (max(err, 0.5), power), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"{metric.upper()} (log scale; exact drawn at 0.5)")
    ax.set_ylabel("power, % of the exact multiplier (PDK45)")
    ax.set_title("EvoApproxLib signed 8x8 multipliers")
    ax.scatter([], [], c="C0", label="operand masks (1 int8 GEMM)")
    ax.scatter([], [], c="C1", label="partial products (main + corrections)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out

"""Sweep results: one row per cell in results.csv / results.json, and report/report.md with
the plots of `eval.plots`.

Normalised power in the table uses the dense model of the same architecture from the same
sweep as its reference (its measured MACs per image), so dense and MoE rows share one scale:

    P_norm(cell) = weighted MACs per image of the cell / MACs per image of the dense model

(weighted: each layer's MACs x P(mult_l) / P(exact), `eval.power`). Without a dense model in
the sweep, each cell's own graph-inferred dense reference is used (`eval run`'s default).

Every row names the code that produced it (`code`: `eval.identity.label`; results.json has the
full identity). The report's header gives the identity, or, when the sweep's results (cells and
models) come from more than one, says so at the top, counts each and adds a code column.
Two drivers of one sweep write these files one after the other (a lock on OUT/report.lock), each
file atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import multipliers
from eval import identity, locks

COLUMNS = ["arch", "topology", "multiplier", "power_mW", "relative_power", "retrained", "top1", "top5",
           "normalised_power", "active_mmacs_per_image", "dense_mmacs_per_image", "p50_ms", "p90_ms",
           "images_per_s", "fp32_top1", "before_top1", "max_expert_share", "status", "cell", "code"]
RUNTIMES = {"ort": "onnxruntime", "tvm": "TVM"}  # backend axis value -> what measured the latency


def variants(config) -> list[str]:
    """The swept axes the fixed COLUMNS lack (an axis left at its implicit value adds none):
    each gets a column after "retrained" and splits the plots' curves."""
    return [a.name for a in config.swept() if a.name not in COLUMNS]


def columns(extra: list[str]) -> list[str]:
    at = COLUMNS.index("retrained") + 1
    return [*COLUMNS[:at], *extra, *COLUMNS[at:]]


def short(name: str) -> str:
    return name.removeprefix("mul8s_")


def _dense_reference(cells) -> dict[str, float]:
    """arch -> MACs per image of its dense model (any finished dense cell, not retrained first)."""
    out: dict[str, float] = {}
    for job in sorted(cells, key=lambda j: j.cell["retrained"]):
        r = job.result or {}
        if job.cell["topology"] == "dense" and r.get("status") == "ok" and job.cell["arch"] not in out:
            out[job.cell["arch"]] = r["active_macs_per_image"]
    return out


def rows(models, cells, extra: list[str] = ()) -> list[dict[str, Any]]:
    """One row per cell job; `extra`: the `variants` axes, as columns after "retrained"."""
    reference = _dense_reference(cells)
    exact_power = multipliers.exact().power_mW
    out = []
    for job in cells:
        cell, r = job.cell, job.result or {}
        mult = multipliers.get(cell["multiplier"])
        model = models[job.needs].result or {}
        row: dict[str, Any] = {
            "arch": cell["arch"], "topology": cell["topology"], "multiplier": cell["multiplier"],
            "power_mW": mult.power_mW,
            "relative_power": mult.power_mW / exact_power if mult.power_mW is not None else None,
            "retrained": bool(cell["retrained"]), **{name: cell[name] for name in extra},
            "status": r.get("status", "not run"), "cell": job.hash,
            "fp32_top1": model.get("fp32_top1"),
            "code": identity.label(r["identity"]) if r.get("identity") else None, "identity": r.get("identity"),
        }
        if r.get("status") == "ok":
            dense = reference.get(cell["arch"]) or r["dense_macs_per_image"]
            weighted = r.get("weighted_macs_per_image")
            shares = [max(load["share"]) for load in r.get("expert_load", {}).values()]
            row.update({
                "top1": r["top1"], "top5": r["top5"],
                "normalised_power": weighted / dense if weighted is not None else None,
                "active_mmacs_per_image": r["active_macs_per_image"] / 1e6,
                "dense_mmacs_per_image": dense / 1e6,
                "p50_ms": r["latency"]["p50_ms"], "p90_ms": r["latency"]["p90_ms"],
                "images_per_s": r["latency"]["images_per_s"], "before_top1": r.get("before_top1"),
                "max_expert_share": max(shares) if shares else None,
                "expert_load": r.get("expert_load", {}), "images": r["images"],
                "model": r["model"], "eval": r["eval"], "wall_s": r.get("wall_s"),
            })
        elif r:
            row["error"] = r.get("error")
        out.append(row)
    return out


def identities(models, cells) -> Counter:
    """{identity label: number of finished jobs (models and cells) it produced}."""
    return Counter(identity.label(job.result.get("identity")) for job in [*models.values(), *cells]
                   if job.result and job.result.get("status") == "ok")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, table: list[dict[str, Any]], extra: list[str] = ()) -> None:
    names = columns(list(extra))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    for row in table:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in names})
    _write(path, text.getvalue())


def markdown_table(table: list[dict[str, Any]], extra: list[str] = (), code: bool = False) -> str:
    """The results table; `code`: with a column naming each row's code identity."""
    head = ["arch", "topology", "multiplier", "power mW", "retrained", *extra, "top-1", "top-5", "norm. power",
            "MMAC/img", "p50 ms", "img/s", "max expert share", *(["code"] if code else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        key = [r["arch"], r["topology"], short(r["multiplier"]), _fmt(r["power_mW"], 3), _fmt(r["retrained"]),
               *(_fmt(r[name]) for name in extra)]
        if r["status"] != "ok":
            lines.append("| " + " | ".join(key) + f" | {r['status']}: {r.get('error', '')} |" + " |" * (6 + code))
            continue
        lines.append("| " + " | ".join([
            *key, _fmt(r["top1"]), _fmt(r["top5"]), _fmt(r["normalised_power"], 3),
            _fmt(r["active_mmacs_per_image"], 2), _fmt(r["p50_ms"], 2), _fmt(r["images_per_s"], 0),
            _fmt(r["max_expert_share"], 3), *([_fmt(r["code"])] if code else [])]) + " |")
    return "\n".join(lines)


def code_lines(codes: Counter) -> list[str]:
    """The report's lines on the code identities of its results (a warning first when mixed)."""
    if len(codes) <= 1:
        return [f"Code: {next(iter(codes), 'none finished')}.", ""]
    counts = "; ".join(f"`{name}` ({n} jobs)" for name, n in codes.most_common())
    return [f"**Mixed code: these results come from {len(codes)} versions of the code**: {counts}. "
            "`python -m eval sweep CONFIG --rerun-stale` reruns the jobs not made by the code that runs it.", ""]


def write_markdown(path: Path, config, table: list[dict[str, Any]], plots: dict[str, Path],
                   run_info: dict[str, Any], models, codes: Counter = Counter()) -> None:
    extra = variants(config)
    ok = [r for r in table if r["status"] == "ok"]
    images = ok[0]["images"] if ok else 0
    train = ", ".join(f"{k}={v}" for k, v in config.train.items()) or "defaults"
    model_lines = []
    for job in models.values():
        r = job.result or {}
        if r.get("status") == "ok":
            model_lines.append(f"- {job.label.removeprefix('model ')}: fp32 top-1 {r['fp32_top1']:.4f} "
                               f"({r['fp32_test_images']} test images) after {r['train_steps']} steps, "
                               f"{r['train_wall_s']:.0f} s of training (`{job.folder.name}`)")
        else:
            model_lines.append(f"- {job.label.removeprefix('model ')}: {r.get('status', 'not run')} "
                               f"{r.get('error', '')}")
    swept = "; ".join([
        f"archs {', '.join(config.axes['arch'])}", f"topologies {', '.join(config.axes['topology'])}",
        f"{len(config.axes['multiplier'])} multipliers",
        f"retrained {', '.join(_fmt(v) for v in config.axes['retrained'])}",
        *(f"{name} {', '.join(_fmt(v) for v in config.axes[name])}" for name in extra)])
    captions = {
        "accuracy_vs_power": "Top-1 accuracy against normalised power (1 = the dense model with the exact "
                             "multiplier); every multiplier is a point, each topology's line its Pareto front "
                             "(the best accuracy at or below each power).",
        "accuracy_vs_multiplier": "Top-1 accuracy per multiplier, multipliers ordered by PDK45 power "
                                  "(highest, the exact one, first).",
        "expert_load": "Share of routed rows per expert of each MoE layer on the evaluated images, per "
                       "multiplier (the approximation changes the router's inputs, hence the routing).",
    }
    parts = [
        f"# {config.name}: approximate multipliers on dense and MoE models",
        "",
        *code_lines(codes),
        f"{len(ok)} of {len(table)} cells evaluated on {images} {config.dataset} test images; "
        f"{swept}. Training: {train}. Sweep executor {run_info['executor']}, {run_info['workers']} workers x "
        f"{run_info['threads']} thread(s); this run {run_info['wall_s']:.0f} s; written "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "Models:",
        *model_lines,
        "",
    ]
    for key, plot in plots.items():
        parts += [f"![{key}]({plot.name})", "", captions.get(key, ""), ""]
    parts += [
        "## Results",
        "",
        markdown_table(table, extra, code=len(codes) > 1),
        "",
        "Normalised power: sum over MAC layers of active MACs x P(multiplier) / P(exact), over the MACs of the "
        "dense model of the same architecture (DESIGN.md); active MACs follow the routing measured on these "
        "images (router included, float router at the exact multiplier's power). Latency: "
        f"{', '.join(RUNTIMES[b] for b in config.axes['backend'])}, per batch, "
        f"{run_info['threads']} thread(s), measured while {run_info['workers']} jobs ran at once, so it compares "
        "cells of this sweep rather than giving absolute numbers.",
        "",
        "Files: `../results.csv`, `../results.json`; each cell's folder (`../jobs/cell-<hash>/`) holds its "
        "config, log, rewritten model and full `eval.json` (per-layer MACs).",
    ]
    _write(path, "\n".join(parts) + "\n")


def write_report(config, models, cells, run_info: dict[str, Any]) -> dict[str, Any]:
    from eval.plots import draw_all

    out = config.out
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    extra = variants(config)
    table = rows(models, cells, extra)
    codes = identities(models, cells)
    with locks.hold(out / "report.lock"):
        write_csv(out / "results.csv", table, extra)
        _write(out / "results.json", json.dumps(table, indent=2, default=str))
        plots = draw_all(table, report_dir, title=config.name, variants=extra)
        write_markdown(report_dir / "report.md", config, table, plots, run_info, models, codes)
    failed = sum(1 for r in table if r["status"] != "ok")
    return {"csv": out / "results.csv", "json": out / "results.json", "markdown": report_dir / "report.md",
            "plots": plots, "rows": table, "failed": failed, "identities": codes}

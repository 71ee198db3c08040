"""`python -m multipliers`: list, inspect, export, import and decompose multipliers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from multipliers import registry
from multipliers.c_import import CImportError, import_c
from multipliers.families import FAMILY_SYNTAX, FamilySpecError
from multipliers.lut import LUTError, save_lut
from multipliers.multiplier import Multiplier

USER_ERRORS = (registry.UnknownMultiplierError, FamilySpecError, LUTError, CImportError)


def _fmt(value, digits=2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) and value != int(value) else f"{value:g}"


def _row(m: Multiplier) -> dict:
    d = m.decomposition
    return {"name": m.name, "kind": m.kind, "aliases": list(m.aliases), **m.metrics.to_dict(),
            "power_mW": m.power_mW, "decomposable": d.exact, "terms": d.num_terms if d.exact else None}


def cmd_list(args) -> None:
    mults = list(registry.catalog().values())
    if args.all:
        mults += [registry.get(n) for n in ("mitchell", "drum:4", "drum:6")]
    rows = [_row(m) for m in mults]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = f"{'name':<12} {'kind':<6} {'MAE':>8} {'WCE':>6} {'EP %':>6} {'MRE %':>7} {'power mW':>9} {'decomposable'}"
    print(header)
    print("-" * len(header))
    for r in rows:
        dec = f"yes ({r['terms']} term{'s' if r['terms'] != 1 else ''})" if r["decomposable"] else "no (LUT)"
        print(f"{r['name']:<12} {r['kind']:<6} {_fmt(r['mae']):>8} {_fmt(r['wce']):>6} "
              f"{_fmt(r['ep_pct']):>6} {_fmt(r['mre_pct']):>7} {_fmt(r['power_mW'], 3):>9} {dec}")
    print("\npresets: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in registry.PRESETS.items()))
    print("families: " + "; ".join(f"{k} ({v})" for k, v in FAMILY_SYNTAX.items()))


def cmd_show(args) -> None:
    m = registry.get(args.name)
    info = m.summary()
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{m.name}  ({m.kind})")
    if m.aliases:
        print(f"  aliases:      {', '.join(m.aliases)}")
    print(f"  definition:   {m.description}")
    print(f"  provenance:   {m.provenance}")
    if m.power_mW is not None:
        exact = registry.exact()
        print(f"  PDK45:        {m.power_mW} mW ({100 * m.relative_power(exact):.1f} % of exact), "
              f"{m.area_um2} um^2, {m.delay_ns} ns")
    met = m.metrics
    print(f"  metrics:      MAE {met.mae:g}, WCE {met.wce:g}, EP {met.ep_pct:.2f} %, "
          f"MRE {met.mre_pct:.3f} %, MSE {met.mse:g}")
    if m.published:
        p = m.published
        print(f"  published:    MAE {p.mae:g}, WCE {p.wce:g}, EP {p.ep_pct:g} %, MRE {p.mre_pct:g} %, MSE {p.mse:g}")
    print(f"  LUT sha256:   {m.sha256}")
    d = m.decomposition
    if d.exact:
        print(f"  decomposes:   {d.num_terms} term(s){' (minimal)' if d.minimal else ''}: {d.formula()}")
    else:
        print(f"  decomposes:   no: {d.reason}")


def cmd_export_lut(args) -> None:
    m = registry.get(args.name)
    path = save_lut(m.lut, args.out)
    print(f"wrote {path} ({m.name}, int32 (256, 256), lut[a + 128, b + 128])")


def cmd_import_c(args) -> None:
    lut = import_c(args.file, name=args.name, timeout=args.timeout)
    path = save_lut(lut, args.out)
    m = Multiplier(name=Path(args.out).stem, lut=lut, kind="table", provenance=str(args.file))
    met, d = m.metrics, m.decomposition
    print(f"wrote {path}: MAE {met.mae:g}, WCE {met.wce:g}, EP {met.ep_pct:.2f} %, "
          f"MRE {met.mre_pct:.3f} %; decomposes: "
          + (f"{d.num_terms} term(s)" if d.exact else "no"))


def cmd_decompose(args) -> None:
    m = registry.get(args.name)
    d = m.decomposition
    if args.json:
        print(json.dumps({"name": m.name, **d.to_dict()}, indent=2))
        return
    if d.exact:
        print(f"{m.name}: exact decomposition, {d.num_terms} term(s)"
              f"{' (minimal)' if d.minimal else f', lower bound {d.lower_bound}'}")
        print(f"  mul(a, b) = {d.formula()}")
        for t in d.terms:
            print(f"  coef {t.coef:+d}  mask_a 0x{t.mask_a:02X} (>> {t.shift_a})  "
                  f"mask_b 0x{t.mask_b:02X} (>> {t.shift_b})  weight {t.weight:+d}")
    else:
        print(f"{m.name}: no exact decomposition: {d.reason}")


def cmd_plot(args) -> None:
    from multipliers.plot import plot_power_vs_error

    path = plot_power_vs_error(list(registry.catalog().values()), args.out, metric=args.metric)
    print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m multipliers",
        description="8-bit signed approximate multipliers: EvoApproxLib catalog, families, LUTs. "
                    "NAME is a catalog name (mul8s_1KV8, 1KV8, a 2020 alias, "
                    "evoapprox2020:mul8s_1KV8), a family spec (mask:a=~3,b=~3, pp:i+j<3, "
                    "mitchell, drum:4) or a .npy LUT.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="table of the catalog (error metrics, power, decomposability)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="also list example non-decomposable families")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="everything known about one multiplier")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("export-lut", help="write a multiplier's LUT as .npy (int32, 256x256)")
    p.add_argument("name")
    p.add_argument("out", metavar="OUT.npy")
    p.set_defaults(func=cmd_export_lut)
    p = sub.add_parser("import-c", help="compile an EvoApproxLib-format C model into a .npy LUT")
    p.add_argument("file", metavar="FILE.c")
    p.add_argument("out", metavar="OUT.npy")
    p.add_argument("--name", help="function to import when the file defines several")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for compiling and for running (default 60)")
    p.set_defaults(func=cmd_import_c)
    p = sub.add_parser("decompose", help="exact split into products of bit-masked operands")
    p.add_argument("name", metavar="NAME_OR_NPY")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decompose)
    p = sub.add_parser("plot", help="PNG of power vs error for the catalog")
    p.add_argument("out", metavar="OUT.png")
    p.add_argument("--metric", choices=["mae", "wce", "mre_pct", "ep_pct", "mse"], default="mae")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return 0

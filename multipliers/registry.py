"""The multiplier catalog: EvoApproxLib's 13 signed 8-bit multipliers, presets, families.

Name resolution (`get`), in order:
1. canonical EvoApproxLib v2022 names (`mul8s_1KV8`), case-insensitive, with or without the
   `mul8s_` prefix or an `evoapprox:` prefix;
2. EvoApproxLib 2020 names, which resolve to the same circuit under its v2022 name. Two 2020
   names are also (different) v2022 names, `mul8s_1KV8` and `mul8s_1KVA`: the v2022 meaning
   wins, and `evoapprox2020:mul8s_1KV8` asks for the 2020 one;
3. family specs (`mask:...`, `pp:...`, `mitchell`, `drum:K`, see `multipliers.families`);
4. a path to a `.npy` LUT.
"""

from __future__ import annotations

import csv
import difflib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from multipliers import families
from multipliers.lut import exact_lut, load_lut
from multipliers.metrics import ErrorMetrics
from multipliers.multiplier import Multiplier

EVOAPPROX_PROVENANCE = ("EvoApproxLib (github ehw-fit/evoapproxlib, MIT), {name} "
                        "(2020 name {name_2020}); LUT built from the closed form, verified by SHA-256")

#: Named lists of multipliers, usable wherever a multiplier name is.
PRESETS: dict[str, tuple[str, ...]] = {
    # the AxMoE study's eight: the exact multiplier plus seven approximate ones
    "axmoe8": ("mul8s_1KV6", "mul8s_1KV8", "mul8s_1KV9", "mul8s_1KVA",
               "mul8s_1KVM", "mul8s_1KVP", "mul8s_1L2J", "mul8s_1L2L"),
    # EvoApproxLib's power-vs-MAE Pareto front
    "pareto-mae": ("mul8s_1KV6", "mul8s_1KV8", "mul8s_1KV9", "mul8s_1KVP",
                   "mul8s_1L2J", "mul8s_1L2L", "mul8s_1L2N", "mul8s_1L12"),
}

EXACT_NAME = "mul8s_1KV6"


class UnknownMultiplierError(ValueError):
    pass


# ------------------------------------------------------------------ closed forms of the TSV
_MASK_SIDE = re.compile(r"^\(?\s*([ab])\s*(?:&\s*~\s*(\d+))?\s*\)?$")


def _mask_from_closed_form(form: str) -> tuple[int, int]:
    """`(a & ~1) * (b & ~1)` -> (0xFE, 0xFE)."""
    masks = {}
    for side in form.split("*"):
        match = _MASK_SIDE.match(side.strip())
        if not match:
            raise ValueError(f"unparsable mask closed form {form!r}")
        operand, cleared = match.groups()
        masks[operand] = 0xFF & ~int(cleared or 0)
    return masks["a"], masks["b"]


_PP_PIECE = re.compile(r"\{([^:]*):([^}]*)\}")


def _pp_spec_from_closed_form(form: str) -> str:
    """`P = {(0,j): all j} + {(i,j): i >= 1, i+j < 3}` -> `i=0,i>=1&i+j<3` (families syntax)."""
    tokens = []
    for head, body in _PP_PIECE.findall(form):
        head, body = head.replace(" ", ""), body.replace(" ", "")
        if head == "(i,j)":
            tokens.append("&".join(body.split(",")))
        elif body == "allj":
            tokens += [f"i={row}" for row in re.findall(r"\((\d),j\)", head)]
        else:
            raise ValueError(f"unparsable partial-product closed form {form!r}")
    return ",".join(tokens)


def _lut_from_closed_form(kind: str, form: str):
    if kind == "exact":
        return exact_lut()
    if kind == "mask":
        return families.mask_lut(*_mask_from_closed_form(form))
    if kind == "pp":
        return families.pp_lut(families.parse_pp_spec(_pp_spec_from_closed_form(form)))
    raise ValueError(f"unknown closed-form kind {kind!r}")


@lru_cache(maxsize=None)
def evoapprox_rows() -> tuple[dict[str, str], ...]:
    """Rows of the bundled `evoapprox_mul8s.tsv` (published metrics, PDK45, closed forms)."""
    text = resources.files("multipliers").joinpath("data/evoapprox_mul8s.tsv").read_text()
    return tuple(csv.DictReader(text.splitlines(), delimiter="\t"))


@lru_cache(maxsize=None)
def catalog() -> dict[str, Multiplier]:
    """The 13 EvoApproxLib signed 8-bit multipliers by canonical (v2022) name, sorted by power."""
    v2022 = {row["name"] for row in evoapprox_rows()}
    out = {}
    for row in sorted(evoapprox_rows(), key=lambda r: -float(r["power_mW"])):
        old = row["name_2020"]
        aliases = [f"evoapprox2020:{old}"]
        if old not in v2022:
            aliases.insert(0, old)
        out[row["name"]] = Multiplier(
            name=row["name"],
            lut=_lut_from_closed_form(row["form_kind"], row["closed_form"]),
            kind=row["form_kind"],
            aliases=tuple(aliases),
            description=row["closed_form"],
            provenance=EVOAPPROX_PROVENANCE.format(name=row["name"], name_2020=old),
            power_mW=float(row["power_mW"]),
            area_um2=float(row["area_um2"]),
            delay_ns=float(row["delay_ns"]),
            published=ErrorMetrics(mae=float(row["MAE"]), wce=float(row["WCE"]),
                                   ep_pct=float(row["EP_pct"]), mre_pct=float(row["MRE_pct"]),
                                   mse=float(row["MSE"])),
        )
    return out


def exact() -> Multiplier:
    return catalog()[EXACT_NAME]


@lru_cache(maxsize=None)
def _alias_table() -> dict[str, str]:
    table = {}
    for name, mult in catalog().items():
        for key in (name, name.removeprefix("mul8s_"), f"evoapprox:{name}"):
            table[key.lower()] = name
    for name, mult in catalog().items():  # 2020 names never shadow a v2022 name
        for alias in mult.aliases:
            table.setdefault(alias.lower(), name)
    return table


# --------------------------------------------------------------------------- families
@lru_cache(maxsize=64)
def _family(spec: str) -> Multiplier:
    return families.member(spec)


def _unknown(name: str) -> UnknownMultiplierError:
    close = difflib.get_close_matches(name.lower(), list(_alias_table()), n=5, cutoff=0.6)
    suggestions = list(dict.fromkeys(_alias_table()[c] for c in close))[:3]
    hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
    return UnknownMultiplierError(
        f"unknown multiplier {name!r}{hint}; valid: {', '.join(catalog())}, families "
        f"{', '.join(families.FAMILY_SYNTAX)}, or a .npy LUT file")


def get(name: str | Multiplier) -> Multiplier:
    """Resolve a multiplier by name, alias, family spec or `.npy` path (see module doc)."""
    if isinstance(name, Multiplier):
        return name
    key = name.strip()
    canonical = _alias_table().get(key.lower())
    if canonical:
        return catalog()[canonical]
    if key.lower().endswith(".npy"):
        path = Path(key)
        return Multiplier(name=path.stem, kind="table", lut=load_lut(path),
                          description="user-supplied LUT", provenance=str(path.resolve()))
    try:
        return _family(key.replace(" ", "").lower())
    except KeyError:
        raise _unknown(key) from None


def names(include_presets: bool = True) -> list[str]:
    return list(catalog()) + (list(PRESETS) if include_presets else [])


def resolve_many(names_or_presets: Iterable[str]) -> list[Multiplier]:
    """Multipliers for a list of names, expanding presets, without duplicates, in order."""
    out: dict[str, Multiplier] = {}
    for item in names_or_presets:
        for name in PRESETS.get(item.strip().lower(), (item,)):
            mult = get(name)
            out.setdefault(mult.name, mult)
    return list(out.values())

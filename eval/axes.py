"""The axes of a sweep, each declared once. A cell is a dict {axis name: value}; the cells are
the product of the axes' value lists,

    cells = [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]

nested in `AXES` order, except that a `series` axis (the one a report curve runs over) varies
fastest. An axis says where its values come from (its YAML key; how they are parsed, expanded
and checked) and the first stage of a job its value changes, which decides the job whose hash
it enters:

    train, export        -> the model job (`eval.jobs.model_spec`), shared by every cell above it
    pass, retrain, eval  -> the cell job (`eval.jobs.cell_spec`)

An axis whose value is one option of its stage's command names it as `option` (backend ->
`eval run --backend`, compensate -> `passes.approximate --compensate`). An axis added after sweeps were run has
an `implicit` value, the one every earlier job had: a cell at it leaves the axis out of its
job spec (so its hash and folder stay as they were), out of its label and out of the results'
columns. Adding an axis is one `Axis(...)` entry in `AXES`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import multipliers

STAGES = ("train", "export", "pass", "retrain", "eval")
MODEL_STAGES = ("train", "export")  # the model job's stages; the cell job runs the others
EXPLICIT = object()  # `Axis.implicit` of an axis every job spec names


class SweepConfigError(ValueError):
    """A sweep config that cannot run, said in one line."""


def suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def as_list(value: Any, key: str) -> list:
    """A YAML value as a non-empty list (a scalar is a list of one)."""
    if value is None:
        raise SweepConfigError(f"{key}: required")
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SweepConfigError(f"{key}: empty list")
    return values


@dataclass(frozen=True)
class Axis:
    name: str                                   # key in a cell, a job spec and a results row
    key: str                                    # YAML key listing its values
    stage: str                                  # first job stage its value changes (STAGES)
    parse: Callable[[list, str], tuple]         # YAML values, key -> canonical values (expanded, ordered)
    default: tuple | None = None                # values when the YAML omits the key (None: required)
    check: Callable[[tuple, str], None] | None = None  # checks importing heavy packages (SweepConfig.check)
    tag: Callable[[Any], str] = str             # the value's word in a job's label ("" for none)
    implicit: Any = EXPLICIT                    # value of jobs from before the axis: left out of specs
    series: bool = False                        # report curves run over it, so it varies fastest
    option: str | None = None                   # option (dest) of its stage's command it is passed as

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"axis {self.name}: stage {self.stage!r} is not one of {', '.join(STAGES)}")

    @property
    def job(self) -> str:
        """The job kind whose spec (and hash) holds this axis: "model" or "cell"."""
        return "model" if self.stage in MODEL_STAGES else "cell"

    def values(self, raw: dict[str, Any]) -> tuple:
        """The axis' values from a sweep YAML mapping."""
        if self.key not in raw and self.default is not None:
            return self.default
        return self.parse(as_list(raw.get(self.key), self.key), self.key)

    def spec(self, value: Any) -> dict[str, Any]:
        """The axis' entry in a job spec: none at the implicit value."""
        return {} if value == self.implicit else {self.name: value}

    def is_implicit(self, values: tuple) -> bool:
        """Whether a sweep over `values` is one from before the axis existed."""
        return self.implicit is not EXPLICIT and tuple(values) == (self.implicit,)


def _names(values: list, key: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(v) for v in values))


def _one_of(valid: Callable[[], Iterable[str]]) -> Callable[[tuple, str], None]:
    def check(values: tuple, key: str) -> None:
        names = list(valid())
        for value in values:
            if value not in names:
                hint = suggest(value, names) or f" (valid: {', '.join(names)})"
                raise SweepConfigError(f"{key}: unknown {value!r}{hint}")
    return check


def _archs() -> list[str]:
    import models

    return models.list_archs()


def _topologies() -> list[str]:
    import models

    return models.list_topologies()


def _power_key(name: str) -> tuple[int, float]:
    power = multipliers.get(name).power_mW
    return (0, -power) if power is not None else (1, 0.0)


def parse_multipliers(values: list, key: str) -> tuple[str, ...]:
    """Canonical names of multiplier names, presets (axmoe8, pareto-mae) and families, once
    each, ordered by power (highest, the exact multiplier, first; unknown power last)."""
    try:
        names = [m.name for m in multipliers.resolve_many([str(v) for v in values])]
    except multipliers.UnknownMultiplierError as exc:
        raise SweepConfigError(f"{key}: {exc}") from None
    return tuple(sorted(dict.fromkeys(names), key=_power_key))


def _bools(values: list, key: str) -> tuple[bool, ...]:
    out = []
    for value in values:
        word = str(value).lower()
        if isinstance(value, bool):
            out.append(value)
        elif word in ("yes", "true", "on", "1"):
            out.append(True)
        elif word in ("no", "false", "off", "0"):
            out.append(False)
        else:
            raise SweepConfigError(f"{key}: expected yes/no, got {value!r}")
    return tuple(dict.fromkeys(out))


def _backends(values: list, key: str) -> tuple[str, ...]:
    from eval.backends import BACKENDS

    names = _names(values, key)
    _one_of(lambda: BACKENDS)(names, key)
    return names


def _backends_run_here(values: tuple, key: str) -> None:
    if "tvm" not in values:
        return
    # runtime.tvm imports TVM on first use, so TVM itself must be looked for
    if importlib.util.find_spec("tvm") is None:
        raise SweepConfigError(f"{key}: tvm needs TVM, which is not installed here: pip install 'axmoe[tvm]'")
    try:
        importlib.import_module("runtime.tvm")
    except ImportError as exc:
        raise SweepConfigError(f"{key}: tvm: runtime.tvm cannot be imported ({exc})") from None


def _compensate_modes(values: list, key: str) -> tuple[str, ...]:
    from passes.plan import COMPENSATE_MODES

    names = _names(values, key)
    _one_of(lambda: COMPENSATE_MODES)(names, key)
    return names


AXES: tuple[Axis, ...] = (
    Axis("arch", "archs", "train", _names, check=_one_of(_archs)),
    Axis("topology", "topologies", "train", _names, check=_one_of(_topologies)),
    Axis("multiplier", "multipliers", "pass", parse_multipliers, series=True),
    Axis("retrained", "retrained", "retrain", _bools, default=(False,), tag=lambda v: "retrained" if v else ""),
    Axis("backend", "backends", "eval", _backends, default=("ort",), check=_backends_run_here, implicit="ort",
         option="backend"),
    # error compensation of the pass (`python -m passes.approximate --compensate`): one more curve
    Axis("compensate", "compensate", "pass", _compensate_modes, default=("none",), implicit="none",
         tag=lambda v: f"compensate {v}", option="compensate"),
)
BY_NAME = {axis.name: axis for axis in AXES}
YAML_KEYS = {axis.key for axis in AXES}


def nesting() -> tuple[Axis, ...]:
    """The axes from outermost to innermost loop of the product (series axes innermost)."""
    return (*[a for a in AXES if not a.series], *[a for a in AXES if a.series])


def job_axes(job: str) -> tuple[Axis, ...]:
    """The axes in the spec of a "model" or "cell" job."""
    return tuple(a for a in AXES if a.job == job)


def spec_of(cell: dict[str, Any], job: str) -> dict[str, Any]:
    """The entries a cell's axes put in the spec of its `job` ("model" or "cell")."""
    out: dict[str, Any] = {}
    for axis in job_axes(job):
        out.update(axis.spec(cell[axis.name]))
    return out


def options(spec: dict[str, Any], stage: str) -> dict[str, Any]:
    """Command options (dest names) of `stage` that a job spec's axes set: {option: value}."""
    return {a.option: spec[a.name] for a in AXES if a.stage == stage and a.option and a.name in spec}


def tags(cell: dict[str, Any], job: str) -> list[str]:
    """The label words of a cell's `job` axes, implicit values and empty tags left out."""
    return [t for a in job_axes(job) if cell[a.name] != a.implicit and (t := a.tag(cell[a.name]))]

"""Sweep configuration: a YAML study expanded into jobs.

    name: demo                          # report title (default: the file's stem)
    out: out/demo                       # jobs/, results.{csv,json}, report/ (default out/<name>)
    dataset: fashion-mnist
    archs: [resnet20]
    topologies: [dense, hard]
    multipliers: [axmoe8]               # names, presets (axmoe8, pareto-mae) or families
    retrained: [no, yes]                # approximate-aware retraining (train.retrain); default [no]
    backends: [ort, tvm]                # what `eval run --backend` runs the cells on; default [ort]
    retrain_multipliers: [mul8s_1L2L]   # optional: only these get retrained cells
    workers: 2                          # default of --workers
    train:   {epochs: 1, model_opt: {width: 16}}   # `python -m train` options (dest names)
    export:  {calib_samples: 256}                  # `python -m export.to_onnx` options
    retrain: {epochs: 0.2, lr: 0.01}               # train.retrain.retrain_approx options
    eval:    {limit: 2000, batch: 100}             # `python -m eval run` options

The axes (archs ... backends, declared in `eval.axes`) multiply into the cells. Option
sections use the commands' own option names and are checked against their parsers, so a
sweep and a command line can't drift apart. Every model is trained and exported once and
shared by its cells.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from eval import axes
from eval.axes import SweepConfigError, as_list, parse_multipliers, suggest

__all__ = ["SweepConfig", "SweepConfigError", "check_options", "config_hash", "load_config", "to_argv"]

#: options the sweep sets itself, per command: its own, and those an axis is passed as
RESERVED = {command: own | {a.option for a in axes.AXES if a.stage == command and a.option} for command, own in {
    "train": {"arch", "topology", "dataset", "out", "resume", "config", "progress", "threads", "init_from"},
    "export": {"checkpoint", "out", "dataset", "json", "fp32_only", "arch", "topology"},
    "eval": {"model", "dataset", "json", "progress"},
}.items()}
RETRAIN_OPTIONS = {"epochs", "batch_size", "lr", "momentum", "weight_decay", "max_steps", "calib_samples", "seed"}
SECTIONS = ("train", "export", "retrain", "eval")
TOP_KEYS = {"name", "out", "dataset", *axes.YAML_KEYS, "retrain_multipliers", "workers", "threads", *SECTIONS}


def _parser(command: str) -> argparse.ArgumentParser:
    if command == "train":
        from train.args import create_args_parser
    elif command == "export":
        from export.to_onnx import create_args_parser
    else:
        from eval.run_args import create_args_parser
    return create_args_parser()


def to_argv(command: str, options: Mapping[str, Any]) -> list[str]:
    """Command-line flags of `command` for `options` (dest names): booleans switch flags,
    `model_opt` may be a mapping, lists join with commas."""
    parser = _parser(command)
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []
    for key, value in options.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            raise SweepConfigError(f"{command}: unknown option {key!r}{suggest(key, actions)}")
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if bool(value) != bool(action.default):
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            items = value.items() if isinstance(value, Mapping) else [(None, v) for v in as_list(value, key)]
            for k, v in items:
                argv += [flag, f"{k}={json.dumps(v) if not isinstance(v, str) else v}" if k else str(v)]
        elif value is None:
            continue
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def check_options(command: str, options: Mapping[str, Any]) -> None:
    reserved = set(options) & RESERVED[command]
    if reserved:
        raise SweepConfigError(f"{command}: {', '.join(sorted(reserved))} is set by the sweep itself")
    to_argv(command, options)


def config_hash(spec: Mapping[str, Any]) -> str:
    """12 hex digits of SHA-1 over the canonical JSON of a job spec."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SweepConfig:
    name: str                                  # report title
    out: Path                                  # output folder
    dataset: str                               # data every stage uses
    axes: dict[str, tuple]                     # axis name -> its values, in eval.axes.AXES order
    retrain_multipliers: tuple[str, ...] | None = None  # retrained cells only for these (None: all)
    workers: int | None = None                 # default process-pool / Ray parallelism
    threads: int | None = None                 # threads per job (default: cores / workers)
    train: dict = field(default_factory=dict)  # python -m train options
    export: dict = field(default_factory=dict)  # python -m export.to_onnx options
    retrain: dict = field(default_factory=dict)  # retrain_approx options
    eval: dict = field(default_factory=dict)   # python -m eval run options

    def check(self) -> None:
        """Check every axis and option against the model zoo, the commands' parsers and this
        machine (this imports torch and the model zoo, so a cached sweep that only re-renders
        skips it)."""
        for axis in axes.AXES:
            if axis.check is not None:
                axis.check(self.axes[axis.name], axis.key)
        for command in ("train", "export", "eval"):
            check_options(command, getattr(self, command))
        unknown = set(self.retrain) - RETRAIN_OPTIONS
        if unknown:
            raise SweepConfigError(f"retrain: unknown option(s) {', '.join(sorted(unknown))} "
                                   f"(valid: {', '.join(sorted(RETRAIN_OPTIONS))})")

    def cells(self) -> list[dict[str, Any]]:
        """Every cell {axis name: value}, in report order: the product of the axes' values
        (`eval.axes.nesting`), retrained cells only for `retrain_multipliers`."""
        order = axes.nesting()
        out = []
        for values in itertools.product(*(self.axes[a.name] for a in order)):
            cell = dict(zip((a.name for a in order), values))
            if cell["retrained"] and self.retrain_multipliers is not None and \
                    cell["multiplier"] not in self.retrain_multipliers:
                continue
            out.append({a.name: cell[a.name] for a in axes.AXES})
        return out

    def swept(self) -> tuple[axes.Axis, ...]:
        """The axes this sweep names: all but those left at their implicit value."""
        return tuple(a for a in axes.AXES if not a.is_implicit(self.axes[a.name]))

    def resolved(self) -> dict[str, Any]:
        """The config as plain data (OUT/sweep.yaml): axes under their YAML keys."""
        return {"name": self.name, "out": str(self.out), "dataset": self.dataset,
                **{a.key: list(self.axes[a.name]) for a in self.swept()},
                "retrain_multipliers": None if self.retrain_multipliers is None else list(self.retrain_multipliers),
                "workers": self.workers, "threads": self.threads,
                **{section: getattr(self, section) for section in SECTIONS}}


def load_config(path: str | Path, out: str | Path | None = None, check: bool = True) -> SweepConfig:
    """Parse a sweep YAML (see module docstring); `check`: also `SweepConfig.check()` it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SweepConfigError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SweepConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{path}: expected a mapping")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise SweepConfigError(f"{path}: unknown key {key!r}{suggest(key, TOP_KEYS)}")
    name = str(raw.get("name") or path.stem)
    sections = {}
    for section in SECTIONS:
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            raise SweepConfigError(f"{section}: expected a mapping of options")
        sections[section] = value
    retrain_mults = raw.get("retrain_multipliers")
    config = SweepConfig(
        name=name,
        out=Path(out or raw.get("out") or Path("out") / name),
        dataset=str(raw.get("dataset", "fashion-mnist")),
        axes={axis.name: axis.values(raw) for axis in axes.AXES},
        retrain_multipliers=None if retrain_mults is None else
        parse_multipliers(as_list(retrain_mults, "retrain_multipliers"), "retrain_multipliers"),
        workers=int(raw["workers"]) if raw.get("workers") else None,
        threads=int(raw["threads"]) if raw.get("threads") else None,
        **sections,
    )
    if check:
        config.check()
    return config

"""Sweep configuration: a YAML study expanded into jobs.

    name: demo                          # report title (default: the file's stem)
    out: out/demo                       # jobs/, results.{csv,json}, report/ (default out/<name>)
    dataset: fashion-mnist
    archs: [resnet20]
    topologies: [dense, hard]
    multipliers: [axmoe8]               # names, presets (axmoe8, pareto-mae) or families
    retrained: [no, yes]                # approximate-aware retraining (train.retrain)
    retrain_multipliers: [mul8s_1L2L]   # optional: only these get retrained cells
    workers: 2                          # default of --workers
    train:   {epochs: 1, model_opt: {width: 16}}   # `python -m train` options (dest names)
    export:  {calib_samples: 256}                  # `python -m export.to_onnx` options
    retrain: {epochs: 0.2, lr: 0.01}               # train.retrain.retrain_approx options
    eval:    {limit: 2000, batch: 100}             # `python -m eval run` options

The cross product archs x topologies x multipliers x retrained gives the cells. Option
sections use the commands' own option names and are checked against their parsers, so a
sweep and a command line can't drift apart. Every model is trained and exported once and
shared by its cells.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

import multipliers

#: options the sweep sets itself, per command
RESERVED = {
    "train": {"arch", "topology", "dataset", "out", "resume", "config", "progress", "threads", "init_from"},
    "export": {"checkpoint", "out", "dataset", "json", "fp32_only", "arch", "topology"},
    "eval": {"model", "dataset", "json", "progress", "backend"},
}
RETRAIN_OPTIONS = {"epochs", "batch_size", "lr", "momentum", "weight_decay", "max_steps", "calib_samples", "seed"}
TOP_KEYS = {"name", "out", "dataset", "archs", "topologies", "multipliers", "retrained", "retrain_multipliers",
            "workers", "threads", "train", "export", "retrain", "eval"}


class SweepConfigError(ValueError):
    pass


def _suggest(key: str, valid) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _list(value: Any, key: str) -> list:
    if value is None:
        raise SweepConfigError(f"{key}: required")
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SweepConfigError(f"{key}: empty list")
    return values


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
            raise SweepConfigError(f"{command}: unknown option {key!r}{_suggest(key, actions)}")
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if bool(value) != bool(action.default):
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            items = value.items() if isinstance(value, Mapping) else [(None, v) for v in _list(value, key)]
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


def _power_key(name: str) -> tuple[int, float]:
    power = multipliers.get(name).power_mW
    return (0, -power) if power is not None else (1, 0.0)


@dataclass(frozen=True)
class SweepConfig:
    name: str                                  # report title
    out: Path                                  # output folder
    dataset: str                               # data every stage uses
    archs: tuple[str, ...]                     # architectures
    topologies: tuple[str, ...]                # dense | hard | soft | cluster
    multipliers: tuple[str, ...]               # canonical names, ordered by power (highest first)
    retrained: tuple[bool, ...]                # False: as exported; True: retrained under the multiplier
    retrain_multipliers: tuple[str, ...] | None = None  # retrained cells only for these (None: all)
    workers: int | None = None                 # default process-pool / Ray parallelism
    threads: int | None = None                 # threads per job (default: cores / workers)
    train: dict = field(default_factory=dict)  # python -m train options
    export: dict = field(default_factory=dict)  # python -m export.to_onnx options
    retrain: dict = field(default_factory=dict)  # retrain_approx options
    eval: dict = field(default_factory=dict)   # python -m eval run options

    def check(self) -> None:
        """Check archs, topologies and every option against the commands' parsers (this
        imports torch and the model zoo, so a cached sweep that only re-renders skips it)."""
        import models

        for arch in self.archs:
            if arch not in models.list_archs():
                raise SweepConfigError(f"archs: unknown {arch!r}{_suggest(arch, models.list_archs())}")
        for topo in self.topologies:
            if topo not in models.list_topologies():
                raise SweepConfigError(f"topologies: unknown {topo!r}{_suggest(topo, models.list_topologies())}")
        for command in ("train", "export", "eval"):
            check_options(command, getattr(self, command))
        unknown = set(self.retrain) - RETRAIN_OPTIONS
        if unknown:
            raise SweepConfigError(f"retrain: unknown option(s) {', '.join(sorted(unknown))} "
                                   f"(valid: {', '.join(sorted(RETRAIN_OPTIONS))})")

    def cells(self) -> list[dict[str, Any]]:
        """(arch, topology, multiplier, retrained) of every cell, in report order."""
        out = []
        for arch in self.archs:
            for topo in self.topologies:
                for retrained in self.retrained:
                    for mult in self.multipliers:
                        if retrained and self.retrain_multipliers is not None and mult not in self.retrain_multipliers:
                            continue
                        out.append({"arch": arch, "topology": topo, "multiplier": mult, "retrained": retrained})
        return out


def _resolve_multipliers(values: list, key: str) -> tuple[str, ...]:
    try:
        names = [m.name for m in multipliers.resolve_many([str(v) for v in values])]
    except multipliers.UnknownMultiplierError as exc:
        raise SweepConfigError(f"{key}: {exc}") from None
    return tuple(sorted(dict.fromkeys(names), key=_power_key))


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("yes", "true", "on", "1"):
        return True
    if str(value).lower() in ("no", "false", "off", "0"):
        return False
    raise SweepConfigError(f"{key}: expected yes/no, got {value!r}")


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
        raise SweepConfigError(f"{path}: unknown key {key!r}{_suggest(key, TOP_KEYS)}")
    name = str(raw.get("name") or path.stem)
    sections = {}
    for section in ("train", "export", "retrain", "eval"):
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            raise SweepConfigError(f"{section}: expected a mapping of options")
        sections[section] = value
    retrain_mults = raw.get("retrain_multipliers")
    config = SweepConfig(
        name=name,
        out=Path(out or raw.get("out") or Path("out") / name),
        dataset=str(raw.get("dataset", "fashion-mnist")),
        archs=tuple(str(a) for a in _list(raw.get("archs"), "archs")),
        topologies=tuple(str(t) for t in _list(raw.get("topologies"), "topologies")),
        multipliers=_resolve_multipliers(_list(raw.get("multipliers"), "multipliers"), "multipliers"),
        retrained=tuple(dict.fromkeys(_bool(v, "retrained") for v in _list(raw.get("retrained", [False]), "retrained"))),
        retrain_multipliers=None if retrain_mults is None else
        _resolve_multipliers(_list(retrain_mults, "retrain_multipliers"), "retrain_multipliers"),
        workers=int(raw["workers"]) if raw.get("workers") else None,
        threads=int(raw["threads"]) if raw.get("threads") else None,
        **sections,
    )
    if check:
        config.check()
    return config

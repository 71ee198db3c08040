"""The `axmoe.*` metadata of a model file: every key, its type, and typed read/write.

An ONNX model carries string key/value pairs (`ModelProto.metadata_props`). axmoe writes
these keys (the exporter the first eight, the pass `plan`, `assignment` and
`compensation`) and every package reads them through this module only:

    key                 type   written by   meaning
    axmoe.arch          str    export       architecture ("resnet20", ...)
    axmoe.topology      str    export       MoE topology ("dense", "hard", ...)
    axmoe.num_classes   int    export       classifier outputs
    axmoe.experts       int    export       experts per MoE layer (0: dense)
    axmoe.options       json   export       model options (dict)
    axmoe.dataset       str    export       training dataset name
    axmoe.data          json   export       preprocessing record (dict)
    axmoe.version       str    export       axmoe package version
    axmoe.calibration   str    export       calibration method
    axmoe.quantization  str    export       quantization scheme
    axmoe.plan          json   passes       the plan the pass applied (dict)
    axmoe.assignment    json   passes       node -> {multiplier, lowering, ...} (dict)
    axmoe.compensation  json   passes       error compensation: mode, calibration, per-node corrections

    meta = read(model)                      # {"arch": "resnet20", "experts": 4, ...}, typed
    get(model, ASSIGNMENT, {})              # one key, decoded, with a default
    write(model, {PLAN: plan, ASSIGNMENT: assignment})   # encode and set (replacing)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import onnx

PREFIX = "axmoe."


@dataclass(frozen=True)
class Key:
    """One metadata key: its full name and how its value is written as a string."""
    name: str                             # full key, "axmoe.arch"
    encode: Callable[[Any], str]          # value -> stored string
    decode: Callable[[str], Any]          # stored string -> value
    kind: str = "text"                    # what the stored string is, for errors: text | an integer | JSON

    @property
    def short(self) -> str:
        return self.name.removeprefix(PREFIX)


def _json_encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _str_key(short: str) -> Key:
    return Key(PREFIX + short, str, str)


def _int_key(short: str) -> Key:
    return Key(PREFIX + short, lambda v: str(int(v)), int, "an integer")


def _json_key(short: str) -> Key:
    return Key(PREFIX + short, _json_encode, json.loads, "JSON")


ARCH = _str_key("arch")
TOPOLOGY = _str_key("topology")
NUM_CLASSES = _str_key("num_classes")   # written as str(None) when a config has none
EXPERTS = _int_key("experts")
OPTIONS = _json_key("options")
DATASET = _str_key("dataset")
DATA = _json_key("data")
VERSION = _str_key("version")
CALIBRATION = _str_key("calibration")
QUANTIZATION = _str_key("quantization")
PLAN = _json_key("plan")
ASSIGNMENT = _json_key("assignment")
COMPENSATION = _json_key("compensation")

KEYS: tuple[Key, ...] = (ARCH, TOPOLOGY, NUM_CLASSES, EXPERTS, OPTIONS, DATASET, DATA, VERSION,
                         CALIBRATION, QUANTIZATION, PLAN, ASSIGNMENT, COMPENSATION)
_BY_NAME = {k.name: k for k in KEYS}


class MetadataError(ValueError):
    """A metadata value that does not decode as its key's type (names the key)."""


def raw(model: onnx.ModelProto) -> dict[str, str]:
    """Every metadata pair of `model` as stored (all keys, not only axmoe's)."""
    return {p.key: p.value for p in model.metadata_props}


def _decode(key: Key, value: str) -> Any:
    try:
        return key.decode(value)
    except (ValueError, TypeError) as exc:
        raise MetadataError(f"model metadata {key.name}={value[:60]!r} is not {key.kind} ({exc})") from None


def get(model: onnx.ModelProto, key: Key, default: Any = None) -> Any:
    """The decoded value of `key`, or `default` when the model does not have it."""
    for prop in model.metadata_props:
        if prop.key == key.name:
            return _decode(key, prop.value)
    return default


def has(model: onnx.ModelProto, key: Key) -> bool:
    return any(p.key == key.name for p in model.metadata_props)


def read(model: onnx.ModelProto) -> dict[str, Any]:
    """The axmoe keys `model` has, decoded, by short name ("arch", "experts", ...)."""
    out = {}
    for prop in model.metadata_props:
        key = _BY_NAME.get(prop.key)
        if key is not None:
            out[key.short] = _decode(key, prop.value)
    return out


def write(model: onnx.ModelProto, values: Mapping[Key, Any]) -> None:
    """Encode and set each value, replacing the key's old value; other keys keep their order."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        text = key.encode(value)
        if key.name in existing:
            existing[key.name].value = text
        else:
            model.metadata_props.add(key=key.name, value=text)

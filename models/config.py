"""Construction configs as plain data.

A model is fully described by `{"arch", "topology", "num_classes", "options"}` where `options`
holds only JSON types (int, float, bool, str, None, lists). `models.create(**config)` rebuilds
it; a checkpoint carries the same dict, so `torch.load(weights_only=True)` can read it.

Options are declared as dataclasses (one field per option, with its default); this module
turns user keyword options into such a dataclass, checking names and types, and back into
plain data.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")


class ModelConfigError(ValueError):
    """An unknown arch/topology/option or an invalid option value. The message is one line
    and names the valid choices."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """`"; did you mean 'x'"` when a valid name is close to `name`, else `""`."""
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(owner: str, name: str, kind: Any, value: Any) -> Any:
    """Check `value` against the annotation `kind` (int, float, bool, str, tuple[int, ...],
    Optional[...]) and return it in canonical form (tuples for sequences)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(owner, name, inner[0], value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ModelConfigError(f"{owner}: option {name!r} must be a list of {args[0].__name__}, "
                                   f"got {value!r}")
        return tuple(_coerce(owner, name, args[0], v) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ModelConfigError(f"{owner}: option {name!r} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelConfigError(f"{owner}: option {name!r} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelConfigError(f"{owner}: option {name!r} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ModelConfigError(f"{owner}: option {name!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported option annotation {kind!r} for {name}")


def coerce_options(cls: type, owner: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Type-check `options` against the fields of the dataclass `cls`, rejecting unknown names.

    Args:
        cls: a dataclass whose fields are the valid options.
        owner: what the options belong to, for messages (e.g. "resnet20/hard").
        options: user keyword options.

    Returns:
        the options in canonical form (floats for float fields, tuples for lists).
    """
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in options if k not in fields]
    if unknown:
        valid = ", ".join(fields) or "none"
        raise ModelConfigError(f"{owner}: unknown option {unknown[0]!r}{suggest(unknown[0], fields)} "
                               f"(valid options: {valid})")
    return {k: _coerce(owner, k, hints[k], v) for k, v in options.items()}


def build_options(cls: type[T], owner: str, options: Mapping[str, Any]) -> T:
    """Instantiate the options dataclass `cls` from type-checked `options`."""
    return cls(**coerce_options(cls, owner, options))


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and mappings to dicts and lists of JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value

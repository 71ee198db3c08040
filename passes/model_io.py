"""Reading and writing the model files of the approximation pass, with the checks that turn a
bad input into one clear error (`ModelFileError`) instead of a traceback further down.

    load(path)         the ModelProto of `path`, its external data read from the model's folder
    save(model, path)  one file, or OUT + OUT.data (external data) when one file cannot hold it

`load` refuses, each with a one-line message: a missing file, a file that is not an ONNX
model (truncated, corrupt, or something else), a model without an ai.onnx opset import or
below `MIN_OPSET` (per-channel DequantizeLinear, the weight encoding of every quantized form,
is opset 13), and an external-data tensor whose file is missing, outside the model's folder
or shorter than the tensor. Tensors stored as external data are read relative to the model's
folder, whatever the working directory.

`save` writes the tensors of a model whose serialization exceeds `MAX_PROTO_BYTES` (the 2 GB
protobuf limit) to `OUT.name + ".data"` next to OUT, the layout onnxruntime and `load` read.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

#: The oldest ai.onnx opset the pass reads (DequantizeLinear's per-channel `axis` is opset 13).
MIN_OPSET = 13
#: Largest serialized model written as one file; above it tensors go to OUT.data. A module
#: constant, so tests can lower it instead of building a 2 GB model.
MAX_PROTO_BYTES = (1 << 31) - 1
#: Tensors below this many bytes stay inside the model file when external data is written.
INLINE_TENSOR_BYTES = 1024


class ModelFileError(ValueError):
    """A model file the pass cannot read or write; the message is one line naming the file."""


def load(path: str | os.PathLike) -> onnx.ModelProto:
    """The model of `path`, external data loaded from the model's folder (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # protobuf's DecodeError, or onnx refusing what it parsed
        raise ModelFileError(f"{path}: not an ONNX model (truncated or corrupt file: {_first_line(exc)})") from None
    if not model.HasField("graph") or not model.opset_import:
        missing = "graph" if not model.HasField("graph") else "opset_import"
        raise ModelFileError(f"{path}: not an ONNX model (no {missing}: truncated or corrupt file?)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelFileError(f"{path}: no ai.onnx opset import (the pass needs opset {MIN_OPSET} or newer)")
    if opset < MIN_OPSET:
        raise ModelFileError(f"{path}: opset {opset} is below the minimum, {MIN_OPSET}: convert it first "
                             f"(onnx.version_converter.convert_version(model, {MIN_OPSET}))")
    _load_external_data(model, path)
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    folder = path.resolve().parent
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: tensor {tensor.name!r}: external data file {location!r}"
        file = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not file.is_relative_to(folder):
            raise ModelFileError(f"{where} is not inside the model's folder {folder}")
        if not file.is_file():
            raise ModelFileError(f"{where} not found in the model's folder {folder}")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise ModelFileError(f"{where}: offset / length are not integers") from None
        size = file.stat().st_size
        if offset > size or (length >= 0 and offset + length > size):
            raise ModelFileError(f"{where} is truncated ({size} bytes, the tensor needs bytes "
                                 f"{offset}..{offset + max(length, 0)})")
    try:
        external_data_helper.load_external_data_for_model(model, str(folder))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ModelFileError(f"{path}: cannot read external data: {_first_line(exc)}") from None


def save(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write `model` to `path` (its folder created), with external data in `path.name + ".data"`
    when the model serializes to more than `MAX_PROTO_BYTES`; then the model's large tensors
    refer to that file, as `onnx.save_model` leaves them. Returns the path written."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if model.ByteSize() > MAX_PROTO_BYTES:
            data = path.with_name(path.name + ".data")
            data.unlink(missing_ok=True)  # onnx appends to an existing data file
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data.name, size_threshold=INLINE_TENSOR_BYTES)
        else:
            onnx.save_model(model, str(path))
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

"""Activation statistics of the approximable ops of an int8 model, for error compensation.

    images, source = calibration_images(model, n=512)   # the model's dataset, train split
    stats = collect(model, images, source=source)         # runs the EXACT int8 model in onnxruntime
    stats = statistics(model, "fashion-mnist:256")       # the same from a "DATASET[:N]" spec
    stats[node].hist                                      # int64 (C, taps, 256)

For every candidate op (every `IntegerOp` the rules of `passes.rules` accept) the quantized
activation tensor it reads becomes an extra graph output; the signed operand a = q - zp of
each product is counted, per input channel c and kernel tap t, into `hist[c, t, a + 128]`
(matmul: c is the K index, one tap). For a convolution every product position is counted,
the padded ones as a = 0: ConvInteger pads with the zero point, so a padded tap still sends
a = 0 through the multiplier, and M(0, w) need not be 0. Counting per tap makes the border
handling exact in expectation: a corner tap sees more padding than the centre tap, and
sum over (c, t) of E_{hist[c, t]}[M(a, w) - a w] is exactly the mean error the accumulator of
one output position collects, averaged over positions and images.

Experts of an MoE layer read only the rows routed to them (sparse dispatch: the expert's
input is a Gather of the routed rows), so their statistics are routed-rows-only by
construction; `rows` says how many rows each op saw.

`linear` compensation (a least-squares fit of the per-output error on S, the sum of the
activations of one output's receptive field) needs S and the error jointly, which per-channel
histograms do not keep. `collect(..., pixels=P)` therefore also keeps, per op, a uniform
random sample (without replacement, over every output position of every image / routed row /
token row the op saw) of P receptive fields: `patches` int8 (P, C, taps), the signed a of each
product, padding as 0 (matmul: (P, K, 1), one row each). The sample is drawn with a fixed seed
per op (a random key per position, the P smallest kept), so statistics are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from modelfile import metadata
from passes.candidates import IntegerOp
from passes.rules import find_candidates

DEFAULT_IMAGES = 512
BATCH = 64
#: receptive fields sampled per op for the `linear` mode's least-squares fit
LINEAR_PIXELS = 4096
_SEED = 1601


class CompensationError(ValueError):
    """A compensation request that cannot be carried out (one line, for the user)."""


@dataclass
class NodeStats:
    """The activation histogram of one op."""

    node: str
    kind: str  # conv | matmul
    hist: np.ndarray  # int64 (C, taps, 256): count of a = q - zp at index a + 128
    rows: int = 0  # batch rows the op saw (images, routed rows, or token rows for matmul)
    patches: np.ndarray | None = None  # int8 (P, C, taps): sampled receptive fields (collect(pixels=P))
    keys: np.ndarray | None = field(default=None, repr=False)  # their sampling keys (float64 (P,))

    @property
    def channel_hist(self) -> np.ndarray:
        """(C, 256): every tap of each input channel together."""
        return self.hist.sum(axis=1)

    @property
    def samples(self) -> int:
        """Products counted per (channel, tap): the same for every one of them."""
        return int(self.hist[0, 0].sum()) if self.hist.size else 0


@dataclass
class ActivationStats:
    """Per-op statistics, keyed by node name, and where they came from."""

    nodes: dict[str, NodeStats] = field(default_factory=dict)
    source: dict = field(default_factory=dict)  # {"dataset", "split", "n"} when known

    def __getitem__(self, name: str) -> NodeStats:
        return self.nodes[name]

    def __contains__(self, name: str) -> bool:
        return name in self.nodes


# ------------------------------------------------------------------------------ images
def calibration_images(model: onnx.ModelProto, dataset: str | None = None, n: int = DEFAULT_IMAGES,
                       split: str = "train", root=None) -> tuple[np.ndarray, dict]:
    """(images float32 (n, 3, S, S) preprocessed, source record) for calibrating `model`.

    The model's own dataset (its `axmoe.data` record) is presented as training presented it
    (its image size, mean, std); another dataset is taken at its own size, which must then
    match the model input. Raises CompensationError (one line) for n <= 0, no dataset, an
    unknown or unreachable dataset, or images of the wrong size.
    """
    from models.datasets import DatasetNotFoundError, UnknownDatasetError, dataset_spec, load_dataset, preprocess

    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise CompensationError(f"calibration needs at least one image (got N = {n})")
    data = metadata.get(model, metadata.DATA, {}) or {}
    own = data.get("dataset") or metadata.get(model, metadata.DATASET, "") or None
    name = dataset or own
    if not name:
        raise CompensationError("no calibration data: the model names no dataset (axmoe.data); pass one")
    try:
        spec = dataset_spec(name)
        is_own = own is not None and own in (name, spec.name)
    except UnknownDatasetError as exc:
        raise CompensationError(str(exc)) from None
    size = model_image_size(model)
    image_size = int(data.get("image_size", size or spec.size)) if is_own else spec.size
    if size is not None and image_size != size:
        raise CompensationError(f"dataset {spec.name} has {image_size}x{image_size} images, "
                                f"the model takes {size}x{size}")
    try:
        images = load_dataset(spec.name, split, image_size=image_size, root=root, limit=int(n))
    except (DatasetNotFoundError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CompensationError(f"calibration data {spec.name}/{split} not reachable: {first}") from None
    config = {**images.config(), **({k: data[k] for k in ("mean", "std") if k in data} if is_own else {})}
    x = preprocess(images.images, config).numpy().astype(np.float32)
    return x, {"dataset": spec.name, "split": split, "n": int(x.shape[0])}


def model_image_size(model: onnx.ModelProto) -> int | None:
    """The side of the model's (N, C, S, S) input, when it is static."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[-1].HasField("dim_value"):
        return None
    return int(dims[-1].dim_value)


def parse_spec(spec: str | None) -> tuple[str | None, int]:
    """(dataset or None for the model's own, N) of a "DATASET[:N]" (or ":N") spec; None is the
    default, the model's dataset and `DEFAULT_IMAGES`. Raises CompensationError (one line)."""
    if spec is None:
        return None, DEFAULT_IMAGES
    name, sep, count = str(spec).strip().partition(":")
    n = DEFAULT_IMAGES
    if sep:
        try:
            n = int(count)
        except ValueError:
            raise CompensationError(f"calibration {spec!r}: N must be a whole number of images (DATASET[:N]), "
                                    f"got {count!r}") from None
        if n <= 0:
            raise CompensationError(f"calibration {spec!r}: needs at least one image (got N = {n})")
    if name:
        from models.datasets import UnknownDatasetError, dataset_spec

        try:
            dataset_spec(name)
        except UnknownDatasetError as exc:
            raise CompensationError(f"calibration {spec!r}: {exc}") from None
    return name or None, n


def statistics(model: onnx.ModelProto, calibration=None, threads: int | None = None,
               pixels: int = 0) -> ActivationStats:
    """`collect` on the images `calibration` names: a "DATASET[:N]" spec or None (`parse_spec`,
    `calibration_images`: train split), or preprocessed images (N, C, S, S) themselves."""
    if calibration is not None and not isinstance(calibration, str):
        images = np.asarray(calibration, dtype=np.float32)
        return collect(model, images, threads=threads, pixels=pixels,
                       source={"n": int(images.shape[0]) if images.ndim else 0})
    dataset, n = parse_spec(calibration)
    images, source = calibration_images(model, dataset, n=n)
    return collect(model, images, threads=threads, source=source, pixels=pixels)


# ---------------------------------------------------------------------------- counting
def conv_histogram(a: np.ndarray, attributes: dict) -> np.ndarray:
    """(C, taps, 256) counts of the signed activations `a` (N, C, *S) each kernel tap reads,
    padded positions as a = 0 (see module docstring)."""
    spatial = a.ndim - 2
    kernel, strides = attributes["kernel_shape"], attributes["strides"]
    pads, dilations = attributes["pads"], attributes["dilations"]
    padded = np.pad(a.astype(np.int16), [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    out = [(padded.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(spatial)]
    channels = a.shape[1]
    offsets = (np.arange(channels, dtype=np.int64) * 256).reshape((1, channels) + (1,) * spatial)
    taps = []
    for tap in np.ndindex(*kernel):
        index = tuple(slice(tap[i] * dilations[i], tap[i] * dilations[i] + strides[i] * (out[i] - 1) + 1, strides[i])
                      for i in range(spatial))
        window = padded[(slice(None), slice(None)) + index]
        taps.append(np.bincount((window + 128 + offsets).ravel(), minlength=channels * 256).reshape(channels, 256))
    return np.stack(taps, axis=1).astype(np.int64)


def matmul_histogram(a: np.ndarray) -> np.ndarray:
    """(K, 1, 256) counts of the signed activations `a` (..., K) per K index."""
    k = a.shape[-1]
    flat = a.reshape(-1, k).astype(np.int64) + 128 + np.arange(k, dtype=np.int64) * 256
    return np.bincount(flat.ravel(), minlength=k * 256).reshape(k, 1, 256)


def conv_patches(a: np.ndarray, attributes: dict, positions: np.ndarray) -> np.ndarray:
    """int8 (P, C, taps) receptive fields of the flat output positions `positions` (index into
    (N, *out)) of a conv reading the signed activations `a` (N, C, *S), padding as 0."""
    spatial = a.ndim - 2
    kernel, strides = attributes["kernel_shape"], attributes["strides"]
    pads, dilations = attributes["pads"], attributes["dilations"]
    padded = np.pad(a.astype(np.int8), [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    out = [(padded.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(spatial)]
    index = np.unravel_index(positions, (a.shape[0], *out))
    taps = []
    for tap in np.ndindex(*kernel):
        where = tuple(index[1 + i] * strides[i] + tap[i] * dilations[i] for i in range(spatial))
        taps.append(padded[(index[0][:, None], np.arange(a.shape[1])[None, :], *(w[:, None] for w in where))])
    return np.stack(taps, axis=2)  # (P, C, taps)


def output_positions(op: IntegerOp, q: np.ndarray) -> int:
    """Output positions of one batch: rows x output pixels (conv) or rows (matmul)."""
    if op.kind == "matmul":
        return int(np.prod(q.shape[:-1]))
    spatial = q.ndim - 2
    at = op.attributes
    size = 1
    for i in range(spatial):
        extent = q.shape[2 + i] + at["pads"][i] + at["pads"][i + spatial]
        size *= (extent - at["dilations"][i] * (at["kernel_shape"][i] - 1) - 1) // at["strides"][i] + 1
    return int(q.shape[0]) * size


def sample_patches(op: IntegerOp, q: np.ndarray, entry: NodeStats, pixels: int, rng: np.random.Generator) -> None:
    """Merge this batch's receptive fields into `entry`'s uniform sample of `pixels` (module docstring)."""
    count = output_positions(op, q)
    if count == 0:
        return
    keys = rng.random(count)
    take = np.argsort(keys, kind="stable")[:pixels]
    a = q.astype(np.int16) - op.x_zero_point
    if op.kind == "conv":
        patches = conv_patches(a, op.attributes, take)
    else:
        patches = a.reshape(-1, a.shape[-1])[take].astype(np.int8)[:, :, None]
    if entry.patches is None:
        entry.patches, entry.keys = patches, keys[take]
        return
    all_keys = np.concatenate([entry.keys, keys[take]])
    keep = np.argsort(all_keys, kind="stable")[:pixels]
    entry.patches, entry.keys = np.concatenate([entry.patches, patches])[keep], all_keys[keep]


def histogram(op: IntegerOp, q: np.ndarray) -> np.ndarray:
    """The (C, taps, 256) histogram of one batch of the op's quantized input `q`."""
    a = q.astype(np.int16) - op.x_zero_point
    return conv_histogram(a, op.attributes) if op.kind == "conv" else matmul_histogram(a)


def _empty(op: IntegerOp) -> np.ndarray:
    if op.kind == "conv":
        channels, taps = op.weight.shape[1] * int(op.attributes.get("group", 1)), int(np.prod(op.weight.shape[2:]))
    else:
        channels, taps = op.weight.shape[0], 1
    return np.zeros((channels, taps, 256), np.int64)


def candidates(model: onnx.ModelProto) -> list[IntegerOp]:
    """The ops the approximation pass would rewrite, in topological order."""
    return [c for _, c in find_candidates(ir.from_proto(model).graph) if isinstance(c, IntegerOp)]


def collect(model: onnx.ModelProto, images: np.ndarray, batch: int = BATCH, threads: int | None = None,
            source: dict | None = None, pixels: int = 0) -> ActivationStats:
    """Histograms of every candidate op's signed activation over `images`, from the exact
    int8 `model` run in onnxruntime, and with `pixels` > 0 a sample of that many receptive
    fields per op (see module docstring)."""
    from runtime.ort import session

    if not isinstance(pixels, (int, np.integer)) or isinstance(pixels, bool) or pixels < 0:
        raise CompensationError(f"pixels must be a whole number >= 0 (got {pixels!r})")

    images = np.asarray(images)
    if images.ndim == 0 or images.shape[0] == 0:
        raise CompensationError("calibration needs at least one image (got N = 0)")
    ops = candidates(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_inputs = [i.name for i in probe.graph.input if i.name not in {t.name for t in probe.graph.initializer}]
    if len(graph_inputs) != 1:
        raise CompensationError(f"calibration runs models with one input, this one has {len(graph_inputs)}")
    outputs = {o.name for o in probe.graph.output}
    for op in ops:
        name = op.x.name
        if name not in outputs and name not in graph_inputs:
            dtype = onnx.TensorProto.UINT8 if op.x_zero_point == 128 else onnx.TensorProto.INT8
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, dtype, None))
            outputs.add(name)
    sess = session(probe.SerializeToString(), threads=threads)
    declared = sess.get_inputs()[0]
    expected = [d if isinstance(d, int) else None for d in declared.shape]
    if len(expected) != images.ndim or any(e is not None and e != s for e, s in zip(expected[1:], images.shape[1:])):
        raise CompensationError(f"calibration images of shape {tuple(images.shape[1:])}, the model takes "
                                f"{tuple('?' if e is None else e for e in expected[1:])}")
    wanted = sorted({op.x.name for op in ops if op.x.name not in graph_inputs})
    stats = {op.name: NodeStats(op.name, op.kind, _empty(op)) for op in ops}
    rngs = {op.name: np.random.default_rng([_SEED, i]) for i, op in enumerate(ops)}
    for start in range(0, images.shape[0], batch):
        x = images[start:start + batch]
        values = dict(zip(wanted, sess.run(wanted, {declared.name: x}))) if wanted else {}
        values.update({name: x for name in graph_inputs})
        for op in ops:
            q = values[op.x.name]
            entry = stats[op.name]
            if q.shape[0] == 0:
                continue
            counted = histogram(op, q)
            entry.hist += counted
            if pixels:
                sample_patches(op, q, entry, int(pixels), rngs[op.name])
            entry.rows += int(np.prod(q.shape[:-1])) if op.kind == "matmul" else int(q.shape[0])
    return ActivationStats(stats, dict(source or {"n": int(images.shape[0])}))

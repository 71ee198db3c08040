"""A corpus of third-party-style int8 models: small float CNNs and a transformer block built
here in torch, exported with `torch.onnx.export` (opset 17) and quantized by onnxruntime's own
quantizer (`quantize_static`), as a user brings them to the pass.

    float_model(name)                      -> onnx.ModelProto (fp32, input "input")
    quantized(name, fmt, activation, per_channel)
                                           -> onnx.ModelProto (QDQ or QOperator, QUInt8 / QInt8)

Every architecture is a structure the pass has to leave valid: residual adds, grouped and
depthwise convs, a channel shuffle (Reshape / Transpose between quantized convs), concatenating
branches (Inception), a dense block (DenseNet concat), a Gemm classifier, and a transformer
block (MatMul + Softmax + LayerNorm, activation x activation products included).
"""

from __future__ import annotations

import functools
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

IMAGE = (1, 3, 16, 16)
TOKENS = (1, 8, 16)  # batch, sequence, embedding
CALIBRATION_SAMPLES = 8


class Residual(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn + identity, relu."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(self.body(y) + y))


class GroupedDepthwise(nn.Module):
    """A grouped conv, a depthwise conv, a pointwise conv (MobileNet style)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.ReLU(),
                                 nn.Conv2d(8, 6, 1))

    def forward(self, x):
        return self.net(x)


class ChannelShuffle(nn.Module):
    """ShuffleNet unit: grouped convs with a Reshape / Transpose / Reshape shuffle between them."""

    def __init__(self, groups=2):
        super().__init__()
        self.groups = groups
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 1, groups=groups)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv4 = nn.Conv2d(8, 8, 1, groups=groups)

    def forward(self, x):
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        n, c, h, w = y.shape
        y = y.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.conv4(self.conv3(y))


class Inception(nn.Module):
    """Concatenating branches: 1x1, 1x1-3x3, 3x3 max-pool-1x1, all reading one activation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1))
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.head(torch.relu(torch.cat([self.b1(y), self.b2(y), self.b3(y)], 1)))


class Dense(nn.Module):
    """DenseNet block: each layer reads the concatenation of all earlier feature maps."""

    def __init__(self, layers=3, growth=4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(8 + i * growth), nn.ReLU(), nn.Conv2d(8 + i * growth, growth, 3, padding=1))
            for i in range(layers))

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Classifier(nn.Module):
    """Conv features, global average pool, flatten, two Linear layers (Gemm)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.fc(self.features(x))


class Transformer(nn.Module):
    """Pre-norm transformer block: LayerNorm, single-head attention (MatMul + Softmax), MLP."""

    def __init__(self, dim=16):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.scale = dim ** -0.5

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        attention = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        x = x + self.proj(torch.matmul(attention, v))
        return x + self.mlp(self.norm2(x))


ARCHITECTURES = {"residual": Residual, "grouped_depthwise": GroupedDepthwise, "channel_shuffle": ChannelShuffle,
                 "inception": Inception, "dense": Dense, "classifier": Classifier, "transformer": Transformer}


def input_shape(name: str) -> tuple[int, ...]:
    return TOKENS if name == "transformer" else IMAGE


def inputs(name: str, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(input_shape(name)).astype(np.float32) for _ in range(count)]


@functools.lru_cache(maxsize=None)
def _float_bytes(name: str) -> bytes:
    torch.manual_seed(0)
    model = ARCHITECTURES[name]().eval()
    for m in model.modules():  # BatchNorm statistics away from the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    buffer = io.BytesIO()
    example = torch.from_numpy(inputs(name, 1, 0)[0])
    torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["output"])
    return buffer.getvalue()


def float_model(name: str) -> onnx.ModelProto:
    """The fp32 ONNX export of architecture `name` (fixed input shape, input "input")."""
    return onnx.load_model_from_string(_float_bytes(name))


def _reader(name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(inputs(name, CALIBRATION_SAMPLES, 1))

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {"input": sample}

    return Reader()


@functools.lru_cache(maxsize=None)
def _quantized_bytes(name: str, fmt: str, activation: str, per_channel: bool) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as folder:
        src, dst = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        src.write_bytes(_float_bytes(name))
        quantize_static(str(src), str(dst), _reader(name), quant_format=QuantFormat[fmt],
                        activation_type=QuantType[activation], weight_type=QuantType.QInt8, per_channel=per_channel,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        return dst.read_bytes()


def quantized(name: str, fmt: str, activation: str, per_channel: bool) -> onnx.ModelProto:
    """`name` quantized by onnxruntime: `fmt` "QDQ" | "QOperator", `activation` "QUInt8" | "QInt8",
    int8 weights, symmetric activations and weights, per-channel or per-tensor weight scales."""
    return onnx.load_model_from_string(_quantized_bytes(name, fmt, activation, per_channel))

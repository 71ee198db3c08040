"""`python -m eval run` on small exported and rewritten models, checked against independent
counts: torch forward hooks for MACs, the graph's own TopK indices for routing."""

import json

import numpy as np
import onnx
import pytest

from eval.cli import main
from eval.graph import analyse
from eval.macs import instrumented, probe
from modelfile import metadata
from modelfile.naming import expert_index
from models.datasets import preprocess
from runtime.ort import session

P_1L2L = 0.2 / 0.425


def run_eval(tmp_path, model_path, *extra) -> dict:
    out = tmp_path / f"{model_path.stem}.json"
    code = main(["run", str(model_path), "--dataset", "fashion-mnist", "--limit", "96", "--batch", "32",
                 "--threads", "1", "--no-progress", "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def topk_rows(model_path, fashion, data) -> np.ndarray:
    """Rows per expert from the gate's own TopK indices, exposed as an extra output."""
    model = onnx.load(str(model_path))
    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    model.graph.output.append(onnx.helper.make_tensor_value_info(topk.output[1], onnx.TensorProto.INT64, None))
    sess = session(model.SerializeToString(), threads=1)
    x = preprocess(fashion.images, data).numpy()
    indices = sess.run([topk.output[1]], {"input": x})[0]
    return np.bincount(indices.ravel(), minlength=4)


def test_hard_moe_rewritten(tmp_path, hard_model, fashion, capsys, rewrite, torch_macs):
    torch_model, int8 = hard_model
    path = rewrite(int8, "mul8s_1L2L")
    result = run_eval(tmp_path, path)
    printed = capsys.readouterr().out
    assert "top-1" in printed and "normalised" in printed and "load stages.2" in printed

    assert result["images"] == 96 and 0 <= result["top1"] <= result["top5"] <= 1
    assert result["model_info"]["multipliers"] == ["mul8s_1L2L"]
    assert result["agreement"] == 1.0
    lat = result["latency"]
    assert lat["batches"] == 3 and 0 < lat["p50_ms"] <= lat["p90_ms"] and lat["images_per_s"] > 0

    # routing: rows per expert equal the gate's TopK choices (top-1: one expert per image)
    load = result["expert_load"]["stages.2"]
    data = metadata.get(onnx.load(str(path)), metadata.DATA)
    assert load["rows"] == topk_rows(path, fashion, data).tolist()
    assert sum(load["rows"]) == 96 and load["router_rows"] == 96 and load["experts_per_row"] == 1.0

    # MACs: the dense counterpart is the same arch's dense torch model; the router is w_gate
    counts = torch_macs(torch_model)
    router = sum(v for k, v in counts.items() if ".gate." in k)
    trunk = sum(v for k, v in counts.items() if expert_index(k) is None and ".gate." not in k)
    # the hooked image ran through one expert; all experts have the same shapes
    expert = max(sum(v for k, v in counts.items() if expert_index(k) == e) for e in range(4))
    power = result["power"]
    assert power["dense_macs_per_image"] == trunk + expert
    assert power["macs_by_role"]["router"] == router * 96
    assert power["active_macs_per_image"] == trunk + router + expert  # one expert per image
    # every int8 layer on 1L2L, the float router at the exact multiplier's power
    expected = ((trunk + expert) * P_1L2L + router) / (trunk + expert)
    assert result["normalised_power"] == pytest.approx(expected)
    per_layer = {l["name"]: l for l in result["layers"]}
    assert per_layer["/stages/stages.2/gate/w_gate/MatMul"]["multiplier"] is None
    assert per_layer["/stem/stem.0/Conv"]["lowering"] in ("decomposed", "lut")


def test_dense_int8_is_one_and_macs_match_torch(tmp_path, dense_model, torch_macs):
    torch_model, int8 = dense_model
    result = run_eval(tmp_path, int8)
    assert result["normalised_power"] == 1.0
    assert result["expert_load"] == {}
    assert result["power"]["active_macs_per_image"] == sum(torch_macs(torch_model).values())
    assert result["model_info"]["multipliers"] == []


@pytest.mark.parametrize("multiplier", ["mul8s_1L2J", "mul8s_1KVA"])  # operand masks (fused), LUT op
def test_instrumented_copy_computes_the_same_logits(hard_model, fashion, multiplier, rewrite):
    path = rewrite(hard_model[1], multiplier)
    model = onnx.load(str(path))
    info = analyse(model)
    data = metadata.get(model, metadata.DATA)
    x = preprocess(fashion.images[:64], data).numpy()
    make = lambda proto: session(proto, threads=1)  # noqa: E731
    probe(model, info, x[:8], make)
    counted, names = instrumented(model, info)
    plain = session(str(path), threads=1).run(None, {"input": x})[0]
    logits, *shapes = make(counted.SerializeToString()).run(None, {"input": x})
    assert np.array_equal(plain, logits)
    assert len(shapes) == len(names) == len(info.proxies())
    # every proxy is a quantized tensor or the graph input, never a fused op's output
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert {producers.get(p, "input") for p in info.proxies()} <= {"QuantizeLinear", "input", "ReduceMean"}


def test_model_from_another_tool(tmp_path, hard_model, rewrite):
    """No axmoe metadata: preprocessing from the dataset, every op at the exact multiplier's
    power, experts still found from the node names."""
    model = onnx.load(str(rewrite(hard_model[1], "mul8s_1L2L")))
    del model.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    result = run_eval(tmp_path, path)
    assert result["model_info"]["arch"] is None and result["model_info"]["multipliers"] == []
    assert sum(result["expert_load"]["stages.2"]["rows"]) == 96
    router = result["power"]["macs_by_role"]["router"] / 96
    dense = result["power"]["dense_macs_per_image"]
    assert result["normalised_power"] == pytest.approx((dense + router) / dense)


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.onnx"), "--dataset", "fashion-mnist"]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    assert main(["run", str(bad), "--dataset", "fashion-mnist"]) == 2
    assert "not an ONNX model" in capsys.readouterr().err


def test_tvm_backend_runs_or_says_why(tmp_path, dense_model, capsys):
    import importlib
    import importlib.util

    # runtime.tvm may be absent from a checkout: then --backend tvm must say so in one line
    tvm_backend = importlib.import_module("runtime.tvm") if importlib.util.find_spec("runtime.tvm") else None

    out = tmp_path / "tvm.json"
    code = main(["run", str(dense_model[1]), "--dataset", "fashion-mnist", "--limit", "32", "--backend", "tvm",
                 "--threads", "1", "--no-progress", "--json", str(out)])
    if tvm_backend is not None and hasattr(tvm_backend, "session"):
        assert code == 0 and json.loads(out.read_text())["agreement"] == 1.0
    else:
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: --backend tvm") and "\n" not in err

"""`python -m passes.approximate --compensate MODE [--calibration DATASET[:N]]` end to end on a
small ResNet-20 exported with real Fashion-MNIST calibration: compensation measurably brings the
approximate model closer to the exact int8 one on real test images; the plan's assignment
(keep_exact, overrides, per-override modes) is what compensation tunes for, node for node; the
exact multiplier changes nothing; the rewritten model equals onnxruntime, the retraining
emulation and the pass applied to the compensated model by hand; bad input is one line."""

import json

import numpy as np
import onnx
import pytest
import torch
import yaml

import multipliers
from axmoe_testing import require_tool, run_cli, run_ort, small_model
from export.emulation import QDQEmulation
from modelfile import metadata
from passes import calibration
from passes.approximate import approximate, describe_compensation
from passes.compensate import compensate, uniform_assignment
from passes.plan import COMPENSATE_MODES

FMNIST = {"dataset": "fashion-mnist", "image_size": 32, "mean": [0.2860] * 3, "std": [0.3530] * 3}
CALIBRATION = "fashion-mnist:128"  # train split; the default (512) is what the demo uses


def _fmnist(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from models.datasets import DatasetNotFoundError, load_dataset, preprocess

    try:
        data = load_dataset("fashion-mnist", split, image_size=32, limit=n)
    except DatasetNotFoundError:
        require_tool(False, "Fashion-MNIST", "make data")
    return preprocess(data.images, {**data.config(), **FMNIST}).numpy().astype(np.float32), data.labels.numpy()


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    return _fmnist("test", 400)[0]


@pytest.fixture(scope="module")
def int8_path(tmp_path_factory) -> str:
    """ResNet-20 (width 4, dense), int8 QDQ calibrated on real Fashion-MNIST train images, its
    axmoe.data record naming fashion-mnist (so compensation finds its calibration set)."""
    from export.exporter import export_model

    x, _ = _fmnist("train", 256)
    model = small_model("resnet20", "dense")
    out = tmp_path_factory.mktemp("compensate-cli") / "r20.onnx"
    export_model(model, model.axmoe_config, FMNIST, out, calibration_batches=[x[i:i + 64] for i in range(0, 256, 64)])
    return str(out)


def cli(*args, ok=True):
    return run_cli("passes.approximate", *args, ok=ok)


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def rewrite(int8_path, out, *flags):
    report = out.with_suffix(".json")
    proc = cli(int8_path, out, *flags, "--report", report)
    return onnx.load(str(out)), json.loads(report.read_text()), proc


def test_plan_modes_are_the_compensation_modes():
    from passes.compensate import MODES

    assert COMPENSATE_MODES == MODES


def test_weights_bias_brings_1kva_closer_to_the_exact_model(int8_path, test_images, tmp_path):
    int8 = onnx.load(int8_path)
    exact = run_ort(int8, test_images)
    plain, plain_report, _ = rewrite(int8_path, tmp_path / "none.onnx", "--multiplier", "mul8s_1KVA")
    tuned, report, proc = rewrite(int8_path, tmp_path / "wb.onnx", "--multiplier", "mul8s_1KVA",
                                  "--compensate", "weights+bias", "--calibration", CALIBRATION)
    error = {name: float(np.mean((run_ort(m, test_images).astype(np.float64) - exact) ** 2))
             for name, m in (("none", plain), ("weights+bias", tuned))}
    agree = {name: float(np.mean(run_ort(m, test_images).argmax(1) == exact.argmax(1)))
             for name, m in (("none", plain), ("weights+bias", tuned))}
    print(f"mean squared logit error vs exact int8: {error}; top-1 agreement: {agree}")
    assert error["weights+bias"] < error["none"]
    # the report and the model record mode, calibration set and per-node corrections
    record = report["compensation"]
    assert record["mode"] == "weights+bias"
    assert record["calibration"] == {"dataset": "fashion-mnist", "split": "train", "n": 128}
    done = [n for n in record["nodes"] if n["status"] == "compensated"]
    assert len(done) == report["summary"]["rewritten"] == len(record["nodes"])
    assert all(n["bias"] and n["bias_site"] == "bias initializer" for n in done)
    assert sum(n.get("weights_changed", 0) for n in done) > 0
    assert metadata.get(tuned, metadata.COMPENSATION) == record
    entries = metadata.get(tuned, metadata.ASSIGNMENT)
    assert {e.get("compensate") for e in entries.values()} == {"weights+bias"}
    assert describe_compensation(record) in proc.stdout
    assert "compensation" not in plain_report and not metadata.has(plain, metadata.COMPENSATION)
    assert all("compensate" not in e for e in metadata.get(plain, metadata.ASSIGNMENT).values())


def test_cli_equals_compensate_then_pass_ort_and_emulation(int8_path, test_images, tmp_path):
    """The CLI's model is the pass applied to `compensate()`'s model (uniform assignment, same
    statistics), bit for bit in onnxruntime; and the retraining emulation of the compensated
    int8 model with the pass's multipliers computes the same integers."""
    int8 = onnx.load(int8_path)
    mult = multipliers.get("mul8s_1L2L")
    got, _, _ = rewrite(int8_path, tmp_path / "cli.onnx", "--multiplier", mult.name, "--compensate", "weights+bias",
                        "--calibration", CALIBRATION)
    stats = calibration.statistics(int8, CALIBRATION)
    by_hand, _ = compensate(int8, uniform_assignment(int8, mult), stats, "weights+bias")
    want, _ = approximate(by_hand, {"multiplier": mult.name})
    x = test_images[:64]
    out = run_ort(got, x)
    assert np.array_equal(out, run_ort(want, x))
    mults = {name: multipliers.get(e["multiplier"]) for name, e in metadata.get(got, metadata.ASSIGNMENT).items()}
    with torch.no_grad():
        emulated = QDQEmulation(by_hand, multipliers=mults)(torch.from_numpy(x)).numpy()
    assert np.array_equal(out, emulated)


def test_exact_multiplier_is_a_no_op_and_needs_no_calibration(int8_path, test_images, tmp_path, monkeypatch):
    monkeypatch.setenv("AXMOE_DATA_DIR", str(tmp_path / "no-data"))  # no calibration data reachable
    plain, _, _ = rewrite(int8_path, tmp_path / "none.onnx", "--multiplier", "exact")
    for mode in ("bias", "weights", "weights+bias"):
        model, report, _ = rewrite(int8_path, tmp_path / f"{mode}.onnx", "--multiplier", "exact", "--compensate", mode)
        assert np.array_equal(run_ort(model, test_images), run_ort(plain, test_images))
        assert {n["status"] for n in report["compensation"]["nodes"]} == {"exact"}
        assert [t.raw_data for t in model.graph.initializer] == [t.raw_data for t in plain.graph.initializer]


def test_explicit_none_writes_the_same_file(int8_path, tmp_path):
    cli(int8_path, tmp_path / "a.onnx", "--multiplier", "mul8s_1KVA")
    cli(int8_path, tmp_path / "b.onnx", "--multiplier", "mul8s_1KVA", "--compensate", "none")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_plan_compensate_per_override_and_the_flag_overrides_the_top_level(int8_path, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "multiplier": "mul8s_1KVA", "compensate": "bias", "keep_exact": ["first_conv"],
        "overrides": [{"match": {"op_type": "Gemm"}, "compensate": "weights+bias"},
                      {"match": {"layer": 1}, "compensate": "none"},
                      {"match": {"layer": 2}, "multiplier": "mul8s_1L2L", "compensate": "weights"}]}))
    for flag, default in (((), "bias"), (("--compensate", "weights"), "weights")):
        model, report, _ = rewrite(int8_path, tmp_path / f"{default}.onnx", "--plan", plan, "--calibration",
                                   CALIBRATION, *flag)
        nodes = [n for n in report["nodes"] if n["status"] != "skipped"]
        comp = {n["node"]: n for n in report["compensation"]["nodes"]}
        assert report["compensation"]["mode"] == default
        assert comp[nodes[0]["node"]]["status"] == "exact"  # keep_exact: the rewrite and compensation agree
        assert comp[nodes[1]["node"]]["status"] == "unchanged" and comp[nodes[1]["node"]]["mode"] == "none"
        layer2 = comp[nodes[2]["node"]]
        assert layer2["multiplier"] == nodes[2]["multiplier"] == "mul8s_1L2L"
        assert layer2.get("mode", default) == "weights" and "bias" not in layer2 and layer2["weights_changed"] > 0
        gemm = comp[nodes[-1]["node"]]
        assert nodes[-1]["op_type"] == "Gemm" and gemm["mode"] == "weights+bias" and gemm["bias"]
        rest = [comp[n["node"]] for n in nodes[3:-1]]
        assert all(n["status"] == "compensated" and "mode" not in n for n in rest)
        if default == "bias":
            assert all(n.get("weights_changed", 0) == 0 and n["bias"] for n in rest)
        else:
            assert all("bias" not in n for n in rest) and sum(n.get("weights_changed", 0) for n in rest) > 0
        entries = metadata.get(model, metadata.ASSIGNMENT)
        for name, entry in entries.items():
            assert entry.get("compensate") == (comp[name].get("mode") or default
                                               if comp[name]["status"] == "compensated" else None)


def test_op_the_pass_skips_is_not_compensated(int8_path, tmp_path):
    """mitchell has no exact decomposition: --lowering decomposed skips every op, and ops tuned
    for a multiplier they do not get would be worse off than untouched ones."""
    plan = {"multiplier": "mul8s_1KVA", "compensate": "weights+bias",
            "overrides": [{"match": {"layer": [0, 1]}, "multiplier": "mitchell", "lowering": "decomposed"}]}
    x = calibration.statistics(onnx.load(int8_path), CALIBRATION)
    model, report = approximate(int8_path, plan, x)
    comp = {n.node: n for n in report.nodes}
    record = {n["node"]: n for n in report.compensation["nodes"]}
    skipped = [name for name, n in comp.items() if n.status == "skipped" and name in record]
    assert len(skipped) == 2
    assert all(record[name]["status"] == "skipped" and "the pass leaves it" in record[name]["reason"]
               for name in skipped)
    assert all(n["status"] == "compensated" for name, n in record.items() if name not in skipped)
    # the skipped ops (still QDQ candidates) read their original integers, the others do not
    source = {op.name: op for op in calibration.candidates(onnx.load(int8_path))}
    left = {op.name: op for op in calibration.candidates(model) if op.name in source}  # not the rewritten ones
    assert sorted(left) == sorted(skipped)
    for name in skipped:
        assert np.array_equal(left[name].weight, source[name].weight)
        assert np.array_equal(left[name].bias, source[name].bias)


@pytest.mark.parametrize("flags, fragments", [
    (("--compensate", "bias", "--calibration", "fashion-mnsit"), ("unknown dataset 'fashion-mnsit'",)),
    (("--compensate", "bias", "--calibration", "fashion-mnist:0"), ("at least one image", "N = 0")),
    (("--compensate", "bias", "--calibration", "fashion-mnist:ten"), ("whole number",)),
    (("--compensate", "bias", "--calibration", "tiny-imagenet:8"), ("64x64", "32x32")),
    (("--calibration", "fashion-mnist:8"), ("--calibration is for error compensation",)),
])
def test_bad_calibration_is_one_line(int8_path, tmp_path, flags, fragments):
    proc = cli(int8_path, tmp_path / "out.onnx", "--multiplier", "mul8s_1KVA", *flags, ok=False)
    one_line_error(proc, *fragments)
    assert not (tmp_path / "out.onnx").exists()


def test_unreachable_calibration_data_is_one_line(int8_path, tmp_path, monkeypatch):
    monkeypatch.setenv("AXMOE_DATA_DIR", str(tmp_path / "no-data"))
    proc = cli(int8_path, tmp_path / "out.onnx", "--multiplier", "mul8s_1KVA", "--compensate", "bias", ok=False)
    if proc.returncode == 0:
        pytest.skip("Fashion-MNIST is installed system-wide (/usr/share/datasets): it stays reachable")
    one_line_error(proc, "calibration data fashion-mnist/train not reachable")


def test_model_without_a_known_dataset_is_one_line(int8_resnet, tmp_path):
    path = tmp_path / "synthetic.onnx"  # axmoe.data names the tests' "synthetic" data
    onnx.save(int8_resnet, str(path))
    proc = cli(path, tmp_path / "out.onnx", "--multiplier", "mul8s_1KVA", "--compensate", "bias", ok=False)
    one_line_error(proc, "unknown dataset 'synthetic'")
    # a calibration set of the right size, named explicitly, works
    cli(path, tmp_path / "out.onnx", "--multiplier", "mul8s_1KVA", "--compensate", "bias", "--calibration",
        "fashion-mnist:16")


def test_linear_through_the_cli_equals_compensate_then_pass(int8_path, test_images, tmp_path):
    """--compensate linear: the report and the model record g per node and the extra additions;
    the CLI's model equals compensate() (with sampled receptive fields) then the pass."""
    int8 = onnx.load(int8_path)
    exact = run_ort(int8, test_images)
    got, report, proc = rewrite(int8_path, tmp_path / "linear.onnx", "--multiplier", "mul8s_1L2L",
                                "--compensate", "linear", "--calibration", CALIBRATION)
    record = report["compensation"]
    assert record["mode"] == "linear" and metadata.get(got, metadata.COMPENSATION) == record
    with_term = [n for n in record["nodes"] if n.get("linear")]
    assert with_term and all(len(n["linear"]) == len(n["bias"]) for n in with_term)
    nodes = {n["node"]: n for n in report["nodes"]}
    assert all(nodes[n["node"]]["linear_additions"] > 0 for n in with_term)
    assert "linear terms" in describe_compensation(record) and describe_compensation(record) in proc.stdout
    stats = calibration.statistics(int8, CALIBRATION, pixels=calibration.LINEAR_PIXELS)
    by_hand, _ = compensate(int8, uniform_assignment(int8, "mul8s_1L2L"), stats, "linear")
    want, _ = approximate(by_hand, {"multiplier": "mul8s_1L2L"})
    out = run_ort(got, test_images)
    assert np.array_equal(out, run_ort(want, test_images))
    wb, _, _ = rewrite(int8_path, tmp_path / "wb.onnx", "--multiplier", "mul8s_1L2L", "--compensate", "weights+bias",
                       "--calibration", CALIBRATION)
    error = {name: float(np.mean((run_ort(m, test_images).astype(np.float64) - exact) ** 2))
             for name, m in (("weights+bias", wb), ("linear", got))}
    print(f"mean squared logit error vs exact int8, mul8s_1L2L: {error}")
    assert "linear" in " ".join(cli("--help").stdout.split())

"""TVM is the optional extra `axmoe[tvm]`: `import runtime.tvm` does not import TVM, and without
apache-tvm every entry point (the Python API, `python -m runtime.tvm`, `eval run --backend tvm`)
ends in one line naming the extra. A subprocess plays the missing package: sys.modules["tvm"] =
None makes `import tvm` fail as it does when apache-tvm is not installed."""

import subprocess
import sys

from axmoe_testing import ROOT

MESSAGE = "the TVM backend needs apache-tvm: pip install 'axmoe[tvm]'"

PROBE = """
import sys

import runtime.tvm, runtime.tvm.cli, runtime.tvm.config, runtime.tvm.runner, eval.backends
assert "tvm" not in sys.modules, "importing the TVM backend imported TVM"
sys.modules["tvm"] = None  # as if apache-tvm were not installed

for call in (lambda: runtime.tvm.session("model.onnx"), lambda: runtime.tvm.compile_model(None),
             lambda: runtime.tvm.from_onnx(None), lambda: runtime.tvm.Session("model.so")):
    try:
        call()
    except runtime.tvm.MissingTVMError as exc:
        print("api:", exc)
try:
    eval.backends.make_runner("tvm", "model.onnx", "input", 1)
except eval.backends.BackendError as exc:
    print("eval:", exc)
sys.exit(runtime.tvm.cli.main(["compile", "model.onnx", "--out", "model.so"]))
"""


def test_without_tvm_every_entry_point_says_what_to_install():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [f"api: {MESSAGE}"] * 4 + [f"eval: --backend tvm: {MESSAGE}"]
    assert proc.stderr == f"error: {MESSAGE}\n"

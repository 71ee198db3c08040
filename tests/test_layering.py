"""The packages import only downwards: bottom to top

    multipliers, modelfile  ->  models  ->  runtime  ->  export, passes  ->  train  ->  eval

A module may import its own package or a package of a lower layer; packages that share a
layer (multipliers and modelfile, export and passes) never import each other. Every import
counts, at module level or inside a function: `import x.y`, `from x import y`, relative
imports (resolved against the file's package) and `importlib.import_module("x.y")` with a
literal name. benchmarks/, scripts/ and tests/ are not packages of the layering.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (("multipliers", "modelfile"), ("models",), ("runtime",), ("export", "passes"), ("train",), ("eval",))
LAYER_OF = {package: index for index, packages in enumerate(LAYERS) for package in packages}


def _package_of(root: Path, path: Path) -> list[str]:
    """Dotted package of a module file, as parts: runtime/tvm/frontend.py -> [runtime, tvm]."""
    return list(path.relative_to(root).parent.parts)


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name == "import_module" and bool(call.args) and isinstance(call.args[0], ast.Constant) \
        and isinstance(call.args[0].value, str)


def imports_of(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at `path` under `root`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(root, path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
        elif isinstance(node, ast.Call) and _is_import_module(node):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(root: Path) -> list[str]:
    """One line per import against the layering, for every .py file of the layered packages."""
    out = []
    for package, layer in LAYER_OF.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imports_of(root, path):
                target = module.split(".")[0]
                if target == package or target not in LAYER_OF:
                    continue
                if LAYER_OF[target] >= layer:
                    out.append(f"{path.relative_to(root)}:{line} imports {module} "
                               f"(layer {layer} {package} -> layer {LAYER_OF[target]} {target})")
    return out


def test_every_package_imports_only_lower_layers():
    found = violations(ROOT)
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_the_layered_packages_exist():
    assert all((ROOT / package / "__init__.py").is_file() for package in LAYER_OF)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_every_kind_of_violation(tmp_path):
    _write(tmp_path, {
        "models/__init__.py": "",
        "models/up.py": "import os\nfrom runtime.ort import session\n",                      # upwards
        "export/__init__.py": "",
        "export/quantize.py": "def f():\n    import passes.plan as plan\n    return plan\n",  # sibling, in a function
        "passes/__init__.py": "",
        "passes/lazy.py": "import importlib\n\nmod = importlib.import_module('eval.report')\n",
        "modelfile/__init__.py": "from multipliers import lut\n",                             # same layer
        "multipliers/__init__.py": "",
        "runtime/__init__.py": "",
        "runtime/tvm/__init__.py": "from ..ort import session\nfrom . import frontend\n",       # relative: own package
        "runtime/tvm/frontend.py": "from models import create\nimport multipliers.lut\n",      # downwards
        "train/__init__.py": "from export.exporter import export_model\n",
        "eval/__init__.py": "",
    })
    assert violations(tmp_path) == [
        "modelfile/__init__.py:1 imports multipliers (layer 0 modelfile -> layer 0 multipliers)",
        "models/up.py:2 imports runtime.ort (layer 1 models -> layer 2 runtime)",
        "export/quantize.py:2 imports passes.plan (layer 3 export -> layer 3 passes)",
        "passes/lazy.py:3 imports eval.report (layer 3 passes -> layer 5 eval)",
    ]


def test_relative_imports_resolve_against_the_files_package(tmp_path):
    _write(tmp_path, {"runtime/tvm/frontend.py": "from ..ort import session\nfrom . import ops\nfrom .x.y import z\n",
                      "runtime/__init__.py": "from .ort import session\n"})
    assert imports_of(tmp_path, tmp_path / "runtime/tvm/frontend.py") == [
        (1, "runtime.ort"), (2, "runtime.tvm"), (3, "runtime.tvm.x.y")]
    assert imports_of(tmp_path, tmp_path / "runtime/__init__.py") == [(1, "runtime.ort")]

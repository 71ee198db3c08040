"""Import an EvoApproxLib-format C model as a LUT.

EvoApproxLib publishes each multiplier as a gate-level C function,

    int16_t  mul8s_1KV8(int8_t A, int8_t B)        (signed)
    uint16_t mul8s_1KV8(uint8_t A, uint8_t B)      (the same circuit on the raw bit patterns)

`import_c` finds that function in the file, compiles it with a tiny driver in a temporary
directory (system C compiler, with a timeout), evaluates all 65,536 operand pairs and returns
the table in the axmoe convention `lut[a + 128, b + 128]`. For the unsigned variant the int8
bit pattern goes in and the 16-bit result is read as two's complement. Compiling someone's C
runs their code: only done when explicitly asked, in a scratch directory, with a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from multipliers.lut import LUTError, validate_lut

# return type, name, first and second parameter types (8-bit, signed or unsigned)
_SIGNATURE = re.compile(
    r"\b(u?int16_t|u?int32_t|int|short|unsigned\s+short)\s+([A-Za-z_]\w*)\s*\(\s*"
    r"(?:const\s+)?(u?int8_t)\s+\w+\s*,\s*(?:const\s+)?(u?int8_t)\s+\w+\s*\)\s*\{")

_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include "model.c"
int main(void) {
  static int32_t out[65536];
  for (int a = -128; a < 128; ++a)
    for (int b = -128; b < 128; ++b)
      out[(a + 128) * 256 + (b + 128)] = (int32_t)(%(read)s)%(name)s((%(ta)s)(int8_t)a, (%(tb)s)(int8_t)b);
  return fwrite(out, sizeof out, 1, stdout) == 1 ? 0 : 1;
}
"""


class CImportError(ValueError):
    pass


def find_functions(source: str) -> list[tuple[str, str, str, str]]:
    """(return type, name, type of A, type of B) of every 8x8 multiplier function in `source`."""
    return [tuple(m) for m in _SIGNATURE.findall(source)]


def import_c(path: str | Path, name: str | None = None, timeout: float = 60.0,
             compiler: str | None = None) -> np.ndarray:
    """Compile and tabulate the multiplier `name` (or the only one) defined in C file `path`.

    Raises:
        CImportError: one line saying what went wrong (no file, no function, compile error,
            timeout, result out of int16 range).
    """
    path = Path(path)
    if not path.is_file():
        raise CImportError(f"{path}: no such file")
    source = path.read_text(errors="replace")
    functions = find_functions(source)
    if not functions:
        raise CImportError(f"{path}: no function of the form `int16_t f(int8_t, int8_t)` "
                           "or `uint16_t f(uint8_t, uint8_t)`")
    if name is None:
        if len(functions) > 1:
            raise CImportError(f"{path}: several multipliers ({', '.join(f[1] for f in functions)}); "
                               "choose one with --name")
        chosen = functions[0]
    else:
        matches = [f for f in functions if f[1] == name]
        if not matches:
            raise CImportError(f"{path}: no multiplier function named {name!r} "
                               f"(found {', '.join(f[1] for f in functions)})")
        chosen = matches[0]
    ret, func, type_a, type_b = chosen
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise CImportError("no C compiler found (install gcc or set CC)")
    with tempfile.TemporaryDirectory(prefix="axmoe-cimport-") as tmp:
        tmp = Path(tmp)
        shutil.copyfile(path, tmp / "model.c")
        # an unsigned 16-bit result is the two's-complement pattern of the signed product
        read = "int16_t" if ret.replace(" ", "") in ("uint16_t", "unsignedshort") else "int64_t"
        (tmp / "driver.c").write_text(_DRIVER % {"read": read, "name": func, "ta": type_a, "tb": type_b})
        try:
            build = subprocess.run([cc, "-O1", "-w", "-o", str(tmp / "driver"), str(tmp / "driver.c")],
                                   cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CImportError(f"{path}: compiling took longer than {timeout:g} s") from None
        if build.returncode != 0:
            first = next((line for line in build.stderr.splitlines() if "error" in line),
                         build.stderr.strip().splitlines()[0] if build.stderr.strip() else "")
            raise CImportError(f"{path}: does not compile: {first.replace(str(tmp) + '/', '')}")
        try:
            run = subprocess.run([str(tmp / "driver")], cwd=tmp, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CImportError(f"{path}: evaluating {func} took longer than {timeout:g} s") from None
        if run.returncode != 0 or len(run.stdout) != 65536 * 4:
            raise CImportError(f"{path}: evaluating {func} failed (exit code {run.returncode})")
    table = np.frombuffer(run.stdout, dtype=np.int32).reshape(256, 256)
    try:
        return validate_lut(table, source=f"{path}:{func}")
    except LUTError as exc:
        raise CImportError(str(exc)) from None

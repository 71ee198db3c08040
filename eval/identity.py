"""The code identity a sweep job records: which code produced its result.

    {"version": "0.1.0",          the installed axmoe distribution ("unknown" if not installed)
     "commit":  "<40 hex>",       `git rev-parse HEAD` of the checkout the package runs from
     "dirty":   true,             uncommitted changes (tracked or untracked, not ignored)
     "diff":    "<12 hex>",       sha256 of those changes (`git diff HEAD` + untracked files), dirty only
     "library": "<64 hex>"}       sha256 of the custom-op library runtime.ort loads (libaxmoe_ort.so)

Outside a git checkout (an installed wheel) commit is "unknown" and dirty/diff are None; a
missing git or library gives "unknown" too: the identity never fails. It is computed once per
process, so a worker reports the code it imported, also on another Ray node.

Identities are recorded, not hashed: a job's folder name stays the hash of its spec (DESIGN.md,
"Sweep robustness"); `eval sweep --rerun-stale` reruns the jobs whose identity differs.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: untracked files larger than this enter the diff digest by name and size only
UNTRACKED_CONTENT_LIMIT = 1 << 20
FIELDS = ("version", "commit", "dirty", "diff", "library")


def _git(root: Path, *args: str) -> bytes | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(root: Path = PACKAGE_ROOT) -> dict[str, Any]:
    """{"commit", "dirty", "diff"} of the git checkout whose top level is `root`."""
    unknown = {"commit": UNKNOWN, "dirty": None, "diff": None}
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.decode().strip()).resolve() != Path(root).resolve():
        return unknown  # not a checkout, or the package sits inside someone else's repository
    commit, status = _git(root, "rev-parse", "HEAD"), _git(root, "status", "--porcelain", "-z")
    if commit is None or status is None:
        return unknown
    if not status:
        return {"commit": commit.decode().strip(), "dirty": False, "diff": None}
    digest = hashlib.sha256(_git(root, "diff", "HEAD", "--binary", "--no-ext-diff") or b"")
    for name in sorted((_git(root, "ls-files", "-z", "--others", "--exclude-standard") or b"").split(b"\0")):
        path = Path(root) / name.decode(errors="replace")
        if not name or not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(name + b"\0" + str(size).encode())
        if size <= UNTRACKED_CONTENT_LIMIT:
            digest.update(path.read_bytes())
    return {"commit": commit.decode().strip(), "dirty": True, "diff": digest.hexdigest()[:12]}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_sha256() -> str:
    """sha256 of the custom-op library as `runtime.ort.library_path()` finds it ("unknown": none)."""
    try:
        from runtime.ort import library_path

        return file_sha256(library_path())
    except Exception:  # noqa: BLE001 (not built, unreadable: the identity says so, the job decides)
        return UNKNOWN


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("axmoe")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def code_identity(root: Path = PACKAGE_ROOT) -> dict[str, Any]:
    """The identity of the code at `root` (module docstring), computed now."""
    return {"version": package_version(), **git_state(root), "library": library_sha256()}


@functools.lru_cache(maxsize=1)
def current() -> dict[str, Any]:
    """This process's `code_identity()`, computed on first use."""
    return code_identity()


def label(identity: dict[str, Any] | None) -> str:
    """A few words for a report: `0.1.0 ad3169e1f2+dirty.5c2e01 lib 9f3a1b2c`."""
    if not identity:
        return UNKNOWN
    commit = str(identity.get("commit", UNKNOWN))
    words = f"{identity.get('version', UNKNOWN)} {commit[:10] if commit != UNKNOWN else 'commit unknown'}"
    if identity.get("dirty"):
        words += f"+dirty.{str(identity.get('diff'))[:6]}"
    library = str(identity.get("library", UNKNOWN))
    return f"{words} lib {library[:8] if library != UNKNOWN else UNKNOWN}"


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two identities name the same code (a result without one matches nothing)."""
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in FIELDS)

"""``pip`` builds bivio with and without a C compiler, and both wheels serve.

Issue 17's rule for a compiled hot path: the same source runs uncompiled, a
machine without a C compiler still installs bivio (each extension is optional,
setup.py), and a wheel builds. Wheels are built from a copy of the tracked files
without build isolation (the venv's setuptools and Cython: no network), then
unpacked and served from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, env_without_bivio, start_bivio

from bivio import compiled

pytest.importorskip("Cython", reason="Cython is a test dependency: pip install -e '.[test]'")
pytestmark = pytest.mark.timeout(600)


def source_copy(dest: Path) -> Path:
    """The tracked files of the checkout (no in-place build, no caches)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to list the tracked files")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    return dest


def build_wheel(tree: Path, out: Path, **env: str) -> Path:
    environ = env_without_bivio()
    environ.update(env)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(tree)],
        env=environ, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    wheels = list(out.glob("bivio-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def extension_modules(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[-1].split(".")[0] + ":" + "/".join(name.split("/")[:-1])
                for name in archive.namelist() if name.endswith((".so", ".pyd"))}


def serve_from(wheel: Path, where: Path) -> tuple[str, str]:
    """Unpack ``wheel``, serve the hello app from it; (hot path status, the answer)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(where)
    env = {"PYTHONPATH": str(where)}
    status = subprocess.run(
        [sys.executable, "-c", "import bivio, bivio.compiled as c; "
         "print(c.status(), bivio.__file__)"],
        env={**env_without_bivio(), **env}, capture_output=True, text=True, check=True,
        cwd=str(where)).stdout.split()
    assert status[-1].startswith(str(where)), status  # this bivio, not the checkout's
    running = start_bivio("examples.hello:app", env=env, cwd=ROOT)
    try:
        answer = httpx.get(f"http://127.0.0.1:{running.port}/", timeout=10).text
    finally:
        running.stop()
    return " ".join(status[:-1]), answer


def test_without_a_c_compiler_the_wheel_is_pure_python_and_serves(tmp_path: Path) -> None:
    tree = source_copy(tmp_path / "src")
    wheel = build_wheel(tree, tmp_path / "wheels", CC="false", LDSHARED="false")
    assert extension_modules(wheel) == set()
    assert serve_from(wheel, tmp_path / "site") == ("pure Python", "Hello from bivio!\n")


def test_with_a_c_compiler_the_wheel_carries_the_compiled_hot_path(tmp_path: Path) -> None:
    if os.environ.get(compiled.ENV):
        pytest.skip("BIVIO_NO_EXTENSIONS is set: this run is the pure-Python variant")
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler on this machine")
    tree = source_copy(tmp_path / "src")
    wheel = build_wheel(tree, tmp_path / "wheels")
    names = {module.rpartition(".")[2] for module in compiled.MODULES}
    assert {entry.split(":")[0] for entry in extension_modules(wheel)} == names
    assert serve_from(wheel, tmp_path / "site") == ("compiled", "Hello from bivio!\n")

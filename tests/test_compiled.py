"""The switch between the compiled hot path and its .py files (src/bivio/compiled.py).

The suite itself runs in both variants (``make test``); these tests check the
switch: ``BIVIO_NO_EXTENSIONS`` is read the way it is documented, and with it
set every listed module comes from its ``.py`` file even where a compiled one
sits beside it.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bivio
from bivio import compiled

SRC = Path(bivio.__file__).resolve().parent
REPORT = ("import json, importlib, bivio.compiled as c; "
          "print(json.dumps({'status': c.status(), 'files': "
          "[importlib.import_module(m).__file__ for m in c.MODULES]}))")


def report(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != compiled.ENV}
    environ.update(env)
    result = subprocess.run([sys.executable, "-c", REPORT], env=environ, capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def built() -> list[Path]:
    """The compiled modules in this tree (an in-place build) that this Python can import.

    A name counts only as ``stem`` plus one of this interpreter's suffixes: another
    Python's build (``asgi.cpython-311-….so`` under 3.13) is not this one's.
    """
    found = []
    for name in compiled.MODULES:
        folder = SRC.parent.joinpath(*name.split(".")[:-1])
        stem = name.rpartition(".")[2]
        found += [folder / (stem + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES
                  if (folder / (stem + suffix)).is_file()]
    return found


@pytest.mark.parametrize(("value", "off"), [
    ("", False), ("0", False), ("false", False), ("no", False),
    ("1", True), ("yes", True), ("true", True), (" TRUE ", True),
])
def test_the_switch_reads_like_a_boolean(value: str, off: bool) -> None:
    assert compiled.disabled({compiled.ENV: value}) is off
    assert compiled.disabled({}) is False


def test_the_switch_imports_every_listed_module_from_its_source() -> None:
    seen = report(**{compiled.ENV: "1"})
    assert seen["status"] == "pure Python"
    assert all(path.endswith(".py") for path in seen["files"]), seen["files"]


def test_without_the_switch_a_built_tree_runs_compiled() -> None:
    if len(built()) != len(compiled.MODULES):
        pytest.skip("this tree has no complete in-place build of the compiled modules "
                    "(pip install -e . without a C compiler)")
    seen = report()
    assert seen["status"] == "compiled", seen
    assert not any(path.endswith(".py") for path in seen["files"])


def test_every_listed_module_has_its_declarations_beside_it() -> None:
    """Compiled without its .pxd a module would be plain Cython: slower than Python 3.11."""
    for name in compiled.MODULES:
        source = SRC.parent.joinpath(*name.split("."))
        assert source.with_suffix(".py").is_file(), name
        assert source.with_suffix(".pxd").is_file(), f"{name}: no .pxd beside it"

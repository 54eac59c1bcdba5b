"""The optional compiled hot path (see src/bivio/compiled.py); everything else is in pyproject.toml.

With Cython (a build requirement) and a C compiler, the modules listed in
``bivio.compiled.MODULES`` are compiled from their own ``.py`` files and the
``.pxd`` declarations beside them. Each extension is optional: without a C
compiler the build goes on and bivio runs the same ``.py`` files.
``BIVIO_NO_EXTENSIONS=1`` builds nothing.
"""

from __future__ import annotations

import os
import runpy

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
compiled = runpy.run_path(os.path.join(HERE, "src", "bivio", "compiled.py"))


def extensions() -> list:
    if compiled["disabled"]():
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:  # a build without the build requirements: pure Python
        return []
    sources = ["src/" + name.replace(".", "/") + ".py" for name in compiled["MODULES"]]
    built = cythonize(
        sources,
        include_path=["src"],
        quiet=True,
        # Type hints stay hints: the .pxd files say what is typed.
        compiler_directives={"language_level": 3, "annotation_typing": False,
                             "embedsignature": True},
    )
    for extension in built:
        extension.optional = True  # no C compiler: the .py file is used instead
    return built


setup(ext_modules=extensions())

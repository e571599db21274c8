"""Build of the compiled hot path (`core_ext`).

The extension list is every ``core_ext/*.pyx``: one extension per hot-path concern
(STYLE.md rule 2), so adding a module needs no edit here.

Environment variables:
  ENGINE_DEBUG=1      debug build: fresh Cython run with annotate and linetrace,
                      ``-O0 -g``, ``CORE_EXT_DEBUG=1`` visible to the code.
  ENGINE_NATIVE=1     ``-march=native`` for a co-located box (never for wheels you ship).
  CORE_EXT_ONLY=a,b   build only these modules (handy while working on one of them).
"""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("ENGINE_DEBUG", "") == "1"
NATIVE = os.environ.get("ENGINE_NATIVE", "") == "1"
ONLY = {name for name in os.environ.get("CORE_EXT_ONLY", "").split(",") if name}

compile_args = ["-O0", "-g3"] if DEBUG else ["-O3"]
if NATIVE and not DEBUG:
    compile_args.append("-march=native")
if sys.platform != "win32":
    compile_args += ["-Wno-unused-function", "-Wno-unreachable-code"]

macros = [
    ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
    ("CORE_EXT_DEBUG", "1" if DEBUG else "0"),
]
if DEBUG:
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

directives = {
    "language_level": "3",
    "embedsignature": True,
    # bounds checking stays on globally (STYLE.md); hot functions opt out one by one.
    "binding": False,
}
if DEBUG:
    directives.update({"linetrace": True, "profile": True})


def extensions():
    sources = sorted(glob.glob(os.path.join("core_ext", "*.pyx")))
    result = []
    for path in sources:
        name = os.path.splitext(os.path.basename(path))[0]
        if ONLY and name not in ONLY:
            continue
        result.append(
            Extension(
                f"core_ext.{name}",
                [path],
                include_dirs=[numpy.get_include(), "core_ext"],
                define_macros=macros,
                extra_compile_args=compile_args,
                extra_link_args=["-g"] if DEBUG else [],
            )
        )
    return result


setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives=directives,
        annotate=DEBUG,
        force=DEBUG,
        nthreads=int(os.environ.get("CYTHON_NTHREADS", "2")),
    ),
)

"""The one compiled piece: the discretised mean's window loop (bsi/engine/_discretised_window.c).

Built on Linux x86-64, where one build carries AVX-512, AVX2 and baseline versions of the loop and
picks one at run time.  Optional: without a C compiler, or on other platforms, the install still
succeeds and the engine uses its PyTorch code.  Everything else about the package is in pyproject.toml.
"""

import platform
import sys

from setuptools import Extension, setup

window = Extension(
    "bsi.engine._discretised_window", ["bsi/engine/_discretised_window.c"], optional=True,
    # no trapping math: lets the compiler turn the loop's selects into vector blends (we never read FP flags)
    extra_compile_args=["-O3", "-fno-trapping-math"],
)
setup(ext_modules=[window] if sys.platform.startswith("linux") and platform.machine() == "x86_64" else [])

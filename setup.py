"""Build of the optional C extension ``mycelium._accel`` (docs/accel.md).

``optional=True``: when it cannot be compiled (no C compiler or Python headers), the
install still succeeds and Mycelium runs its pure-Python path.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mycelium._accel", ["mycelium/_accel.c"], optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"])])

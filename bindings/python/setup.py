"""The one thing pyproject.toml cannot say: a wheel that bundles ``libtessera.so`` is not
pure Python.

``scripts/build-wheel.sh`` copies the library beside ``src/tessera/__init__.py`` before it
builds; the wheel is then tagged ``py3-none-<platform>`` (any Python 3, since the binding is
ctypes and has no extension module, but only this platform), and ``auditwheel repair``
turns the platform into the ``manylinux`` tag the library's glibc allows. Without a library
in the tree the wheel stays ``py3-none-any`` (the library then comes from
``TESSERA_LIBRARY`` or the system).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel

PACKAGE = Path(__file__).resolve().parent / "src" / "tessera"


def bundles_library() -> bool:
    return any(p.is_file() for p in PACKAGE.glob("libtessera.so*"))


class PlatformDistribution(Distribution):
    """A distribution carrying the library counts as one with extension modules, so that
    setuptools installs it into platlib (the wheel's root, ``Root-Is-Purelib: false``), where
    ``auditwheel`` expects shared libraries, rather than into ``.data/purelib``."""

    def has_ext_modules(self) -> bool:
        return bundles_library()


class PlatformWheel(bdist_wheel):
    """bdist_wheel tagging a wheel that carries the library ``py3-none-<platform>``: the
    binding is ctypes, so any CPython 3 (no Python ABI), but only this platform."""

    def get_tag(self) -> tuple[str, str, str]:
        python, abi, plat = super().get_tag()
        if bundles_library():
            return "py3", "none", plat
        return python, abi, plat


setup(distclass=PlatformDistribution, cmdclass={"bdist_wheel": PlatformWheel})

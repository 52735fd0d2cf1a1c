"""Finding and checking the library: a library bundled beside the package, TESSERA_LIBRARY,
the system path; a missing library and one of another ABI give errors naming what was tried."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

import support
import tessera
from tessera import _ffi

WRONG_ABI_SOURCE = "unsigned int tessera_abi_version(void) { return 2; }\n"
HALF_A_LIBRARY_SOURCE = "unsigned int tessera_abi_version(void) { return 1; }\n"
NOT_TESSERA_SOURCE = "int something_else(void) { return 0; }\n"


def installed_copy(tmp_path: Path, bundle: bool) -> Path:
    """A copy of the package in ``tmp_path/site`` (with the real library beside its
    ``__init__.py`` when ``bundle``), as pip would install it."""
    site = tmp_path / "site"
    shutil.copytree(
        support.PACKAGE_SRC / "tessera",
        site / "tessera",
        ignore=shutil.ignore_patterns("__pycache__", "libtessera.so*"),
    )
    if bundle:
        shutil.copy2(support.LIBRARY, site / "tessera" / "libtessera.so.0")
    return site


# --- the search order, in a child interpreter as an app would import it ---------------------


def test_tessera_library_names_the_library_used() -> None:
    out = support.run_python("import tessera; print(tessera.library_path)", support.python_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(support.LIBRARY)


def test_a_library_bundled_beside_the_package_is_found(tmp_path: Path) -> None:
    site = installed_copy(tmp_path, bundle=True)
    env = support.python_env(PYTHONPATH=str(site))
    env.pop("TESSERA_LIBRARY")
    out = support.run_python("import tessera; print(tessera.library_path)", env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(site / "tessera" / "libtessera.so.0")


def test_the_bundled_library_comes_before_tessera_library(tmp_path: Path) -> None:
    """A wheel's own library wins over TESSERA_LIBRARY (as wasmtime-py loads only its own),
    and the passed-over TESSERA_LIBRARY is named in a warning."""
    site = installed_copy(tmp_path, bundle=True)
    out = support.run_python(
        "import tessera; print(tessera.library_path)",
        support.python_env(PYTHONPATH=str(site), PYTHONWARNINGS="always"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(site / "tessera" / "libtessera.so.0")
    assert "RuntimeWarning" in out.stderr, out.stderr
    assert f"TESSERA_LIBRARY={support.LIBRARY} is set, but the package bundles" in out.stderr


def test_a_bundled_library_that_does_not_load_falls_back_with_a_warning(tmp_path: Path) -> None:
    site = installed_copy(tmp_path, bundle=False)
    broken = site / "tessera" / "libtessera.so.0"
    broken.write_bytes(b"not an ELF file\n")
    out = support.run_python(
        "import tessera; print(tessera.library_path)",
        support.python_env(PYTHONPATH=str(site), PYTHONWARNINGS="always"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(support.LIBRARY)
    assert "RuntimeWarning" in out.stderr and f"{broken}, did not load" in out.stderr


def test_a_missing_library_names_every_place_looked_at(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "libtessera.so"
    empty_pkg = tmp_path / "pkg"
    empty_pkg.mkdir()
    with pytest.raises(tessera.LibraryNotFoundError) as e:
        _ffi.load_library(
            environ={"TESSERA_LIBRARY": str(missing)},
            package_dir=empty_pkg,
            system_names=("libtessera-not-installed.so.0",),
            find_library=False,
        )
    err = e.value
    assert isinstance(err, ImportError)
    text = str(err)
    for place in (
        f"TESSERA_LIBRARY={missing}",
        f"{empty_pkg}/libtessera.so*",
        "libtessera-not-installed.so.0",
    ):
        assert place in text, f"{place!r} not named in:\n{text}"
    assert err.attempts[0][0] == f"beside the package: {empty_pkg}/libtessera.so*"
    assert err.attempts[1][0] == f"TESSERA_LIBRARY={missing}"
    assert len(err.attempts) == 3
    assert "Set TESSERA_LIBRARY" in text


def test_a_missing_library_without_tessera_library_says_it_was_not_set(tmp_path: Path) -> None:
    with pytest.raises(tessera.LibraryNotFoundError) as e:
        _ffi.load_library(
            environ={}, package_dir=tmp_path, system_names=("libtessera-absent.so.0",)
        )
    places = [p for p, _ in e.value.attempts]
    assert places[1] == "TESSERA_LIBRARY" and e.value.attempts[1][1] == "not set"
    assert any("find_library" in p for p in places), places
    assert places[-1] == "system library path: libtessera-absent.so.0"


def test_import_fails_cleanly_when_nothing_loads(tmp_path: Path) -> None:
    """The whole import, in a child interpreter, with a TESSERA_LIBRARY that does not exist
    and no bundled library: an ImportError naming every place tried. The system path stays
    in the search; should a libtessera be installed there, the import uses it and warns
    about TESSERA_LIBRARY instead."""
    site = installed_copy(tmp_path, bundle=False)
    missing = tmp_path / "nowhere" / "libtessera.so"
    env = support.python_env(PYTHONPATH=str(site), TESSERA_LIBRARY=str(missing))
    env.pop("LD_LIBRARY_PATH", None)
    out = support.run_python("import tessera", env, cwd=tmp_path)
    if system_has_libtessera(env):
        assert out.returncode == 0, out.stderr
        assert "RuntimeWarning" in out.stderr and str(missing) in out.stderr
        return
    assert out.returncode != 0
    assert "tessera.errors.LibraryNotFoundError" in out.stderr, out.stderr
    assert str(missing) in out.stderr
    assert f"{site / 'tessera'}/libtessera.so*" in out.stderr
    assert 'find_library("tessera")' in out.stderr
    assert "libtessera.so.0" in out.stderr


def system_has_libtessera(env: dict[str, str]) -> bool:
    """Whether the system library path (as the child sees it) holds a libtessera."""
    probe = (
        "import ctypes, ctypes.util\n"
        "ok = ctypes.util.find_library('tessera') is not None\n"
        "try:\n    ctypes.CDLL('libtessera.so.0'); ok = True\nexcept OSError: pass\n"
        "print(ok)\n"
    )
    out = support.run_python(probe, env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "True"


# --- the ABI check ---------------------------------------------------------------------------


def test_a_library_of_another_abi_is_refused_at_import(tmp_path: Path) -> None:
    fake = support.compile_shared(tmp_path, "libtessera.so", WRONG_ABI_SOURCE)
    out = support.run_python(
        "import tessera",
        support.python_env(TESSERA_LIBRARY=str(fake)),
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "tessera.errors.AbiMismatchError" in out.stderr, out.stderr
    assert str(fake) in out.stderr
    assert "ABI version 2" in out.stderr and "ABI version 1" in out.stderr


def test_abi_mismatch_error_carries_both_versions(tmp_path: Path) -> None:
    fake = support.compile_shared(tmp_path, "libtessera.so", WRONG_ABI_SOURCE)
    with pytest.raises(tessera.AbiMismatchError) as e:
        _ffi.load_library(environ={"TESSERA_LIBRARY": str(fake)}, package_dir=tmp_path)
    err = e.value
    assert isinstance(err, ImportError) and isinstance(err, tessera.LibraryLoadError)
    assert (err.library_abi, err.binding_abi) == (2, 1)
    assert err.path == str(fake)
    assert str(fake) in str(err)


def test_a_library_missing_functions_is_refused(tmp_path: Path) -> None:
    fake = support.compile_shared(tmp_path, "libtessera.so", HALF_A_LIBRARY_SOURCE)
    with pytest.raises(tessera.LibraryLoadError, match="lacks functions") as e:
        _ffi.load_library(environ={"TESSERA_LIBRARY": str(fake)}, package_dir=tmp_path)
    assert "tessera_open" in str(e.value) and str(fake) in str(e.value)


def test_a_library_that_is_not_tessera_is_refused(tmp_path: Path) -> None:
    fake = support.compile_shared(tmp_path, "libtessera.so", NOT_TESSERA_SOURCE)
    with pytest.raises(tessera.LibraryLoadError, match="not a Tessera library"):
        _ffi.load_library(environ={"TESSERA_LIBRARY": str(fake)}, package_dir=tmp_path)


def test_the_real_library_loads_through_every_route(tmp_path: Path) -> None:
    # TESSERA_LIBRARY.
    lib, path = _ffi.load_library(
        environ={"TESSERA_LIBRARY": str(support.LIBRARY)}, package_dir=tmp_path
    )
    assert path == str(support.LIBRARY) and lib.tessera_abi_version() == 1
    # Beside the package, with TESSERA_LIBRARY unset.
    shutil.copy2(support.LIBRARY, tmp_path / "libtessera.so.0")
    lib, path = _ffi.load_library(environ={}, package_dir=tmp_path)
    assert path == str(tmp_path / "libtessera.so.0")
    # The bundled one before TESSERA_LIBRARY, which is then named in a warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib, path = _ffi.load_library(
            environ={"TESSERA_LIBRARY": str(tmp_path / "none.so")}, package_dir=tmp_path
        )
    assert path == str(tmp_path / "libtessera.so.0")
    assert any(
        issubclass(w.category, RuntimeWarning) and "none.so" in str(w.message) for w in caught
    )

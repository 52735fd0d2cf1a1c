"""The C API of ``include/tessera.h`` in ctypes, and the loader of libtessera.

This module mirrors the header and nothing more: its ``TESSERA_*`` constants, its
structs, and the return and argument types of every exported function (``FUNCTIONS``).
``tests/test_header.py`` parses the header and fails when anything here differs from it.

The library is looked for, in this order (as wasmtime-py loads the library its wheel
ships):

1. a ``libtessera.so*`` beside this file: the library a platform wheel bundles
   (``scripts/build-wheel.sh``), built together with this binding;
2. the path in the ``TESSERA_LIBRARY`` environment variable (a package installed without
   a library, e.g. from the source tree);
3. the system's library path (``ctypes.util.find_library("tessera")``, then the soname
   ``libtessera.so.0``).

The first library that loads is used (a bundled library that does not load, and a
``TESSERA_LIBRARY`` passed over or not loading, give a ``RuntimeWarning``), and its
``tessera_abi_version()`` must equal ``TESSERA_ABI_VERSION``; otherwise importing
``tessera`` raises an ``ImportError`` subclass that names every place looked at, or the
library and both ABI versions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings
from collections.abc import Mapping
from ctypes import POINTER, c_char, c_char_p, c_int, c_int32, c_size_t, c_uint8, c_uint32, c_uint64
from pathlib import Path
from typing import Any

from .errors import AbiMismatchError, LibraryLoadError, LibraryNotFoundError

# --- #define TESSERA_* ---------------------------------------------------------------------
# The header this binding was written for (the library's own version may be newer; only
# the ABI version has to match).

TESSERA_VERSION_MAJOR = 0
TESSERA_VERSION_MINOR = 1
TESSERA_VERSION_PATCH = 0
TESSERA_VERSION_STRING = "0.1.0"
TESSERA_ABI_VERSION = 1

TESSERA_SOURCE_DONGLE = 1
TESSERA_SOURCE_SOFTWARE = 2
TESSERA_SOURCE_NETWORK = 4
TESSERA_SOURCE_ALL = 7

TESSERA_ACQUIRE_EXCLUSIVE = 1

TESSERA_CRYPT_DERIVED = 0
TESSERA_CRYPT_DIRECT = 1
TESSERA_CIPHERTEXT_OVERHEAD = 56

TESSERA_PUBLISHER_KEY_LEN = 32
TESSERA_SERIAL_MAX = 64

TESSERA_UNIT_STATION = 1
TESSERA_UNIT_SESSION = 2
TESSERA_UNIT_PROCESS = 3
TESSERA_UNIT_HANDLE = 4

TESSERA_TRANSPORT_NONE = 0
TESSERA_TRANSPORT_HID = 1
TESSERA_TRANSPORT_MSD = 2
TESSERA_TRANSPORT_USB = 3

TESSERA_CONTAINER_SOFTWARE = 1
TESSERA_CONTAINER_DONGLE = 2

TESSERA_LICENSE_EXCLUSIVE_ALLOWED = 1
TESSERA_LICENSE_BORROWED = 2
TESSERA_SEAT_BORROWED = 2

# --- types -----------------------------------------------------------------------------------

#: ``enum tessera_status`` (a C enum: an ``int``). Its values are ``errors.Status``.
tessera_status = c_int
#: ``tessera_session``: 0 is never a valid handle.
tessera_session = c_uint64
#: ``tessera_seat``: 0 is never a valid handle.
tessera_seat = c_uint64


class tessera_open_options(ctypes.Structure):
    """``struct tessera_open_options``. :func:`new_open_options` makes one with
    ``struct_size`` set; then set ``vendor_id`` and ``publisher_key``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("vendor_id", c_uint32),
        ("publisher_key", POINTER(c_uint8)),
        ("publisher_key_len", c_size_t),
        ("sources", c_uint32),
        ("timeout_ms", c_uint32),
        ("servers", c_char_p),
    ]


class tessera_seat_details(ctypes.Structure):
    """``struct tessera_seat_details``. Set ``struct_size`` to its ``sizeof`` before the call
    (:func:`new_seat_details` does)."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("vendor_id", c_uint32),
        ("product_code", c_uint32),
        ("features", c_uint32),
        ("quantity", c_uint32),
        ("seats_in_use", c_uint32),
        ("expiry", c_uint64),
        ("source", c_uint32),
        ("counting_unit", c_uint32),
        ("container_kind", c_uint32),
        ("flags", c_uint32),
        ("container_serial", c_char * TESSERA_SERIAL_MAX),
        ("transport", c_uint32),
        ("server", c_char * TESSERA_SERIAL_MAX),
    ]


class tessera_license_info(ctypes.Structure):
    """``struct tessera_license_info``: one entry of ``tessera_license_list``. The library
    sets ``struct_size`` of each entry to the bytes it filled in."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("vendor_id", c_uint32),
        ("product_code", c_uint32),
        ("features", c_uint32),
        ("quantity", c_uint32),
        ("seats_in_use", c_uint32),
        ("expiry", c_uint64),
        ("source", c_uint32),
        ("counting_unit", c_uint32),
        ("container_kind", c_uint32),
        ("flags", c_uint32),
        ("status", c_int32),
        ("transport", c_uint32),
        ("container_serial", c_char * TESSERA_SERIAL_MAX),
        ("server", c_char * TESSERA_SERIAL_MAX),
        ("borrowed_until", c_uint64),
    ]


def new_open_options() -> tessera_open_options:
    """A zeroed ``tessera_open_options`` with ``struct_size`` set: all sources, the default
    timeout, ``TESSERA_SERVERS`` (zero and NULL mean these)."""
    options = tessera_open_options()
    options.struct_size = ctypes.sizeof(tessera_open_options)
    return options


def new_seat_details() -> tessera_seat_details:
    """A zeroed ``tessera_seat_details`` with ``struct_size`` set, ready for the call."""
    details = tessera_seat_details()
    details.struct_size = ctypes.sizeof(tessera_seat_details)
    return details


_u8p = POINTER(c_uint8)
_sizep = POINTER(c_size_t)

#: Every function of the header: name -> (restype, argtypes).
FUNCTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "tessera_open_options_init": (tessera_status, (POINTER(tessera_open_options), c_size_t)),
    "tessera_open": (
        tessera_status,
        (POINTER(tessera_open_options), POINTER(tessera_session)),
    ),
    "tessera_close": (tessera_status, (tessera_session,)),
    "tessera_acquire": (
        tessera_status,
        (tessera_session, c_uint32, c_uint32, c_uint32, POINTER(tessera_seat)),
    ),
    "tessera_acquire_wait": (
        tessera_status,
        (tessera_session, c_uint32, c_uint32, c_uint32, c_uint32, POINTER(tessera_seat)),
    ),
    "tessera_license_list": (
        tessera_status,
        (tessera_session, POINTER(tessera_license_info), c_size_t, c_size_t, _sizep),
    ),
    "tessera_release": (tessera_status, (tessera_seat,)),
    "tessera_seat_info": (tessera_status, (tessera_seat, POINTER(tessera_seat_details))),
    "tessera_encrypt": (
        tessera_status,
        (tessera_seat, c_uint32, _u8p, c_size_t, _u8p, c_size_t, _sizep),
    ),
    "tessera_decrypt": (
        tessera_status,
        (tessera_seat, c_uint32, _u8p, c_size_t, _u8p, c_size_t, _sizep),
    ),
    "tessera_activation_request": (
        tessera_status,
        (tessera_session, _u8p, c_size_t, _sizep),
    ),
    "tessera_activation_install": (tessera_status, (tessera_session, _u8p, c_size_t)),
    "tessera_borrow": (
        tessera_status,
        (tessera_session, c_uint32, c_uint32, c_uint32, POINTER(c_uint64)),
    ),
    "tessera_return_borrowed": (tessera_status, (tessera_session, c_uint32)),
    "tessera_status_str": (c_char_p, (c_int32,)),
    "tessera_last_error": (c_char_p, ()),
    "tessera_version": (c_char_p, ()),
    "tessera_abi_version": (c_uint32, ()),
}


# --- loading ---------------------------------------------------------------------------------

PACKAGE_DIR = Path(__file__).resolve().parent
#: The sonames tried on the system library path after ``find_library``.
SYSTEM_NAMES: tuple[str, ...] = ("libtessera.so.0",)


def _bundled(package_dir: Path) -> list[Path]:
    """The ``libtessera.so*`` files in ``package_dir``: ``libtessera.so`` first, then the
    versioned names in order."""
    found = [p for p in package_dir.glob("libtessera.so*") if p.is_file()]
    return sorted(found, key=lambda p: (p.name != "libtessera.so", p.name))


def load_library(
    environ: Mapping[str, str] | None = None,
    package_dir: Path | None = None,
    system_names: tuple[str, ...] | None = None,
    find_library: bool = True,
) -> tuple[ctypes.CDLL, str]:
    """Loads libtessera from the first place it is found (see the module's doc), checks its
    ABI version and declares every function. Returns the library and where it came from.

    The arguments exist for tests: they replace the environment, the package directory,
    the sonames tried on the system path, and whether ``ctypes.util.find_library`` runs.
    """
    env = os.environ if environ is None else environ
    pkg = PACKAGE_DIR if package_dir is None else package_dir
    names = SYSTEM_NAMES if system_names is None else system_names
    attempts: list[tuple[str, str]] = []

    def attempt(place: str, path: str) -> ctypes.CDLL | None:
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            attempts.append((place, str(e) or "does not load"))
            return None

    lib: ctypes.CDLL | None = None
    path = ""
    bundled = _bundled(pkg)
    if not bundled:
        attempts.append((f"beside the package: {pkg}/libtessera.so*", "no such file"))
    for candidate in bundled:
        lib = attempt(f"beside the package: {candidate}", str(candidate))
        if lib is not None:
            path = str(candidate)
            break

    override = env.get("TESSERA_LIBRARY", "")
    if lib is None:
        if override:
            lib = attempt(f"TESSERA_LIBRARY={override}", override)
            path = override
        else:
            attempts.append(("TESSERA_LIBRARY", "not set"))

    if lib is None and find_library:
        found = ctypes.util.find_library("tessera")
        if found is None:
            attempts.append(('system: ctypes.util.find_library("tessera")', "not found"))
        else:
            lib = attempt(f'system: ctypes.util.find_library("tessera") = {found}', found)
            path = found

    if lib is None:
        for name in names:
            lib = attempt(f"system library path: {name}", name)
            if lib is not None:
                path = name
                break

    if lib is None:
        lines = "\n".join(f"  - {place}: {why}" for place, why in attempts)
        raise LibraryNotFoundError(
            "libtessera could not be loaded; looked at, in order:\n"
            f"{lines}\n"
            "Set TESSERA_LIBRARY to the path of libtessera.so.",
            attempts,
        )

    if bundled and path not in map(str, bundled):
        failed = dict(attempts).get(f"beside the package: {bundled[0]}", "did not load")
        warnings.warn(
            f"the library bundled with the package, {bundled[0]}, did not load ({failed}); "
            f"using {path} instead",
            RuntimeWarning,
            stacklevel=2,
        )
    elif override and path != override:
        reason = dict(attempts).get(f"TESSERA_LIBRARY={override}")
        why = f"did not load ({reason})" if reason else "is set, but the package bundles a library"
        warnings.warn(
            f"TESSERA_LIBRARY={override} {why}; using {path} instead",
            RuntimeWarning,
            stacklevel=2,
        )

    check_abi(lib, path)
    declare(lib, path)
    return lib, path


def check_abi(lib: ctypes.CDLL, path: str) -> None:
    """Raises ``AbiMismatchError`` unless ``lib`` speaks ``TESSERA_ABI_VERSION``."""
    try:
        abi_version = lib.tessera_abi_version
    except AttributeError:
        raise LibraryLoadError(
            f"{path} is not a Tessera library: it has no tessera_abi_version", path=path
        ) from None
    abi_version.restype = c_uint32
    abi_version.argtypes = []
    found = int(abi_version())
    if found != TESSERA_ABI_VERSION:
        raise AbiMismatchError(path, found, TESSERA_ABI_VERSION)


def declare(lib: ctypes.CDLL, path: str) -> None:
    """Sets ``restype`` and ``argtypes`` of every function in ``FUNCTIONS`` on ``lib``."""
    missing = [name for name in FUNCTIONS if not hasattr(lib, name)]
    if missing:
        raise LibraryLoadError(
            f"{path} lacks functions of Tessera ABI {TESSERA_ABI_VERSION}: {', '.join(missing)}",
            path=path,
        )
    for name, (restype, argtypes) in FUNCTIONS.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = list(argtypes)


lib, library_path = load_library()


def last_error() -> str:
    """``tessera_last_error()``: this thread's detail of the last failed call."""
    raw: bytes | None = lib.tessera_last_error()
    return (raw or b"").decode("utf-8", errors="replace")


def status_str(status: int) -> str:
    """``tessera_status_str(status)``: a status in words."""
    raw: bytes | None = lib.tessera_status_str(status)
    return (raw or b"").decode("utf-8", errors="replace")

"""Tessera for Python: acquire a seat of a licensed product and encrypt with its key.

::

    import tessera

    with tessera.Session(VENDOR_ID, PUBLISHER_KEY) as session:
        with session.acquire(1, features=0x1) as seat:
            print(seat.info.seats_in_use, "seat(s) in use")
            ciphertext = seat.encrypt(b"data only licensed users can read")
            assert seat.decrypt(ciphertext) == b"data only licensed users can read"

A ctypes binding of libtessera's C API (``include/tessera.h``). Importing it loads the
library (a ``libtessera.so*`` bundled beside the package, as a platform wheel ships it,
else ``TESSERA_LIBRARY``, else the system library path) and refuses one of another ABI
version with an ``ImportError``.
Every failing call raises a :class:`TesseraError` subclass.
"""

from __future__ import annotations

from . import _ffi, _session, errors
from ._demo import DEMO_PRODUCT_CODE, DEMO_PUBLISHER_KEY, DEMO_VENDOR_ID
from ._session import *  # noqa: F403  (sessions, seats and their enums: _session.__all__)
from .errors import *  # noqa: F403  (Status and the exception classes: errors.__all__)

#: The package version: the version of the C header it mirrors, Cargo.toml's version.
__version__: str = _ffi.TESSERA_VERSION_STRING

#: The ABI version this binding was written for (``TESSERA_ABI_VERSION``).
ABI_VERSION: int = _ffi.TESSERA_ABI_VERSION
#: Bytes a ciphertext adds to its plaintext.
CIPHERTEXT_OVERHEAD: int = _ffi.TESSERA_CIPHERTEXT_OVERHEAD
#: Length of a publisher public key (Ed25519).
PUBLISHER_KEY_LEN: int = _ffi.TESSERA_PUBLISHER_KEY_LEN

#: Where the loaded libtessera came from (a path, or a soname found on the system path).
library_path: str = _ffi.library_path


def library_version() -> str:
    """The loaded library's version (``tessera_version()``), e.g. "0.1.0"."""
    raw: bytes | None = _ffi.lib.tessera_version()
    return (raw or b"").decode("utf-8", errors="replace")


def library_abi_version() -> int:
    """The loaded library's ABI version (``tessera_abi_version()``); equal to
    :data:`ABI_VERSION`, or the import would have failed."""
    return int(_ffi.lib.tessera_abi_version())


def status_str(status: int) -> str:
    """A status in words (``tessera_status_str``): "no seat available"."""
    return _ffi.status_str(status)


__all__ = [
    "ABI_VERSION",
    "CIPHERTEXT_OVERHEAD",
    "DEMO_PRODUCT_CODE",
    "DEMO_PUBLISHER_KEY",
    "DEMO_VENDOR_ID",
    "PUBLISHER_KEY_LEN",
    "library_abi_version",
    "library_path",
    "library_version",
    "status_str",
]
__all__ += _session.__all__
__all__ += errors.__all__

"""The demo publisher: PUBLIC and INSECURE, for examples and tests only.

Its private key is built into ``tessera-vendor keygen --demo``, so anyone can issue
licenses for it: a product protected with these constants is not protected at all. A real
app compiles in its own vendor id and publisher public key (``tessera-vendor keygen``
prints them).
"""

from __future__ import annotations

__all__ = ["DEMO_PRODUCT_CODE", "DEMO_PUBLISHER_KEY", "DEMO_VENDOR_ID"]

#: The demo publisher's vendor id. Public and insecure: for examples and tests only.
DEMO_VENDOR_ID: int = 0x7E55

#: The demo publisher's Ed25519 public key (as in examples/c/quickstart.c). Its private key
#: is public knowledge: licenses "signed" with it prove nothing. Examples and tests only.
DEMO_PUBLISHER_KEY: bytes = bytes(
    [
        0x3B, 0x9A, 0x9C, 0x54, 0x9E, 0xC7, 0x59, 0xD5,
        0x34, 0x40, 0x96, 0xD0, 0xEA, 0xA5, 0xE7, 0xE7,
        0xFE, 0x34, 0x97, 0x5E, 0x17, 0x7C, 0x58, 0x6E,
        0x78, 0xBD, 0xB7, 0x0B, 0xC2, 0x72, 0x9B, 0x18,
    ]
)  # fmt: skip

#: The demo product of the quickstarts.
DEMO_PRODUCT_CODE: int = 1

#!/usr/bin/env python3
"""quickstart.py: a protected app in Python, end to end (examples/c/quickstart.c's steps).

Opens the Tessera runtime for a publisher, acquires a seat of a product, shows the seat,
encrypts and decrypts a message with the product's key (derived mode, then direct mode),
checks that a flipped bit is caught, releases the seat and closes. Prints each step.

It uses the built-in demo publisher (vendor 0x7E55, product 1), whose key is public and
protects nothing. The license is found wherever the runtime finds it: a dongle, a software
container in TESSERA_HOME, or a license server (TESSERA_SERVERS). A real app passes its own
vendor id and publisher key (tessera-vendor keygen prints them).

    PYTHONPATH=bindings/python/src TESSERA_LIBRARY=target/debug/libtessera.so \\
        python3 examples/python/quickstart.py
"""

from __future__ import annotations

import sys

import tessera

UNITS = {
    tessera.CountingUnit.STATION: "station",
    tessera.CountingUnit.SESSION: "session",
    tessera.CountingUnit.PROCESS: "process",
    tessera.CountingUnit.HANDLE: "handle",
}


def step(name: str, detail: str = "ok") -> None:
    print(f"{name:<28} {detail}")


def describe(info: tessera.SeatInfo) -> None:
    print(
        f"  product {info.product_code} of vendor {info.vendor_id:#x}, features {info.features:#x}"
    )
    unit = UNITS.get(info.counting_unit, "?")
    print(f"  {info.seats_in_use} of {info.quantity} seat(s) in use, counted per {unit}")
    if info.container_kind == tessera.ContainerKind.SOFTWARE:
        kind = "software container"
    else:
        kind = {
            tessera.Transport.HID: "dongle, HID mode",
            tessera.Transport.MSD: "dongle, mass-storage mode",
        }.get(info.transport, "dongle, USB")
    expires = info.expires_at.isoformat() if info.expires_at else "never"
    print(f"  container {info.container_serial} ({kind}), expires {expires}")
    if info.source == tessera.Source.NETWORK:
        print(f"  served by license server {info.server}")


def round_trip(seat: tessera.Seat, mode: tessera.Mode, label: str, message: str) -> bool:
    """Encrypts ``message`` in ``mode``, decrypts it, and checks a flipped bit is caught."""
    plaintext = message.encode()
    ciphertext = seat.encrypt(plaintext, mode=mode)
    step(f"encrypt ({label})")
    print(f"  {len(plaintext)} bytes of plaintext -> {len(ciphertext)} bytes of ciphertext")

    decrypted = seat.decrypt(ciphertext)
    step(f"decrypt ({label})")
    ok = decrypted == plaintext
    print(f"  round trip {'matches' if ok else 'DIFFERS'}: {decrypted.decode(errors='replace')!r}")

    # Any change to the ciphertext is caught.
    tampered = bytearray(ciphertext)
    tampered[len(tampered) // 2] ^= 0x01
    try:
        seat.decrypt(bytes(tampered))
    except tessera.TamperedError:
        print("  flipped bit detected: yes")
        return ok
    print("  flipped bit detected: NO")
    return False


def main() -> int:
    print(f"Tessera {tessera.library_version()} (ABI {tessera.library_abi_version()})")
    print(f"  library {tessera.library_path}")
    print("  demo publisher: its key is PUBLIC and INSECURE, for examples only")
    try:
        # All sources: a dongle first, then a software container, then a license server.
        with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as session:
            step("open")
            try:
                seat = session.acquire(tessera.DEMO_PRODUCT_CODE, features=0x1)
            except tessera.LicenseError:
                print(
                    "hint: activate this machine first (README: tessera activate request/install)"
                )
                raise
            step(f"acquire product {tessera.DEMO_PRODUCT_CODE}")
            with seat:
                info = seat.info
                step("seat info")
                describe(info)
                ok = round_trip(
                    seat, tessera.Mode.DERIVED, "derived mode", "Hello from a protected app"
                ) and round_trip(
                    seat, tessera.Mode.DIRECT, "direct mode", "Keys never leave the container"
                )
            step("release")
            # A released seat is refused, never undefined behaviour.
            try:
                seat.encrypt(b"after release")
                print("  use after release -> NOT refused")
                ok = False
            except tessera.InvalidHandleError as e:
                print(f"  use after release -> {e.status.name}")
        step("close")
    except tessera.TesseraError as e:
        step(
            e.function or "tessera",
            f"FAILED: {tessera.status_str(e.status)} ({int(e.status)}): {e.message}",
        )
        ok = False

    print("quickstart: all steps succeeded" if ok else "quickstart: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

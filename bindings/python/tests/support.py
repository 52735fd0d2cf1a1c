"""Shared set-up of the binding's tests: the real library, a licensed home, helpers.

conftest.py imports this module before any test module imports ``tessera``.

``scripts/test-python.sh`` exports ``TESSERA_LIBRARY``, ``TESSERA_HOME`` (made by
``scripts/licensed-home.sh``) and ``TESSERA_BIN_DIR``. Run by hand, the tests fall back to
``target/debug`` of this repository and make their own licensed home. The licensed home
holds, for the demo publisher (vendor 0x7E55):

* product 1: features 0xff, 2 seats per process, exclusive allowed;
* product 2: features 0xff, 1 seat per handle;
* product 3: features 0x01, 10 seats per handle.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PACKAGE_SRC = REPO_ROOT / "bindings" / "python" / "src"
HEADER = REPO_ROOT / "include" / "tessera.h"

os.environ.setdefault("TESSERA_DISCOVERY", "off")
os.environ.setdefault("TESSERA_LIBRARY", str(REPO_ROOT / "target" / "debug" / "libtessera.so"))
os.environ.setdefault("TESSERA_BIN_DIR", str(Path(os.environ["TESSERA_LIBRARY"]).parent))
# A license server given by the caller would change where licenses come from.
os.environ.pop("TESSERA_SERVERS", None)

BIN_DIR = Path(os.environ["TESSERA_BIN_DIR"])
LIBRARY = Path(os.environ["TESSERA_LIBRARY"])

own_home: str | None = None
if not os.environ.get("TESSERA_HOME"):
    own_home = tempfile.mkdtemp(prefix="tessera-pytest-home.")
    subprocess.run(
        [str(REPO_ROOT / "scripts" / "licensed-home.sh"), str(BIN_DIR), f"{own_home}/home"],
        check=True,
        capture_output=True,
    )
    os.environ["TESSERA_HOME"] = f"{own_home}/home"

# The tests exercise the tree's package, whatever is installed.
sys.path.insert(0, str(PACKAGE_SRC))

#: A valid Ed25519 public key that is not the demo publisher's (from `tessera-vendor keygen`).
OTHER_PUBLISHER_KEY = bytes.fromhex(
    "987d566ded865e1e43896841d6d8afba4e271729ea533595aacfdad26ec4a6cd"
)


def tool(name: str, *args: str | Path, env: dict[str, str] | None = None) -> str:
    """Runs a Tessera command-line tool of BIN_DIR; returns its stdout, fails loudly."""
    out = subprocess.run(
        [str(BIN_DIR / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, f"{name} {args} failed:\n{out.stdout}{out.stderr}"
    return out.stdout


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports the tree's package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_SRC)
    env.update(extra)
    return env


def run_python(
    code: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a child Python."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def compile_shared(tmp: Path, name: str, source: str) -> Path:
    """Compiles C ``source`` into a shared library ``tmp/name`` with the system's cc."""
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / name
    cc = subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(out), str(src)], capture_output=True, text=True
    )
    assert cc.returncode == 0, cc.stderr
    return out


def keygen(directory: Path, vendor_id: int | None = None) -> tuple[Path, bytes]:
    """A publisher key file in ``directory`` (the demo key when ``vendor_id`` is None) and
    its public key."""
    key = directory / ("demo.key" if vendor_id is None else f"vendor-{vendor_id:x}.key")
    if vendor_id is None:
        tool("tessera-vendor", "keygen", "--demo", "--out", key)
    else:
        tool(
            "tessera-vendor",
            "keygen",
            "--vendor-id",
            str(vendor_id),
            "--name",
            "Test Publisher",
            "--out",
            key,
        )
    # The public key file beside it: "tessera-publisher <vendor> <hex>".
    fields = key.with_suffix(".pub").read_text().split()
    assert fields[0] == "tessera-publisher", fields
    return key, bytes.fromhex(fields[2])


def activate(home: Path, key: Path, vendor_id: int, product: int, *license_args: str) -> None:
    """Activates ``home`` for a license of ``product`` issued with ``key``, the way a
    customer and a publisher do it with the command-line tools."""
    env = dict(os.environ, TESSERA_HOME=str(home))
    request, activation = home.parent / "request.bin", home.parent / "activation.bin"
    tool("tessera", "activate", "request", "--vendor-id", str(vendor_id), "--out", request, env=env)
    tool(
        "tessera-vendor", "activate", "--key", key, "--request", request, "--out", activation,
        "--product", str(product), *license_args,
    )  # fmt: skip
    tool("tessera", "activate", "install", activation, env=env)

"""The ctypes declarations cannot drift from include/tessera.h.

Parses the header (function prototypes, struct fields, ``#define TESSERA_*`` constants, the
status enum) and checks the binding against it: every function declared with the same
return and argument C types, structs with the same fields in the same order (and, compiled
by cc, the same offsets and sizes), every constant and status with the same number.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import support
import tessera
from tessera import _ffi

# --- a small parser for the header cbindgen writes --------------------------------------------


@dataclass
class Header:
    defines: dict[str, int | str]
    typedefs: dict[str, str]  # scalar typedefs: name -> C type
    enum: dict[str, int]  # tessera_status
    structs: dict[str, list[tuple[str, str, int | None]]]  # name -> (C type, field, array len)
    functions: dict[str, tuple[str, list[str]]]  # name -> (return C type, parameter C types)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _norm(ctype: str) -> str:
    """One spelling of a C type: single spaces, ``*`` attached as `` *``."""
    ctype = re.sub(r"\s*\*\s*", " * ", ctype)
    return " ".join(ctype.split()).replace("* *", "**")


def _split_decl(decl: str) -> tuple[str, str, str | None]:
    """``const uint8_t *publisher_key`` -> (``const uint8_t *``, ``publisher_key``, None);
    ``char server[TESSERA_SERIAL_MAX]`` -> (``char``, ``server``, ``TESSERA_SERIAL_MAX``)."""
    m = re.fullmatch(r"(.*?)(\w+)\s*(?:\[(\w+)\])?", decl.strip(), flags=re.S)
    assert m, f"cannot parse declaration {decl!r}"
    ctype, name, length = m.group(1), m.group(2), m.group(3)
    return _norm(ctype), name, length


def parse_header(path: Path) -> Header:
    raw = path.read_text()
    text = _strip_comments(raw)
    defines: dict[str, int | str] = {}
    for name, value in re.findall(r"^\s*#define\s+(TESSERA_\w+)[ \t]+(.+?)\s*$", text, flags=re.M):
        if value.startswith('"'):
            defines[name] = value.strip('"')
        else:
            defines[name] = int(value, 0)

    def array_len(length: str | None) -> int | None:
        if length is None:
            return None
        return int(length, 0) if length[0].isdigit() else int(defines[length])

    enum_m = re.search(
        r"typedef\s+enum\s+tessera_status\s*\{(.*?)\}\s*tessera_status\s*;", text, re.S
    )
    assert enum_m, "no tessera_status enum in the header"
    enum = {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(-?\d+)", enum_m.group(1))}

    structs: dict[str, list[tuple[str, str, int | None]]] = {}
    for name, body, alias in re.findall(
        r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, re.S
    ):
        assert name == alias
        fields = []
        for decl in body.split(";"):
            if decl.strip():
                ctype, field, length = _split_decl(decl)
                fields.append((ctype, field, array_len(length)))
        structs[name] = fields

    typedefs = dict(
        (name, _norm(ctype))
        for ctype, name in re.findall(r"typedef\s+([\w ]+?)\s+(tessera_\w+)\s*;", text)
    )

    # Prototypes: what is left once preprocessor lines and typedef blocks are gone.
    body = re.sub(r"^\s*#.*$", " ", text, flags=re.M)
    body = re.sub(r"typedef\s+(enum|struct)\s+\w+\s*\{.*?\}\s*\w+\s*;", " ", body, flags=re.S)
    body = re.sub(r'extern\s+"C"\s*\{|\}', " ", body)
    functions: dict[str, tuple[str, list[str]]] = {}
    for ret, name, params in re.findall(r"([\w\s\*]+?)\s*\b(tessera_\w+)\s*\(([^)]*)\)\s*;", body):
        ret = _norm(ret)
        if ret.startswith("typedef"):
            continue
        plist = [p for p in (s.strip() for s in params.split(",")) if p and p != "void"]
        functions[name] = (ret, [_split_decl(p)[0] for p in plist])
    return Header(defines, typedefs, enum, structs, functions)


HEADER = parse_header(support.HEADER)

# --- C types to ctypes -----------------------------------------------------------------------

_SCALARS: dict[str, Any] = {
    "uint8_t": ctypes.c_uint8,
    "uint32_t": ctypes.c_uint32,
    "int32_t": ctypes.c_int32,
    "uint64_t": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
    "char": ctypes.c_char,
    # A C enum whose values fit an int is an int.
    "enum tessera_status": ctypes.c_int,
    "struct tessera_open_options": _ffi.tessera_open_options,
    "struct tessera_seat_details": _ffi.tessera_seat_details,
    "struct tessera_license_info": _ffi.tessera_license_info,
}


def to_ctypes(ctype: str) -> Any:
    """The ctypes type the binding must use for a C type of the header."""
    ctype = _norm(ctype)
    if ctype in ("const char *", "char *"):
        return ctypes.c_char_p
    if ctype.endswith(" *"):
        return ctypes.POINTER(to_ctypes(ctype[: -len(" *")]))
    ctype = ctype.removeprefix("const ").strip()
    if ctype in HEADER.typedefs:
        return to_ctypes(HEADER.typedefs[ctype])
    assert ctype in _SCALARS, f"the test does not know the C type {ctype!r}"
    return _SCALARS[ctype]


def type_name(t: Any) -> str:
    return getattr(t, "__name__", repr(t))


# --- the parser itself works -----------------------------------------------------------------


def test_the_parser_finds_the_whole_header() -> None:
    # Counts from reading the header; a parser that silently misses parts fails here.
    assert len(HEADER.functions) >= 16, sorted(HEADER.functions)
    assert {"tessera_open", "tessera_encrypt", "tessera_abi_version"} <= set(HEADER.functions)
    assert HEADER.functions["tessera_encrypt"][1] == [
        "tessera_seat", "uint32_t", "const uint8_t *", "size_t", "uint8_t *", "size_t", "size_t *",
    ]  # fmt: skip
    assert HEADER.functions["tessera_last_error"] == ("const char *", [])
    assert set(HEADER.structs) == {
        "tessera_open_options", "tessera_seat_details", "tessera_license_info",
    }  # fmt: skip
    assert HEADER.functions["tessera_license_list"][1] == [
        "tessera_session", "struct tessera_license_info *", "size_t", "size_t", "size_t *",
    ]  # fmt: skip
    assert HEADER.enum["TESSERA_OK"] == 0 and HEADER.enum["TESSERA_E_PANIC"] == 901
    assert HEADER.typedefs["tessera_session"] == "uint64_t"
    assert HEADER.defines["TESSERA_ABI_VERSION"] == 1
    # Every prototype-looking line of the raw header was parsed.
    raw_names = set(
        re.findall(r"\b(tessera_\w+)\s*\(", _strip_comments(support.HEADER.read_text()))
    )
    assert raw_names == set(HEADER.functions)


# --- functions -------------------------------------------------------------------------------


def test_every_header_function_is_declared_and_nothing_else() -> None:
    assert set(_ffi.FUNCTIONS) == set(HEADER.functions)


@pytest.mark.parametrize("name", sorted(HEADER.functions))
def test_function_types_match_the_header(name: str) -> None:
    ret, params = HEADER.functions[name]
    restype, argtypes = _ffi.FUNCTIONS[name]
    assert restype is to_ctypes(ret), f"{name} returns {ret}, bound as {type_name(restype)}"
    assert len(argtypes) == len(params), f"{name} takes {len(params)} arguments"
    for i, (c, bound) in enumerate(zip(params, argtypes)):
        assert bound is to_ctypes(c), f"{name} argument {i} is {c}, bound as {type_name(bound)}"
    # And the loaded library's function objects carry exactly these declarations.
    fn = getattr(_ffi.lib, name)
    assert fn.restype is restype
    assert list(fn.argtypes) == list(argtypes)


def test_every_function_the_library_exports_is_declared() -> None:
    nm = shutil.which("nm")
    assert nm, "nm (binutils) is needed to list the library's exports"
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(support.LIBRARY)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = {
        parts[2] for parts in (line.split() for line in out.splitlines())
        if len(parts) == 3 and parts[1] == "T" and parts[2].startswith("tessera_")
    }  # fmt: skip
    assert exported, "no tessera_ function found in the library"
    assert exported == set(_ffi.FUNCTIONS), exported ^ set(_ffi.FUNCTIONS)


# --- structs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("struct", sorted(HEADER.structs))
def test_struct_fields_match_the_header(struct: str) -> None:
    bound = getattr(_ffi, struct)
    fields = HEADER.structs[struct]
    assert [f[0] for f in bound._fields_] == [name for _, name, _ in fields]
    for (name, t), (ctype, _, length) in zip(bound._fields_, fields):
        if length is None:
            assert t is to_ctypes(ctype), f"{struct}.{name} is {ctype}, bound as {type_name(t)}"
        else:
            assert issubclass(t, ctypes.Array), f"{struct}.{name} is an array"
            assert t._length_ == length, f"{struct}.{name} has {length} elements"
            assert t._type_ is to_ctypes(ctype), f"{struct}.{name} elements are {ctype}"


def test_struct_layout_matches_the_c_compiler(tmp_path: Path) -> None:
    """sizeof and every offsetof as cc sees the header, against ctypes."""
    lines = []
    for struct, fields in HEADER.structs.items():
        lines.append(f'printf("{struct} sizeof %zu\\n", sizeof(struct {struct}));')
        for _, field, _ in fields:
            lines.append(f'printf("{struct} {field} %zu\\n", offsetof(struct {struct}, {field}));')
    src = tmp_path / "layout.c"
    src.write_text(
        '#include <stddef.h>\n#include <stdio.h>\n#include "tessera.h"\n'
        "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    exe = tmp_path / "layout"
    cc = subprocess.run(
        [
            "cc",
            "-std=c11",
            "-Wall",
            "-Werror",
            "-I",
            str(support.HEADER.parent),
            str(src),
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert cc.returncode == 0, cc.stderr
    seen = 0
    for line in subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        struct, what, value = line.split()
        bound = getattr(_ffi, struct)
        got = ctypes.sizeof(bound) if what == "sizeof" else getattr(bound, what).offset
        assert got == int(value), f"{struct} {what}: C says {value}, ctypes {got}"
        seen += 1
    assert seen == sum(len(f) + 1 for f in HEADER.structs.values())


# --- constants and statuses ------------------------------------------------------------------


def test_every_define_is_mirrored_with_its_value() -> None:
    for name, value in HEADER.defines.items():
        assert hasattr(_ffi, name), f"{name} is missing from tessera._ffi"
        assert getattr(_ffi, name) == value, f"{name} is {value} in the header"
    mirrored = {n for n in vars(_ffi) if n.startswith("TESSERA_") and n.isupper()}
    assert mirrored == set(HEADER.defines), mirrored ^ set(HEADER.defines)


def test_status_enum_matches_the_header() -> None:
    header = {
        name.removeprefix("TESSERA_").removeprefix("E_"): v for name, v in HEADER.enum.items()
    }
    assert {s.name: int(s) for s in tessera.Status} == header


@pytest.mark.parametrize(
    "prefix, enum",
    [
        ("TESSERA_SOURCE_", tessera.Source),
        ("TESSERA_ACQUIRE_", tessera.AcquireFlag),
        ("TESSERA_CRYPT_", tessera.Mode),
        ("TESSERA_UNIT_", tessera.CountingUnit),
        ("TESSERA_TRANSPORT_", tessera.Transport),
        ("TESSERA_CONTAINER_", tessera.ContainerKind),
        ("TESSERA_LICENSE_", tessera.LicenseFlag),
    ],
)
def test_constant_families_match_their_enums(prefix: str, enum: Any) -> None:
    header = {n.removeprefix(prefix): v for n, v in HEADER.defines.items() if n.startswith(prefix)}
    assert header, f"no {prefix}* constants in the header"
    assert {m.name: int(m.value) for m in enum.__members__.values()} == header


def test_public_constants_match_the_header() -> None:
    assert tessera.ABI_VERSION == HEADER.defines["TESSERA_ABI_VERSION"]
    assert tessera.CIPHERTEXT_OVERHEAD == HEADER.defines["TESSERA_CIPHERTEXT_OVERHEAD"]
    assert tessera.PUBLISHER_KEY_LEN == HEADER.defines["TESSERA_PUBLISHER_KEY_LEN"]


def test_demo_constants_match_the_c_quickstart() -> None:
    c = (support.REPO_ROOT / "examples" / "c" / "quickstart.c").read_text()
    vendor = re.search(r"#define\s+DEMO_VENDOR_ID\s+(0x[0-9A-Fa-f]+)", c)
    key = re.search(r"PUBLISHER_KEY\[TESSERA_PUBLISHER_KEY_LEN\]\s*=\s*\{(.*?)\}", c, re.S)
    assert vendor and key
    assert tessera.DEMO_VENDOR_ID == int(vendor.group(1), 16) == 0x7E55
    key_bytes = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-fA-F]{2})", key.group(1)))
    assert len(key_bytes) == tessera.PUBLISHER_KEY_LEN
    assert tessera.DEMO_PUBLISHER_KEY == key_bytes


# --- struct_size: the library and the binding agree on the struct versions ------------------


def test_open_options_init_writes_exactly_the_struct_the_binding_knows() -> None:
    size = ctypes.sizeof(_ffi.tessera_open_options)
    buf = (ctypes.c_uint8 * (size + 64))(*([0xAA] * (size + 64)))
    opts = ctypes.cast(buf, ctypes.POINTER(_ffi.tessera_open_options))
    assert _ffi.lib.tessera_open_options_init(opts, size) == tessera.Status.OK
    assert opts.contents.struct_size == size
    assert opts.contents.sources == _ffi.TESSERA_SOURCE_ALL
    assert opts.contents.timeout_ms == 5000
    assert bytes(buf[size:]) == b"\xaa" * 64, "init wrote past the struct this binding knows"
    # A size that is no version of the struct is refused, and nothing is written.
    assert _ffi.lib.tessera_open_options_init(opts, 8) == tessera.Status.INVALID_ARGUMENT
    assert _ffi.new_open_options().struct_size == size
    assert _ffi.new_seat_details().struct_size == ctypes.sizeof(_ffi.tessera_seat_details)


def test_open_options_from_a_newer_header_are_refused_when_they_use_new_fields() -> None:
    """struct_size at work: a bigger struct with zeros in the unknown tail is accepted; with
    anything else there it is UNSUPPORTED."""
    size = ctypes.sizeof(_ffi.tessera_open_options)

    class Newer(ctypes.Structure):
        _fields_ = [("known", _ffi.tessera_open_options), ("future", ctypes.c_uint64)]

    key = (ctypes.c_uint8 * 32).from_buffer_copy(tessera.DEMO_PUBLISHER_KEY)
    newer = Newer()
    newer.known.struct_size = ctypes.sizeof(Newer)
    newer.known.vendor_id = tessera.DEMO_VENDOR_ID
    newer.known.publisher_key = ctypes.cast(key, ctypes.POINTER(ctypes.c_uint8))
    newer.known.publisher_key_len = 32
    assert ctypes.sizeof(Newer) > size
    options = ctypes.cast(ctypes.pointer(newer), ctypes.POINTER(_ffi.tessera_open_options))
    handle = _ffi.tessera_session(0)
    assert _ffi.lib.tessera_open(options, ctypes.byref(handle)) == tessera.Status.OK
    assert _ffi.lib.tessera_close(handle) == tessera.Status.OK
    newer.future = 1
    handle = _ffi.tessera_session(0)
    assert _ffi.lib.tessera_open(options, ctypes.byref(handle)) == tessera.Status.UNSUPPORTED
    assert "does not know" in _ffi.last_error()
    assert handle.value == 0, "an out-parameter was written on failure"


def test_seat_info_writes_no_more_than_struct_size(session: tessera.Session) -> None:
    """An app compiled against an older, shorter tessera_seat_details gets that prefix."""
    size = ctypes.sizeof(_ffi.tessera_seat_details)
    buf = (ctypes.c_uint8 * size)(*([0xAA] * size))
    details = _ffi.tessera_seat_details.from_buffer(buf)
    details.struct_size = 16  # struct_size, vendor_id, product_code, features
    with session.acquire(3) as seat:
        assert _ffi.lib.tessera_seat_info(seat.handle, ctypes.byref(details)) == tessera.Status.OK
    assert (details.struct_size, details.vendor_id, details.product_code) == (16, 0x7E55, 3)
    assert details.features == 0x01
    assert bytes(buf[16:]) == b"\xaa" * (size - 16)


def test_license_list_fills_a_newer_larger_entry_as_far_as_it_knows() -> None:
    """entry_size at work: an app compiled against a newer header passes its bigger entry;
    each entry gets the library's struct, struct_size says how far, the rest is zeros, and
    nothing is written past the entries listed. (Software containers only: the count is
    exact.)"""
    with tessera.Session(
        tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY, sources=tessera.Source.SOFTWARE
    ) as session:
        _check_newer_entries(session)


def _check_newer_entries(session: tessera.Session) -> None:
    size = ctypes.sizeof(_ffi.tessera_license_info)

    class Newer(ctypes.Structure):
        _fields_ = [("known", _ffi.tessera_license_info), ("future", ctypes.c_uint8 * 16)]

    entry = ctypes.sizeof(Newer)
    buf = (ctypes.c_uint8 * (entry * 4))(*([0xAB] * (entry * 4)))
    out = ctypes.cast(buf, ctypes.POINTER(_ffi.tessera_license_info))
    count = ctypes.c_size_t(0)
    lib = _ffi.lib
    assert lib.tessera_license_list(session.handle, out, 4, entry, ctypes.byref(count)) == 0
    assert count.value == 3  # products 1, 2, 3 of the licensed home
    entries = [Newer.from_buffer(buf, i * entry) for i in range(3)]
    assert sorted(e.known.product_code for e in entries) == [1, 2, 3]
    for e in entries:
        assert e.known.struct_size == size
        assert e.known.vendor_id == tessera.DEMO_VENDOR_ID
        assert bytes(e.future) == bytes(16), "the part this library does not know is zeroed"
    assert bytes(buf[entry * 3 :]) == b"\xab" * entry, "written past the entries listed"
    # An entry smaller than the library's struct is no version of it: refused, nothing written.
    count.value = 77
    status = lib.tessera_license_list(session.handle, out, 4, size - 4, ctypes.byref(count))
    assert status == tessera.Status.INVALID_ARGUMENT
    assert "entry_size" in _ffi.last_error()
    assert count.value == 77

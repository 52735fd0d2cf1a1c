//! The C header: regenerated with the pinned cbindgen and compared with the checked-in
//! copy; compiled as C11 and C++17 with warnings as errors; and the built library exports
//! nothing without the `tessera_` prefix.
//!
//! `TESSERA_BLESS_HEADER=1 cargo test --test header` (what `make header` runs) rewrites it.

use std::path::Path;
use std::process::Command;

mod common;
use common::{cdylib, root};

fn generate() -> String {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    let version = format!(
        "#define TESSERA_VERSION_MAJOR {}\n#define TESSERA_VERSION_MINOR {}\n#define TESSERA_VERSION_PATCH {}\n#define TESSERA_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    );
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_src(root().join("src/ffi/status.rs"))
        .with_src(root().join("src/ffi/api.rs"))
        .with_config(config)
        .with_after_include(version)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("utf-8 header")
}

#[test]
fn header_is_fresh() {
    let path = root().join("include/tessera.h");
    let fresh = generate();
    if std::env::var_os("TESSERA_BLESS_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "include/tessera.h is stale: run `make header` and commit the result"
    );
    for name in [
        "tessera_open_options_init",
        "tessera_open",
        "tessera_acquire",
        "tessera_encrypt",
        "tessera_decrypt",
        "tessera_seat_info",
        "tessera_release",
        "tessera_close",
        "tessera_status_str",
        "tessera_last_error",
        "tessera_version",
        "tessera_abi_version",
        "tessera_activation_request",
        "tessera_activation_install",
        "TESSERA_E_BINDING_MISMATCH",
        "TESSERA_VERSION_MAJOR",
    ] {
        assert!(fresh.contains(name), "header lacks {name}");
    }
}

fn compile(compiler: &str, std: &str, lang: &str, dir: &Path) {
    let src = dir.join(format!("h.{lang}"));
    std::fs::write(
        &src,
        "#include \"tessera.h\"\nint main(void) { tessera_open_options o; (void)tessera_open_options_init(&o, sizeof o); return (int)tessera_abi_version() - TESSERA_ABI_VERSION; }\n",
    )
    .unwrap();
    let out = Command::new(compiler)
        .args([
            &format!("-std={std}"),
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
            "-fsyntax-only",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} -std={std} rejects tessera.h:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_compiles_as_c11_and_cpp17_with_warnings_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    compile("cc", "c11", "c", dir.path());
    compile("c++", "c++17", "cpp", dir.path());
}

#[test]
fn library_exports_only_prefixed_symbols_and_has_a_soname() {
    let lib = cdylib();
    assert!(lib.exists(), "{} not built", lib.display());
    let out = Command::new("nm")
        .args(["-D", "--defined-only", "--format=posix"])
        .arg(&lib)
        .output()
        .expect("nm");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"tessera_open"), "tessera_open not exported");
    let bad: Vec<&&str> = names
        .iter()
        .filter(|n| !n.starts_with("tessera_"))
        .collect();
    assert!(
        bad.is_empty(),
        "exported without the tessera_ prefix: {bad:?}"
    );
    let out = Command::new("readelf")
        .arg("-d")
        .arg(&lib)
        .output()
        .expect("readelf");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(
        dynamic.contains("SONAME") && dynamic.contains("libtessera.so.0"),
        "no soname:\n{dynamic}"
    );
}

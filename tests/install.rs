//! `make install` into a prefix, and the C and C++ examples built against that prefix the
//! two ways publishers build: pkg-config and CMake's `find_package(Tessera)`.

use std::path::Path;
use std::process::Command;

mod common;
use common::{cdylib, demo_home, profile_dir, root};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// `make install-files` of the library this test run built into `prefix`.
fn install(prefix: &Path) {
    cdylib(); // builds libtessera.so and libtessera.a
    sh(Command::new("make")
        .args(["-s", "install-files"])
        .arg(format!("REL={}", profile_dir().display()))
        .arg(format!("PREFIX={}", prefix.display()))
        .current_dir(root()));
}

fn run_ok(exe: &Path, home: &Path, done: &str) {
    let text = sh(Command::new(exe).env("TESSERA_HOME", home));
    assert!(text.contains(done), "{} said:\n{text}", exe.display());
}

#[test]
fn the_installed_tree_has_the_library_with_its_soname_links_headers_and_package_files() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    install(&prefix);
    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let real = format!("libtessera.so.{version}");
    assert_eq!(
        std::fs::read_link(lib.join("libtessera.so.0")).unwrap(),
        Path::new(&real)
    );
    assert_eq!(
        std::fs::read_link(lib.join("libtessera.so")).unwrap(),
        Path::new("libtessera.so.0")
    );
    let dynamic = sh(Command::new("readelf").arg("-d").arg(lib.join(&real)));
    assert!(
        dynamic.contains("Library soname: [libtessera.so.0]"),
        "{dynamic}"
    );
    for f in [
        "lib/libtessera.a",
        "include/tessera.h",
        "include/tessera.hpp",
        "lib/pkgconfig/tessera.pc",
        "lib/cmake/Tessera/TesseraConfig.cmake",
        "lib/cmake/Tessera/TesseraConfigVersion.cmake",
    ] {
        assert!(prefix.join(f).is_file(), "{f} is not installed");
    }
    let pc = std::fs::read_to_string(lib.join("pkgconfig/tessera.pc")).unwrap();
    assert!(pc.contains(&format!("Version: {version}")), "{pc}");
    assert!(!pc.contains('@'), "an unsubstituted placeholder: {pc}");
}

#[test]
fn the_c_quickstart_builds_against_the_installed_prefix_with_pkg_config() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    install(&prefix);
    let pkg = |args: &[&str]| {
        sh(Command::new("pkg-config")
            .args(args)
            .arg("tessera")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")))
        .trim()
        .to_string()
    };
    let cflags = pkg(&["--cflags"]);
    let libs = pkg(&["--libs"]);
    let libdir = pkg(&["--variable=libdir"]);
    assert_eq!(Path::new(&libdir), prefix.join("lib"));
    let exe = dir.path().join("quickstart");
    sh(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .args(cflags.split_whitespace())
        .arg(root().join("examples/c/quickstart.c"))
        .arg("-o")
        .arg(&exe)
        .args(libs.split_whitespace())
        .arg(format!("-Wl,-rpath,{libdir}")));
    let needed = sh(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        needed.contains("Shared library: [libtessera.so.0]"),
        "{needed}"
    );
    run_ok(
        &exe,
        &demo_home(dir.path(), "home"),
        "quickstart: all steps succeeded",
    );

    // The static library links with what pkg-config --static says it needs.
    let static_libs = pkg(&["--static", "--libs"]);
    let exe_static = dir.path().join("quickstart-static");
    sh(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .args(cflags.split_whitespace())
        .arg(root().join("examples/c/quickstart.c"))
        .arg("-o")
        .arg(&exe_static)
        .arg(prefix.join("lib/libtessera.a"))
        .args(static_libs.split_whitespace().filter(|a| *a != "-ltessera")));
    let needed = sh(Command::new("readelf").arg("-d").arg(&exe_static));
    assert!(!needed.contains("libtessera"), "{needed}");
    run_ok(
        &exe_static,
        &demo_home(&dir.path().join("static"), "home"),
        "quickstart: all steps succeeded",
    );
}

fn cmake_build(prefix: &Path, build: &Path, version: &str) -> Result<(), String> {
    let out = Command::new("cmake")
        .arg("-S")
        .arg(root().join("examples/cmake"))
        .arg("-B")
        .arg(build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .arg(format!("-DTESSERA_VERSION={version}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    sh(Command::new("cmake").arg("--build").arg(build));
    Ok(())
}

#[test]
fn the_examples_build_against_the_installed_prefix_with_cmake_find_package() {
    let dir = tempfile::tempdir().unwrap();
    // Installed in one place, then moved: the package config finds its files relative to
    // itself.
    let first = dir.path().join("first");
    install(&first);
    let prefix = dir.path().join("moved");
    std::fs::rename(&first, &prefix).unwrap();

    let build = dir.path().join("build");
    cmake_build(&prefix, &build, "0.1").unwrap();
    let home = demo_home(dir.path(), "home");
    run_ok(
        &build.join("quickstart"),
        &home,
        "quickstart: all steps succeeded",
    );
    run_ok(
        &build.join("quickstart_cpp"),
        &home,
        "cpp quickstart: all steps succeeded",
    );
    run_ok(
        &build.join("quickstart_static"),
        &home,
        "quickstart: all steps succeeded",
    );
    let needed = sh(Command::new("readelf")
        .arg("-d")
        .arg(build.join("quickstart")));
    assert!(
        needed.contains("Shared library: [libtessera.so.0]"),
        "{needed}"
    );

    // A version this library is not compatible with is refused by name.
    let err = cmake_build(&prefix, &dir.path().join("build-new"), "0.9").unwrap_err();
    assert!(
        err.contains("compatible with requested version \"0.9\"")
            && err.contains(&format!("version: {}", env!("CARGO_PKG_VERSION"))),
        "{err}"
    );
}

//! `make install` into a prefix, and the C and C++ examples built against that prefix the
//! two ways publishers build: pkg-config and CMake's `find_package(Tessera)`, each after the
//! installed tree was moved. (The Debian packages: scripts/test-packages.sh.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

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

/// `make install-files` of the library and tools this test run built into `prefix`.
fn install(prefix: &Path) {
    make_install("install-files", None, prefix);
}

/// `make install-lib` (library, headers, package files) into `prefix`.
fn install_lib(prefix: &Path) {
    make_install("install-lib", None, prefix);
}

/// `make TARGET DESTDIR=destdir PREFIX=prefix` (TARGET: install-files or one of its parts).
fn make_install(target: &str, destdir: Option<&Path>, prefix: &Path) {
    cdylib(); // builds libtessera.so and libtessera.a; cargo built the tools for this test
    let mut make = Command::new("make");
    make.args(["-s", target])
        .arg(format!("REL={}", profile_dir().display()))
        .arg(format!("PREFIX={}", prefix.display()))
        .current_dir(root());
    if let Some(d) = destdir {
        make.arg(format!("DESTDIR={}", d.display()));
    }
    sh(&mut make);
}

/// Whether an ELF file, or any member of an archive, has DWARF (`readelf -S`, read as it
/// streams: an archive lists hundreds of thousands of sections).
fn has_debug_info(file: &Path) -> bool {
    let mut child = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut sections, mut debug) = (0usize, false);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        sections += usize::from(line.contains("] ."));
        debug |= line.contains(".debug_info");
    }
    assert!(
        child.wait().unwrap().success(),
        "readelf -S {}",
        file.display()
    );
    assert!(
        sections > 0,
        "readelf listed no section of {}",
        file.display()
    );
    debug
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
    assert!(
        !pc.contains(&*prefix.to_string_lossy()),
        "the prefix written into tessera.pc: {pc}"
    );

    // The tools, stripped like the library.
    for tool in [
        "tessera",
        "tessera-vendor",
        "tessera-server",
        "tessera-dongle",
    ] {
        let exe = prefix.join("bin").join(tool);
        assert!(exe.is_file(), "{tool} is not installed");
        assert!(!has_debug_info(&exe), "{tool} keeps its debug information");
    }
    sh(Command::new(prefix.join("bin/tessera")).arg("--version"));
    assert!(
        has_debug_info(&profile_dir().join("libtessera.so")),
        "the built library has no debug information to strip: the check below proves nothing"
    );
    assert!(
        !has_debug_info(&lib.join(&real)),
        "libtessera.so is not stripped"
    );
    assert!(
        !has_debug_info(&lib.join("libtessera.a")),
        "libtessera.a keeps its debug information"
    );

    // The server's unit runs the installed server with the installed configuration.
    let unit =
        std::fs::read_to_string(prefix.join("lib/systemd/system/tessera-server.service")).unwrap();
    let exec = format!(
        "ExecStart={} --config {}",
        prefix.join("bin/tessera-server").display(),
        prefix.join("etc/tessera/server.toml").display()
    );
    assert!(unit.contains(&exec), "no {exec} in\n{unit}");
    assert!(!unit.contains('@'), "an unsubstituted placeholder: {unit}");
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/tessera/server.toml")).unwrap(),
        std::fs::read_to_string(root().join("systemd/server.toml")).unwrap()
    );
    assert!(prefix.join("share/doc/tessera/SERVER.md").is_file());

    // A second install keeps the admin's configuration and puts the new one beside it.
    std::fs::write(
        prefix.join("etc/tessera/server.toml"),
        "name = \"edited\"\n",
    )
    .unwrap();
    make_install("install-server", None, &prefix);
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/tessera/server.toml")).unwrap(),
        "name = \"edited\"\n"
    );
    assert!(prefix.join("etc/tessera/server.toml.new").is_file());
}

#[test]
fn prefix_usr_keeps_its_configuration_in_etc_and_destdir_stages_it() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    make_install("install-server", Some(&stage), Path::new("/usr"));
    let unit = std::fs::read_to_string(stage.join("usr/lib/systemd/system/tessera-server.service"))
        .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/tessera-server --config /etc/tessera/server.toml"),
        "{unit}"
    );
    assert!(stage.join("etc/tessera/server.toml").is_file());
    assert!(!stage.join("usr/etc").exists());
}

#[test]
fn the_c_quickstart_builds_with_pkg_config_against_a_moved_prefix_and_finds_its_library() {
    let dir = tempfile::tempdir().unwrap();
    // Staged (DESTDIR) for /usr, then moved elsewhere as a whole: tessera.pc finds the
    // library and headers relative to itself.
    let stage = dir.path().join("stage");
    make_install("install-lib", Some(&stage), Path::new("/usr"));
    let prefix = dir.path().join("moved");
    std::fs::rename(stage.join("usr"), &prefix).unwrap();
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
    assert_eq!(
        Path::new(&libdir).canonicalize().unwrap(),
        prefix.join("lib").canonicalize().unwrap()
    );
    let cc = |exe: &Path, extra: &[String]| {
        sh(Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .args(cflags.split_whitespace())
            .arg(root().join("examples/c/quickstart.c"))
            .arg("-o")
            .arg(exe)
            .args(libs.split_whitespace())
            .args(extra));
    };
    let home = demo_home(dir.path(), "home");

    // The README's way: an rpath to pkg-config's libdir.
    let exe = dir.path().join("quickstart");
    cc(&exe, &[format!("-Wl,-rpath,{libdir}")]);
    let needed = sh(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        needed.contains("Shared library: [libtessera.so.0]"),
        "{needed}"
    );
    run_ok(&exe, &home, "quickstart: all steps succeeded");

    // Without an rpath the library is not found, unless LD_LIBRARY_PATH names its directory.
    let bare = dir.path().join("quickstart-bare");
    cc(&bare, &[]);
    let out = Command::new(&bare)
        .env("TESSERA_HOME", &home)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("libtessera.so.0"),
        "{out:?}"
    );
    let text = sh(Command::new(&bare)
        .env("TESSERA_HOME", &home)
        .env("LD_LIBRARY_PATH", &libdir));
    assert!(text.contains("quickstart: all steps succeeded"), "{text}");

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
    install_lib(&first);
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

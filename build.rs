//! Gives libtessera.so its soname, so apps link against the ABI major version, and records
//! the git commit the build comes from (`TESSERA_GIT`: the `tessera_build_info` metric).
use std::process::Command;

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtessera.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=TESSERA_GIT={}", git_commit());
}

/// The commit checked out (short hash, `-dirty` is not tracked), or what `TESSERA_GIT`
/// says (a build from a source tarball), or `unknown`.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=TESSERA_GIT");
    if let Ok(g) = std::env::var("TESSERA_GIT")
        && !g.is_empty()
    {
        return g;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // Rebuild when HEAD moves: the HEAD file and the branch's ref (both exist in a checkout;
    // a missing path would rerun this script on every build).
    for p in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &r])
        && std::path::Path::new(&path).exists()
    {
        println!("cargo:rerun-if-changed={path}");
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

//! Gives libtessera.so its soname, so apps link against the ABI major version.
fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtessera.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}

//! The layer rule of docs/ARCHITECTURE.md, checked on the source: a module imports only
//! modules of a lower layer. Every `crate::name` (and `crate::{a, b}`) path outside test code
//! is an import of `name`; an arrow that runs the wrong way, or a new top-level module that
//! has no layer yet, fails here with the file and the line.
//!
//! Inside `src/server/`, whose files form a layered stack of their own, the same rule holds
//! between its files and directories (`super::x` and `crate::server::x` both count).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::root;

/// The library's top-level modules by layer, lowest first. A module may use modules of a
/// lower layer only; modules of one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["util", "status"],
    &["host", "cipher"],
    &["license"],
    &["channel", "container"],
    &["publisher", "view"],
    &["dongle", "net"],
    &["client", "admin_client"],
    &["server", "ffi"],
    &["fuzzing"],
];

/// The parts of `src/server/` by layer, lowest first (a part is a file `x.rs` or a
/// directory `x/`, named `x`; `mod.rs` is the module's root and may use every part).
const SERVER_LAYERS: &[&[&str]] = &[
    &["seats", "hosted", "stats"],
    &["store"],
    &["config", "usage", "history"],
    &["pool_status"],
    &["pool"],
    &["daemon"],
    &["admin"],
];

fn layer_of(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&name))
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its test code: a file named `tests.rs` is all test code, and in other
/// files each item under `#[cfg(test)]` (a `mod tests;` line, or a block to its closing
/// brace) is skipped. Comments are skipped too.
fn non_test_lines(path: &Path, text: &str) -> Vec<(usize, String)> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if !t.starts_with("#[cfg(test)]") {
            out.push((i + 1, line.to_string()));
            continue;
        }
        // Skip the item the attribute is on: up to a `;` before any `{`, or to the brace
        // that closes its first `{`.
        let mut depth = 0i32;
        let mut opened = false;
        for (_, item) in lines.by_ref() {
            for c in item.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && item.trim_end().ends_with(';')) {
                break;
            }
        }
    }
    out
}

/// The first path segment after each occurrence of `prefix` on a line (`crate::a::b` gives
/// `a`, `crate::{a::X, b}` gives `a` and `b`).
fn targets(line: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(prefix) {
        let before = &rest[..at];
        rest = &rest[at + prefix.len()..];
        // `$crate::` and `some_crate::` are not ours.
        if before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Items re-exported at the crate root (`crate::Error`) belong to the module they come from.
fn root_items() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("Error", "error"), ("Result", "error"), ("VERSION", "util")])
}

#[test]
fn no_module_uses_a_module_of_a_higher_layer() {
    let src = root().join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    let items = root_items();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let top = parts[0].as_str();
        if top == "bin" || top == "lib" {
            continue; // the binaries and the crate root sit above every layer
        }
        let Some(own) = layer_of(LAYERS, top) else {
            wrong.push(format!(
                "src/{}: module `{top}` has no layer",
                rel.display()
            ));
            continue;
        };
        // The part of src/server/ this file belongs to (None for server/mod.rs).
        let server_part =
            (top == "server" && parts.len() > 1 && parts[1] != "mod").then(|| parts[1].clone());
        if let Some(part) = &server_part
            && layer_of(SERVER_LAYERS, part).is_none()
        {
            wrong.push(format!(
                "src/{}: server part `{part}` has no layer",
                rel.display()
            ));
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in non_test_lines(file, &text) {
            for target in targets(&line, "crate::") {
                checked += 1;
                let module = items.get(target.as_str()).copied().unwrap_or(&target);
                if module == top {
                    continue;
                }
                match layer_of(LAYERS, module) {
                    Some(l) if l < own => {}
                    Some(_) => wrong.push(format!(
                        "src/{}:{n}: `{top}` uses `{module}`, which is not below it: {}",
                        rel.display(),
                        line.trim()
                    )),
                    None => wrong.push(format!(
                        "src/{}:{n}: `crate::{target}` is not a module with a layer",
                        rel.display()
                    )),
                }
            }
            let Some(part) = &server_part else { continue };
            let own_part = layer_of(SERVER_LAYERS, part).unwrap_or(usize::MAX);
            let mut used = targets(&line, "crate::server::");
            if parts.len() == 2 {
                used.extend(targets(&line, "super::"));
            }
            for other in used {
                if other == *part || other == "mod" {
                    continue;
                }
                match layer_of(SERVER_LAYERS, &other) {
                    Some(l) if l < own_part => {}
                    _ => wrong.push(format!(
                        "src/{}:{n}: server `{part}` uses `{other}`, which is not below it: {}",
                        rel.display(),
                        line.trim()
                    )),
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} imports seen: is the scan broken?"
    );
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_imports_in_every_form() {
    assert_eq!(
        targets("use crate::license::License;", "crate::"),
        ["license"]
    );
    assert_eq!(
        targets("use crate::{Error, host::Traits, util};", "crate::"),
        ["Error", "host", "util"]
    );
    assert_eq!(
        targets("x = crate::ffi::status::from_error(e);", "crate::"),
        ["ffi"]
    );
    assert!(targets("use tokio_crate::x;", "crate::").is_empty());
    assert!(targets("$crate::util::now()", "crate::").is_empty());
    let text = "use crate::a::X;\n// crate::b in a comment\n#[cfg(test)]\nmod tests;\n\
                #[cfg(test)]\nmod more {\n    use crate::c;\n}\nuse crate::d::Y;\n";
    let lines = non_test_lines(Path::new("src/x.rs"), text);
    let kept: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(kept, ["use crate::a::X;", "use crate::d::Y;"]);
    assert_eq!(lines[1].0, 9, "line numbers are the file's");
    assert!(non_test_lines(Path::new("src/x/tests.rs"), text).is_empty());
}

#![no_main]
//! One server for the whole run, its state in a temporary directory named after the process
//! (`scripts/fuzz.sh` removes it after the run: statics are never dropped).
use std::sync::LazyLock;

use tessera::fuzzing::ServerHarness;

static SERVER: LazyLock<ServerHarness> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("tessera-fuzz-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ServerHarness::new(&dir).expect("a server on a temporary state directory")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    SERVER.request(data);
});

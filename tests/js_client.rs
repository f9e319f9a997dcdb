//! The JavaScript client (`clients/js`) against the real binary: runs its
//! Node test suite (`node --test clients/js/test/`) with `TICKCAST_BIN`
//! set to the `tickcast` this build made, and fails with Node's output
//! if any of it fails.

use std::path::Path;
use std::process::Command;

#[test]
fn the_javascript_client_passes_its_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = root.join("clients/js");
    assert!(
        package.join("node_modules/ws").is_dir(),
        "the JavaScript client's test dependencies are not installed: run \
         `npm ci --prefix clients/js` (Node.js 20.11 or later) and run this test again"
    );
    let output = Command::new("node")
        // A hung test fails after two minutes instead of holding the run.
        .args(["--test", "--test-timeout=120000", "clients/js/test/"])
        .current_dir(root)
        .env("TICKCAST_BIN", env!("CARGO_BIN_EXE_tickcast"))
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run `node` ({err}): install Node.js 20.11 or later and put it on PATH")
        });
    assert!(
        output.status.success(),
        "`node --test clients/js/test/` failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

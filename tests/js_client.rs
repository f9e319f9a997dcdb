//! The JavaScript client (`clients/js`) against the real binary: runs its
//! Node test suite (`node --test` on each `clients/js/test/*.test.js`)
//! with `TICKCAST_BIN` set to the `tickcast` this build made, and fails
//! with Node's output if any of it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest Node.js the tests run on: `--test-timeout` came in 20.11.
const NODE_NEEDED: (u32, u32) = (20, 11);

/// `(major, minor)` of a `node --version` line such as `v20.11.1`.
fn node_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[test]
fn node_versions_are_read() {
    assert_eq!(node_version("v20.11.1\n"), Some((20, 11)));
    assert_eq!(node_version("v22.3.0"), Some((22, 3)));
    assert_eq!(node_version("nonsense"), None);
    assert!(node_version("v20.9.0").unwrap() < NODE_NEEDED);
    assert!(node_version("v21.0.0").unwrap() >= NODE_NEEDED);
}

#[test]
fn the_javascript_client_passes_its_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = root.join("clients/js");
    let install = "install Node.js 20.11 or later and put it on PATH";
    let version = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|err| panic!("cannot run `node` ({err}): {install}"));
    let found = String::from_utf8_lossy(&version.stdout).trim().to_string();
    match node_version(&found) {
        Some(v) if v >= NODE_NEEDED => {}
        _ => panic!("Node.js 20.11 or later is needed, found {found:?}: {install}"),
    }
    assert!(
        package.join("node_modules/ws").is_dir(),
        "the JavaScript client's test dependencies are not installed: run \
         `npm ci --prefix clients/js` (Node.js 20.11 or later) and run this test again"
    );
    // Files, not the directory: `node --test DIR` is refused by Node 21
    // and later.
    let mut files: Vec<PathBuf> = std::fs::read_dir(package.join("test"))
        .expect("clients/js/test is readable")
        .map(|entry| entry.expect("clients/js/test is readable").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".test.js"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no clients/js/test/*.test.js to run");
    let output = Command::new("node")
        // A hung test fails after two minutes instead of holding the run.
        .args(["--test", "--test-timeout=120000"])
        .args(&files)
        .current_dir(root)
        .env("TICKCAST_BIN", env!("CARGO_BIN_EXE_tickcast"))
        .output()
        .unwrap_or_else(|err| panic!("cannot run `node` ({err}): {install}"));
    assert!(
        output.status.success(),
        "`node --test clients/js/test/*.test.js` failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

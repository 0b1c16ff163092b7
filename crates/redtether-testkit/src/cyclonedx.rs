//! An independent CycloneDX validator: `tests/fixtures/cyclonedx/validate.js`, which checks a
//! document against the CycloneDX 1.5 JSON schema with OWASP's own `@cyclonedx/cyclonedx-library`
//! and parses its purls with `packageurl-js`. Installed from the fixture's lockfile like the
//! Node-RED fixture.

use crate::npm_fixture;
use std::path::Path;
use std::process::Command;

/// What validate.js said: `{"valid": true}`, or `{"valid": false, "schemaErrors": ...,
/// "purlErrors": [...]}`.
pub fn validate(document: &Path) -> serde_json::Value {
    let modules = npm_fixture::install("cyclonedx", "node_modules/@cyclonedx/cyclonedx-library/package.json")
        .join("node_modules");
    let out = Command::new("node")
        .arg(npm_fixture::fixture_dir("cyclonedx").join("validate.js"))
        .arg(document)
        // validate.js stays in the fixture; its modules are in the install folder.
        .env("NODE_PATH", &modules)
        .output()
        .expect("node must be installed to run the tests");
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("validate.js did not answer ({e}, {}): {}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(
        out.status.code(),
        Some(if verdict["valid"] == true { 0 } else { 1 }),
        "validate.js's exit code and verdict disagree; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    verdict
}

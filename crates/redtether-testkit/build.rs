//! Tells the test kit where the workspace's binaries and scratch space are: a library cannot use
//! `CARGO_BIN_EXE_*` or `CARGO_TARGET_TMPDIR`, which cargo gives only to a package's own tests.
//! OUT_DIR is `<target>/<profile>/build/<crate>-<hash>/out`; the binaries are in
//! `<target>/<profile>`.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let profile_dir = out.ancestors().nth(3).expect("OUT_DIR is deep enough");
    let target_dir = profile_dir.parent().expect("a target directory");
    println!("cargo:rustc-env=REDTETHER_BIN_DIR={}", profile_dir.display());
    println!("cargo:rustc-env=REDTETHER_TARGET_TMPDIR={}", target_dir.join("tmp").display());
}

//! The human-readable log carries no ANSI colour codes when it does not go to a terminal (a file, a pipe,
//! `kubectl logs`): the binary is run with stdout piped, as a log file or collector would see it.

use std::process::Command;

#[test]
fn a_piped_log_has_no_ansi_escape_codes() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/crossl-dsads");
    let out = Command::new(env!("CARGO_BIN_EXE_crossl-serve"))
        .args(["check-model", "--model", model])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .expect("run crossl-serve check-model");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-model failed: {log}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("INFO"), "expected an INFO line, got: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in a piped log: {log:?}"
    );
}

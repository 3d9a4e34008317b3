//! The auth binary refuses bad settings before serving: it exits non-zero and says which key.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_bad_setting_stops_the_binary_with_an_error_naming_the_key() {
    // Only this variable: nothing inherited from the test's environment may fix or break it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shop-auth"))
        .env_clear()
        .env("SHOP_AUTH_CONFIG", "/nonexistent/auth.toml")
        .env("SHOP_AUTH_AUTH__TOKEN_TTL_SECONDS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // With valid settings it would wait for a sidecar: it must stop at once instead.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            child.kill().unwrap();
            panic!("shop-auth kept running with auth.token_ttl_seconds = 1");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit {}", output.status);
    assert!(stderr.contains("auth.token_ttl_seconds"), "{stderr}");
}

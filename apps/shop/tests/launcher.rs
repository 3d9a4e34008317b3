//! The `shop` binary as a person runs it: it starts, says where everything is, serves, keeps
//! its data across restarts, and stops cleanly on Ctrl-C.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

struct Running {
    child: Child,
    url: String,
    output: mpsc::Receiver<String>,
    banner: String,
}

fn components() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../components/local").to_owned()
}

/// Starts the launcher on a free port in `root` and waits for its banner.
fn start(root: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "--components",
            &components(),
        ])
        .args(["--port", "0", "--log-level", "warn"])
        .env_remove("SHOP_ADMIN_EMAIL")
        .env_remove("SHOP_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, output) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let mut banner = String::new();
    loop {
        let line = output
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no banner; output so far:\n{banner}"));
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Press Ctrl-C to stop.") {
            break;
        }
    }
    let url = banner
        .lines()
        .find_map(|line| line.trim().strip_prefix("API:"))
        .map(|rest| rest.trim().trim_end_matches("/api").to_owned())
        .unwrap_or_else(|| panic!("no API line in:\n{banner}"));
    Running {
        child,
        url,
        output,
        banner,
    }
}

/// Ctrl-C, then the exit status and the rest of the output.
fn interrupt(mut running: Running) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-INT", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    for _ in 0..300 {
        if let Some(status) = running.child.try_wait().unwrap() {
            while let Ok(line) = running.output.recv_timeout(Duration::from_millis(200)) {
                rest.push_str(&line);
                rest.push('\n');
            }
            return (status, rest);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = running.child.kill();
    panic!("the shop did not stop within 30 s of Ctrl-C");
}

async fn admin_token(url: &str, root: &Path) -> String {
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(".data/secrets.json")).unwrap())
            .unwrap();
    let login: Value = reqwest::Client::new()
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"email": secrets["admin-email"], "password": secrets["admin-password"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_starts_serves_keeps_its_data_and_stops_on_ctrl_c() {
    let root = tempfile::tempdir().unwrap();
    let first = start(root.path());
    for expected in [
        "API docs:",
        "/api/docs",
        "Admin:",
        "admin@shop.local",
        "auth",
        "inventory",
        "notifications",
        "orders",
        "payments",
        "paygate",
        "gateway",
    ] {
        assert!(
            first.banner.contains(expected),
            "{expected} in:\n{}",
            first.banner
        );
    }
    assert!(
        first.banner.contains("generated now"),
        "a first start says the admin password is new:\n{}",
        first.banner
    );
    let client = reqwest::Client::new();
    // The paygate runs with no sidecar, on the port the banner gives, and wants its API key.
    let paygate_port = first
        .banner
        .lines()
        .find_map(|line| line.trim().strip_prefix("paygate"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("a paygate row in:\n{}", first.banner))
        .to_owned();
    let paygate_row = first
        .banner
        .lines()
        .find(|l| l.trim().starts_with("paygate"))
        .unwrap();
    assert!(
        paygate_row.contains(" - "),
        "no sidecar ports: {paygate_row}"
    );
    let charge = client
        .get(format!(
            "http://127.0.0.1:{paygate_port}/v1/charges/ch_000000000000000000000000"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(charge.status(), 401);
    let token = admin_token(&first.url, root.path()).await;
    let added = client
        .post(format!("{}/api/products", first.url))
        .bearer_auth(&token)
        .json(&json!({"name": "Lamp", "price_cents": 4500, "currency": "EUR", "category": "home", "stock": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let (status, rest) = interrupt(first);
    assert!(status.success(), "exit {status}: {rest}");
    assert!(rest.contains("The shop has stopped."), "{rest}");

    // Same root, second start: the same secrets and the same data.
    let second = start(root.path());
    assert!(
        second.banner.contains("admin-email and admin-password in"),
        "a later start points at the secrets file:\n{}",
        second.banner
    );
    let listing: Value = client
        .get(format!("{}/api/products", second.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["items"][0]["name"], "Lamp", "{listing}");
    let (status, rest) = interrupt(second);
    assert!(status.success(), "exit {status}: {rest}");
}

#[test]
fn a_missing_component_set_stops_the_start_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "--root",
            root.path().to_str().unwrap(),
            "--components",
            "no/such/dir",
        ])
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no/such/dir") && stderr.contains("--components"),
        "{stderr}"
    );
}

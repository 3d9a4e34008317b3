//! The API docs page in a real browser: Chromium driven by playwright-core (`browser/docs.mjs`)
//! renders the merged OpenAPI document and uses its "Try it" console to log in, add a product
//! and list it, through the whole shop.
//!
//! `.ci/run` installs both and sets `SHOP_BROWSER_NODE` (a directory whose `node_modules` holds
//! `playwright-core`) and `SHOP_BROWSER_CHROMIUM` (the browser). Without them the test is
//! skipped locally, and fails under `CI`.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::path::Path;
use std::time::Duration;

use shop_e2e::{ADMIN_EMAIL, ADMIN_PASSWORD, ComponentSet, TestShop};

fn configured(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{variable} is not set: run the tests through .ci/run")
        }
        _ => {
            eprintln!("skipped: {variable} is not set (.ci/run sets it)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_and_its_console_logs_in_adds_and_lists_products() {
    let (Some(node_dir), Some(chromium)) = (
        configured("SHOP_BROWSER_NODE"),
        configured("SHOP_BROWSER_CHROMIUM"),
    ) else {
        return;
    };
    let shop = TestShop::start(ComponentSet::Local).await.unwrap();
    // ES modules find packages from the script's own directory upwards.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/docs.mjs");
    let script = Path::new(&node_dir).join("docs.mjs");
    assert_ne!(
        source.canonicalize().unwrap(),
        script.canonicalize().unwrap_or_else(|_| script.clone()),
        "SHOP_BROWSER_NODE must be a directory of its own (copying the script there would empty it)"
    );
    std::fs::copy(&source, &script).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .args([shop.url(), ADMIN_EMAIL, ADMIN_PASSWORD])
        .env("SHOP_BROWSER_CHROMIUM", chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finishes within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("the docs page works"), "{stdout}");
    shop.stop().await.unwrap();
}

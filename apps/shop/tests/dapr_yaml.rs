//! `dapr.yaml` (for the real Dapr CLI) and the launcher describe the same shop.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize as _;
use serde_yaml_ng::Value;

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn run_file() -> Value {
    let text = std::fs::read_to_string(repository().join("dapr.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn dapr_yaml_runs_exactly_the_apps_the_launcher_starts() {
    let file = run_file();
    let apps = file["apps"].as_sequence().unwrap();
    let in_file: Vec<&str> = apps.iter().map(|a| a["appID"].as_str().unwrap()).collect();
    let distinct: BTreeSet<&str> = in_file.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        in_file.len(),
        "an app is listed twice: {in_file:?}"
    );
    let launched: BTreeSet<&str> = shop::APPS.iter().copied().collect();
    assert_eq!(distinct, launched);
}

#[test]
fn each_app_runs_its_own_package_on_its_own_ports() {
    let file = run_file();
    let mut ports = BTreeSet::new();
    for app in file["apps"].as_sequence().unwrap() {
        let id = app["appID"].as_str().unwrap();
        let command: Vec<&str> = app["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let package = format!("shop-{id}");
        assert_eq!(
            command,
            ["cargo", "run", "--release", "-p", package.as_str()],
            "{id}"
        );
        let manifest =
            std::fs::read_to_string(repository().join("apps").join(id).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("apps/{id}/Cargo.toml: {e}"));
        assert!(
            manifest.contains(&format!("name = \"{package}\"")),
            "{id} is package {package}"
        );
        for key in ["appPort", "daprHTTPPort", "daprGRPCPort"] {
            let port = app[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{id} has {key}"));
            assert!(ports.insert(port), "{id}: port {port} is used twice");
        }
        if id == shop::GATEWAY {
            assert_eq!(
                app["appPort"].as_u64(),
                Some(8080),
                "the public port, as the launcher's"
            );
        }
    }
}

#[test]
fn the_component_set_exists_and_needs_only_the_secrets_the_launcher_creates() {
    let file = run_file();
    let set = file["common"]["resourcesPath"].as_str().unwrap();
    let dir = repository().join(set);
    assert!(dir.is_dir(), "{set}");
    let scratch = tempfile::tempdir().unwrap();
    let secrets = scratch.path().join("secrets.json");
    shop::secrets::ensure(&secrets, &Default::default()).unwrap();
    let created: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&secrets).unwrap()).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let document = Value::deserialize(document).unwrap();
            let metadata = document["spec"]["metadata"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            for item in metadata {
                if let Some(name) = item["secretKeyRef"]["name"].as_str() {
                    assert!(
                        created.contains_key(name),
                        "{}: secret {name}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn the_paygate_is_left_out_and_the_file_says_how_to_start_it() {
    let text = std::fs::read_to_string(repository().join("dapr.yaml")).unwrap();
    let file = run_file();
    let apps = file["apps"].as_sequence().unwrap();
    assert!(
        apps.iter()
            .all(|a| a["appID"].as_str() != Some(shop::PAYGATE)),
        "the paygate has no sidecar, so dapr.yaml cannot run it"
    );
    assert!(
        text.contains("cargo run --release -p shop-paygate")
            && text.contains("SHOP_PAYGATE_PAYGATE__API_KEY")
            && text.contains("paygate-api-key"),
        "dapr.yaml says how to start the paygate next to it"
    );
}

#[test]
fn the_payments_app_finds_a_standalone_paygate_through_the_secrets_the_launcher_creates() {
    let scratch = tempfile::tempdir().unwrap();
    let secrets = scratch.path().join("secrets.json");
    shop::secrets::ensure(&secrets, &Default::default()).unwrap();
    let payments = shop_payments::settings::PaymentsSettings::default();
    let url = shop::secrets::get(&secrets, &payments.provider_url_secret).unwrap();
    let paygate = shop_paygate::Settings::default();
    assert_eq!(url, format!("http://127.0.0.1:{}", paygate.app.port));
    shop::secrets::get(&secrets, &payments.provider_key_secret).unwrap();
}

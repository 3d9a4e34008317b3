//! `kit::settings`: defaults, then the file, then the environment; every error names its key.

use std::path::PathBuf;

use kit::settings::{
    AppSettings, DaprSettings, SettingsError, TelemetrySettings, Validate, load_from,
};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "SHOP_SHELF_";

/// Settings of an imaginary app, `shelf`, shaped as the shop's apps are.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    app: AppSettings,
    dapr: DaprSettings,
    telemetry: TelemetrySettings,
    shelf: ShelfSettings,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct ShelfSettings {
    label: String,
    capacity: u32,
    open: bool,
    aisles: Vec<String>,
}

impl Default for ShelfSettings {
    fn default() -> Self {
        Self {
            label: "main".into(),
            capacity: 10,
            open: false,
            aisles: vec!["a".into()],
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        if self.shelf.capacity == 0 {
            return Err(SettingsError::new("shelf.capacity", "must be at least 1"));
        }
        Ok(())
    }
}

/// A settings file with `content`, in a directory removed on drop.
struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn file(content: &str) -> File {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("shelf.toml");
    std::fs::write(&path, content).expect("written");
    File { _dir: dir, path }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(file: Option<&File>, environment: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    load_from(PREFIX, file.map(|f| f.path.as_path()), env(environment))
}

#[test]
fn without_file_or_environment_the_defaults_apply() {
    let missing = PathBuf::from("/nonexistent/shelf.toml");

    let settings: Settings = load_from(PREFIX, Some(&missing), Vec::new()).expect("valid");

    assert_eq!(settings, Settings::default());
    assert_eq!(settings.dapr.http_port, 3500);
    assert_eq!(settings.dapr.grpc_port, 50001);
}

#[test]
fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
    let file = file("[shelf]\nlabel = \"from file\"\ncapacity = 5\n[app]\nport = 8080\n");

    let settings = load(
        Some(&file),
        &[
            ("SHOP_SHELF_SHELF__CAPACITY", "7"),
            ("SHOP_SHELF_SHELF__OPEN", "true"),
            ("SHOP_SHELF_SHELF__AISLES", "[b, c]"),
            (
                "SHOP_SHELF_TELEMETRY__OTLP_ENDPOINT",
                "http://collector:4317",
            ),
            // Another app's settings are not ours.
            ("SHOP_SHELVES_SHELF__CAPACITY", "99"),
        ],
    )
    .expect("valid");

    assert_eq!(settings.shelf.label, "from file");
    assert_eq!(settings.shelf.capacity, 7);
    assert!(settings.shelf.open);
    assert_eq!(settings.shelf.aisles, ["b", "c"]);
    assert_eq!(settings.app.port, 8080);
    assert_eq!(
        settings.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4317")
    );
}

#[test]
fn the_variables_dapr_sets_for_apps_are_read() {
    let settings = load(
        None,
        &[
            ("DAPR_HTTP_PORT", "3601"),
            ("DAPR_GRPC_PORT", "50002"),
            ("APP_PORT", "8081"),
            ("DAPR_API_TOKEN", "dapr-token"),
            ("APP_API_TOKEN", "4711"),
        ],
    )
    .expect("valid");

    assert_eq!(settings.dapr.http_port, 3601);
    assert_eq!(settings.dapr.grpc_port, 50002);
    assert_eq!(settings.app.port, 8081);
    assert_eq!(
        settings.dapr.api_token.as_ref().map(|t| t.expose_secret()),
        Some("dapr-token")
    );
    assert_eq!(
        settings
            .dapr
            .app_api_token
            .as_ref()
            .map(|t| t.expose_secret()),
        Some("4711")
    );
}

#[test]
fn a_text_setting_keeps_a_value_that_looks_like_a_number_or_a_boolean() {
    let settings = load(
        None,
        &[
            ("SHOP_SHELF_SHELF__LABEL", "2024"),
            ("SHOP_SHELF_DAPR__API_TOKEN", "123456"),
            ("SHOP_SHELF_TELEMETRY__LEVEL", "true"),
        ],
    );

    let settings = settings.expect("valid");
    assert_eq!(settings.shelf.label, "2024");
    assert_eq!(
        settings.dapr.api_token.as_ref().map(|t| t.expose_secret()),
        Some("123456")
    );
    assert_eq!(settings.telemetry.level, "true");
}

#[test]
fn a_bad_value_in_the_file_names_its_key_and_the_file() {
    let file = file("[app]\nport = \"eighty\"\n");

    let error = load(Some(&file), &[]).expect_err("not a port");

    assert_eq!(error.key, "app.port");
    assert!(
        error.message.contains(&file.path.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("`app.port`"), "{error}");
}

#[test]
fn an_unknown_key_in_the_file_is_named_in_full() {
    let file = file("[app]\nprot = 8080\n");

    let error = load(Some(&file), &[]).expect_err("a typo");

    assert_eq!(error.key, "app.prot");
}

#[test]
fn a_file_that_is_not_toml_is_an_error_naming_the_file() {
    let file = file("[app\nport = 8080\n");

    let error = load(Some(&file), &[]).expect_err("not TOML");

    assert!(
        error.message.contains(&file.path.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_bad_value_in_the_environment_names_its_key_and_variable() {
    for (variable, value, key) in [
        ("SHOP_SHELF_APP__PORT", "eighty", "app.port"),
        ("SHOP_SHELF_SHELF__CAPACITY", "-1", "shelf.capacity"),
        ("SHOP_SHELF_SHELF__OPEN", "perhaps", "shelf.open"),
        ("APP_PORT", "70000", "app.port"),
        ("DAPR_HTTP_PORT", "http", "dapr.http_port"),
        ("DAPR_GRPC_PORT", "", "dapr.grpc_port"),
        ("SHOP_SHELF_SHELF__LABLE", "typo", "shelf.lable"),
    ] {
        let error = load(None, &[(variable, value)]).expect_err(variable);

        assert_eq!(error.key, key, "{variable}={value}: {error}");
        assert!(error.message.contains(variable), "{variable}: {error}");
    }
}

#[test]
fn values_that_parse_but_make_no_sense_are_rejected_by_key() {
    for (variable, value, key) in [
        ("SHOP_SHELF_SHELF__CAPACITY", "0", "shelf.capacity"),
        (
            "SHOP_SHELF_TELEMETRY__OTLP_ENDPOINT",
            "collector:4317",
            "telemetry.otlp_endpoint",
        ),
        ("SHOP_SHELF_TELEMETRY__LEVEL", "info,[[", "telemetry.level"),
    ] {
        let error = load(None, &[(variable, value)]).expect_err(variable);

        assert_eq!(error.key, key, "{variable}={value}: {error}");
    }
}

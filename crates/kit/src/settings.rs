//! Typed settings: defaults, then a TOML file, then the environment; validated before the app
//! starts. A bad value stops the process with a message naming the key.
//!
//! Every app reads the variables Dapr sets for apps (`DAPR_HTTP_PORT`, `DAPR_GRPC_PORT`,
//! `DAPR_API_TOKEN`, `APP_PORT`, `APP_API_TOKEN`) and its own, prefixed with `SHOP_<APP>_` and
//! nested with `__` (`SHOP_AUTH_AUTH__TOKEN_TTL_SECONDS=600` sets `auth.token_ttl_seconds`).
//! The file is `SHOP_<APP>_CONFIG` or `config/<app>.toml` when it exists.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A setting that is not acceptable, with the key it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{key}`: {message}")]
pub struct SettingsError {
    /// The key, as written in the file (`app.port`) or environment.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl SettingsError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Settings that can check themselves after loading.
pub trait Validate {
    /// Rejects values that parse but make no sense (an empty name, a zero timeout...).
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Where an app listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 = any free port).
    pub port: u16,
    /// How long in-flight requests may take to finish on shutdown, in seconds.
    pub drain_seconds: u64,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            drain_seconds: 10,
        }
    }
}

/// How the app reaches its sidecar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaprSettings {
    /// The sidecar's host.
    pub host: String,
    /// Dapr HTTP API port (`DAPR_HTTP_PORT`).
    pub http_port: u16,
    /// Dapr gRPC API port (`DAPR_GRPC_PORT`).
    pub grpc_port: u16,
    /// Token for the Dapr API (`DAPR_API_TOKEN`).
    #[serde(default, skip_serializing)]
    pub api_token: Option<SecretString>,
    /// Token the sidecar sends to the app (`APP_API_TOKEN`); required on calls when set.
    #[serde(default, skip_serializing)]
    pub app_api_token: Option<SecretString>,
}

impl Default for DaprSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            http_port: 3500,
            grpc_port: 50001,
            api_token: None,
            app_api_token: None,
        }
    }
}

impl PartialEq for DaprSettings {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host
            && self.http_port == other.http_port
            && self.grpc_port == other.grpc_port
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// JSON lines (for ELK) instead of human-readable logs.
    pub json: bool,
    /// `RUST_LOG`-style filter.
    pub level: String,
    /// OTLP/gRPC collector (e.g. `http://otel-collector:4317`); none = no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            json: false,
            level: "info".into(),
            otlp_endpoint: None,
        }
    }
}

impl Validate for TelemetrySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(SettingsError::new(
                "telemetry.otlp_endpoint",
                format!("expected an http:// or https:// URL, got {endpoint:?}"),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| SettingsError::new("telemetry.level", e.to_string()))
    }
}

/// Loads settings of type `S` for the app `app` (lower case, e.g. `auth`).
pub fn load<S>(app: &str) -> Result<S, SettingsError>
where
    S: Serialize + DeserializeOwned + Default + Validate,
{
    load_with(app, Vec::new())
}

/// [`load`] with `presets`, environment entries (`SHOP_<APP>_...`) that the real environment
/// overrides: how the launcher hands an app a value from the secret store.
pub fn load_with<S>(app: &str, presets: Vec<(String, String)>) -> Result<S, SettingsError>
where
    S: Serialize + DeserializeOwned + Default + Validate,
{
    let prefix = format!("SHOP_{}_", app.to_ascii_uppercase());
    let file = std::env::var(format!("{prefix}CONFIG"))
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(format!("config/{app}.toml")));
    // Later entries win, so the environment comes after the presets.
    load_from(
        &prefix,
        Some(&file),
        presets.into_iter().chain(std::env::vars()),
    )
}

/// [`load`] with an explicit environment (tests pass their own).
pub fn load_from<S>(
    prefix: &str,
    file: Option<&std::path::Path>,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<S, SettingsError>
where
    S: Serialize + DeserializeOwned + Default + Validate,
{
    let environment: Vec<(String, String)> = environment.into_iter().collect();
    let mut figment = Figment::new().merge(Serialized::defaults(S::default()));
    if let Some(file) = file
        && file.exists()
    {
        figment = figment.merge(Toml::file(file));
    }
    // The variables Dapr sets for the apps it runs.
    for (variable, key) in [
        ("DAPR_HTTP_PORT", "dapr.http_port"),
        ("DAPR_GRPC_PORT", "dapr.grpc_port"),
        ("APP_PORT", "app.port"),
        ("DAPR_API_TOKEN", "dapr.api_token"),
        ("APP_API_TOKEN", "dapr.app_api_token"),
    ] {
        if let Some((_, value)) = environment.iter().find(|(k, _)| k == variable) {
            figment = figment.merge(EnvVariable::new(variable, key, value));
        }
    }
    for (variable, value) in &environment {
        let Some(rest) = variable.strip_prefix(prefix) else {
            continue;
        };
        if rest == "CONFIG" || rest.is_empty() {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        figment = figment.merge(EnvVariable::new(variable, &key, value));
    }
    // Lossy: a number or boolean setting accepts its text ("8080", "true"), as environment
    // values are text; a text setting keeps "8080" as it was written.
    let settings: S = figment.extract_lossy().map_err(|error| {
        let key = error.path.join(".");
        let mut message = error.kind.to_string();
        match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(path)) => {
                message.push_str(&format!(" (in {})", path.display()));
            }
            Some(figment::Source::Custom(variable)) => {
                message.push_str(&format!(" (from {variable})"));
            }
            _ => {}
        }
        SettingsError::new(
            if key.is_empty() {
                "<root>".to_owned()
            } else {
                key
            },
            message,
        )
    })?;
    settings.validate()?;
    Ok(settings)
}

/// One environment variable as a figment provider, so that errors say where a value came from.
struct EnvVariable {
    variable: String,
    key: String,
    value: figment::value::Value,
}

impl EnvVariable {
    fn new(variable: &str, key: &str, value: &str) -> Self {
        Self {
            variable: variable.to_owned(),
            key: key.to_owned(),
            value: parse_env_value(value),
        }
    }
}

impl figment::Provider for EnvVariable {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from(
            "environment variable",
            figment::Source::Custom(self.variable.clone()),
        )
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::default(&self.key, &self.value).data()
    }
}

/// Environment values are text; arrays and tables (`[a, b]`, `{k = 1}`) are read as such, as
/// figment's `Env` does, and everything else stays text for the lossy extraction to convert.
fn parse_env_value(value: &str) -> figment::value::Value {
    use figment::value::Value;
    match value.parse::<Value>() {
        Ok(parsed @ (Value::Array(..) | Value::Dict(..))) => parsed,
        _ => Value::from(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        app: AppSettings,
        dapr: DaprSettings,
        greeting: String,
    }

    impl Validate for Example {
        fn validate(&self) -> Result<(), SettingsError> {
            if self.greeting.is_empty() {
                return Err(SettingsError::new("greeting", "must not be empty"));
            }
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_environment_overrides_the_file_and_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("example.toml");
        std::fs::write(&file, "greeting = \"from file\"\n[app]\nport = 8080\n").expect("write");
        let settings: Example = load_from(
            "SHOP_EXAMPLE_",
            Some(&file),
            env(&[
                ("SHOP_EXAMPLE_APP__PORT", "9090"),
                ("DAPR_GRPC_PORT", "50999"),
            ]),
        )
        .expect("valid");
        assert_eq!(settings.app.port, 9090);
        assert_eq!(settings.greeting, "from file");
        assert_eq!(settings.dapr.grpc_port, 50999);
        assert_eq!(settings.dapr.http_port, 3500);
    }

    #[test]
    fn a_later_entry_wins_so_the_environment_overrides_presets() {
        // `load_with` puts its presets before the environment.
        let settings: Example = load_from(
            "SHOP_EXAMPLE_",
            None,
            env(&[
                ("SHOP_EXAMPLE_GREETING", "preset"),
                ("SHOP_EXAMPLE_GREETING", "from the environment"),
            ]),
        )
        .expect("valid");
        assert_eq!(settings.greeting, "from the environment");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let error = load_from::<Example>(
            "SHOP_EXAMPLE_",
            None,
            env(&[
                ("SHOP_EXAMPLE_APP__PORT", "eighty"),
                ("SHOP_EXAMPLE_GREETING", "hi"),
            ]),
        )
        .expect_err("not a port");
        assert_eq!(error.key, "app.port");
        let error =
            load_from::<Example>("SHOP_EXAMPLE_", None, env(&[])).expect_err("empty greeting");
        assert_eq!(error.key, "greeting");
        let error = load_from::<Example>(
            "SHOP_EXAMPLE_",
            None,
            env(&[("SHOP_EXAMPLE_GREETING", "hi"), ("SHOP_EXAMPLE_TYPO", "1")]),
        )
        .expect_err("unknown key");
        assert!(error.message.contains("typo"), "{error}");
    }
}

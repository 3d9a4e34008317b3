//! `secretstores.local.env`: secrets from the sidecar's environment.
//!
//! As components-contrib: `prefix` is prepended on reads and stripped from names; a missing
//! variable reads as an empty value; `DAPR_*` variables and `APP_API_TOKEN` are never exposed.

use std::collections::BTreeMap;

use super::{Secret, SecretError, SecretStore};
use crate::resources::ComponentMetadata;

/// The environment secret store.
pub struct EnvSecretStore {
    prefix: String,
}

impl EnvSecretStore {
    /// A store reading variables that start with the component's `prefix` (none by default).
    pub fn new(metadata: &ComponentMetadata) -> Self {
        Self {
            prefix: metadata.get("prefix").unwrap_or("").to_owned(),
        }
    }
}

fn forbidden(variable: &str) -> bool {
    let upper = variable.to_ascii_uppercase();
    upper == "APP_API_TOKEN" || upper.starts_with("DAPR_")
}

impl SecretStore for EnvSecretStore {
    fn get(&self, name: &str) -> Result<Secret, SecretError> {
        let variable = format!("{}{name}", self.prefix);
        let value = if forbidden(&variable) {
            tracing::warn!(variable, "access to this environment variable is forbidden");
            String::new()
        } else {
            std::env::var(&variable).unwrap_or_default()
        };
        Ok(BTreeMap::from([(name.to_owned(), value)]))
    }

    fn bulk_get(&self) -> Result<BTreeMap<String, Secret>, SecretError> {
        Ok(std::env::vars()
            .filter(|(variable, _)| !forbidden(variable))
            .filter_map(|(variable, value)| {
                let name = variable.strip_prefix(&self.prefix)?;
                (!name.is_empty())
                    .then(|| (name.to_owned(), BTreeMap::from([(name.to_owned(), value)])))
            })
            .collect())
    }

    fn multiple_key_values(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dapr_variables_are_never_exposed() {
        assert!(forbidden("DAPR_API_TOKEN"));
        assert!(forbidden("dapr_http_port"));
        assert!(forbidden("APP_API_TOKEN"));
        assert!(!forbidden("DATABASE_URL"));
    }

    #[test]
    fn a_missing_variable_reads_as_empty() {
        let store = EnvSecretStore::new(&ComponentMetadata::from_pairs(
            "env",
            [("prefix", "SHOP_TEST_UNSET_")],
        ));
        let secret = store.get("NOTHING").expect("never fails");
        assert_eq!(secret, BTreeMap::from([("NOTHING".into(), String::new())]));
    }
}

//! `secretstores.local.file`: secrets from a JSON file, read once at start-up.
//!
//! As components-contrib: nested objects and arrays are flattened with `nestedSeparator`
//! (default `:`, array items by index); with `multiValued: true` each top-level key is one secret
//! holding its flattened children. Unlike daprd, numbers and booleans become their plain text
//! (daprd hands out Go formatting errors such as `%!s(float64=5)` for them).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{Secret, SecretError, SecretStore};
use crate::components::ComponentContext;
use crate::resources::{ComponentMetadata, ResourceError};

/// The file secret store.
pub struct FileSecretStore {
    secrets: BTreeMap<String, Secret>,
    multi_valued: bool,
}

impl FileSecretStore {
    /// Reads and flattens `secretsFile`. A relative path is resolved against the sidecar's working
    /// directory, as daprd does.
    pub fn load(
        metadata: &ComponentMetadata,
        context: &ComponentContext,
    ) -> Result<Self, ResourceError> {
        let file = metadata.required("secretsFile")?;
        let separator = metadata.get("nestedSeparator").unwrap_or(":");
        let multi_valued = metadata.bool("multiValued", false)?;
        let path = context.working_dir.join(Path::new(file));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            metadata.error(
                "secretsFile",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let document: Value = serde_json::from_str(&text).map_err(|e| {
            metadata.error(
                "secretsFile",
                format!("{} is not valid JSON: {e}", path.display()),
            )
        })?;
        let Value::Object(top) = document else {
            return Err(metadata.error(
                "secretsFile",
                format!("{} must hold a JSON object", path.display()),
            ));
        };
        let mut secrets = BTreeMap::new();
        if multi_valued {
            for (name, value) in top {
                let mut values = BTreeMap::new();
                match value {
                    Value::String(text) => {
                        values.insert(name.clone(), text);
                    }
                    Value::Object(_) | Value::Array(_) => {
                        flatten("", &value, separator, &mut values)
                    }
                    // daprd drops top-level scalars that are not strings in this mode.
                    _ => continue,
                }
                secrets.insert(name, values);
            }
        } else {
            let mut flat = BTreeMap::new();
            flatten("", &Value::Object(top), separator, &mut flat);
            for (name, value) in flat {
                secrets.insert(name.clone(), BTreeMap::from([(name, value)]));
            }
        }
        Ok(Self {
            secrets,
            multi_valued,
        })
    }
}

fn flatten(prefix: &str, value: &Value, separator: &str, out: &mut BTreeMap<String, String>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}{separator}{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                flatten(&join(key), child, separator, out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                flatten(&join(&index.to_string()), child, separator, out);
            }
        }
        Value::String(text) => {
            out.insert(prefix.to_owned(), text.clone());
        }
        Value::Null => {
            out.insert(prefix.to_owned(), String::new());
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

impl SecretStore for FileSecretStore {
    fn get(&self, name: &str) -> Result<Secret, SecretError> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(name.to_owned()))
    }

    fn bulk_get(&self) -> Result<BTreeMap<String, Secret>, SecretError> {
        Ok(self.secrets.clone())
    }

    fn multiple_key_values(&self) -> bool {
        self.multi_valued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(json: &str, pairs: &[(&str, &str)]) -> FileSecretStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, json).expect("write secrets");
        let path = path.to_string_lossy().into_owned();
        let mut all = vec![("secretsFile", path.as_str())];
        all.extend_from_slice(pairs);
        let metadata = ComponentMetadata::from_pairs("secrets", all);
        FileSecretStore::load(&metadata, &ComponentContext::for_tests("app")).expect("store loads")
    }

    const JSON: &str = r#"{"a": "1", "db": {"user": "u", "pw": "p"}, "arr": ["x"], "n": 5}"#;

    #[test]
    fn nested_values_are_flattened_with_the_separator() {
        let store = store(JSON, &[]);
        assert_eq!(
            store.get("db:user").expect("found"),
            BTreeMap::from([("db:user".into(), "u".into())])
        );
        assert_eq!(store.get("arr:0").expect("found")["arr:0"], "x");
        assert_eq!(store.get("n").expect("found")["n"], "5");
        assert!(matches!(store.get("db"), Err(SecretError::NotFound(_))));
    }

    #[test]
    fn a_custom_separator_is_used() {
        let store = store(JSON, &[("nestedSeparator", ".")]);
        assert!(store.get("db.user").is_ok());
    }

    #[test]
    fn multi_valued_secrets_hold_their_children() {
        let store = store(JSON, &[("multiValued", "true")]);
        assert_eq!(
            store.get("db").expect("found"),
            BTreeMap::from([("pw".into(), "p".into()), ("user".into(), "u".into())])
        );
        assert_eq!(store.get("a").expect("found")["a"], "1");
        assert!(
            store.get("n").is_err(),
            "top-level numbers are dropped in multi-valued mode"
        );
        assert_eq!(store.bulk_get().expect("bulk").len(), 3);
    }
}

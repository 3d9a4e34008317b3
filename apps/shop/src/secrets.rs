//! The local secret store's file (`.data/secrets.json`): created on first start with fresh keys
//! and passwords, never committed. Values given in the environment win.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::pkcs8::KeypairBytes;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use rand::Rng as _;

/// Where the admin's credentials come from, to tell the person starting the shop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSource {
    /// Generated now: shown once.
    Generated {
        /// Email.
        email: String,
        /// Password.
        password: String,
    },
    /// From `SHOP_ADMIN_EMAIL` / `SHOP_ADMIN_PASSWORD`.
    Environment,
    /// From the existing secrets file.
    File,
}

fn random_text(length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..length)
        .map(|_| {
            let mut byte = [0u8; 1];
            loop {
                rng.fill_bytes(&mut byte);
                // Rejection sampling keeps the choice uniform.
                if usize::from(byte[0]) < 256 - 256 % ALPHABET.len() {
                    return char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]);
                }
            }
        })
        .collect()
}

/// A fresh Ed25519 key as PKCS#8 v1 PEM (the private key alone, as `openssl genpkey` writes it).
fn signing_key_pem() -> anyhow::Result<String> {
    let mut secret_key = [0u8; 32];
    rand::rng().fill_bytes(&mut secret_key);
    let key = KeypairBytes {
        secret_key,
        public_key: None,
    };
    Ok(key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the signing key: {e}"))?
        .to_string())
}

/// Makes sure `file` holds every secret the shop needs, creating what is missing.
pub fn ensure(file: &Path, environment: &BTreeMap<String, String>) -> anyhow::Result<AdminSource> {
    let mut secrets: BTreeMap<String, String> = match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object of strings", file.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", file.display())),
    };
    let before = secrets.clone();
    let mut source = AdminSource::File;
    if !secrets.contains_key("admin-email") || !secrets.contains_key("admin-password") {
        let email = "admin@shop.local".to_owned();
        let password = random_text(20);
        secrets.insert("admin-email".into(), email.clone());
        secrets.insert("admin-password".into(), password.clone());
        source = AdminSource::Generated { email, password };
    }
    for (variable, key) in [
        ("SHOP_ADMIN_EMAIL", "admin-email"),
        ("SHOP_ADMIN_PASSWORD", "admin-password"),
    ] {
        if let Some(value) = environment.get(variable).filter(|v| !v.is_empty()) {
            secrets.insert(key.into(), value.clone());
            source = AdminSource::Environment;
        }
    }
    if !secrets.contains_key("jwt-signing-key") {
        secrets.insert("jwt-signing-key".into(), signing_key_pem()?);
    }
    secrets
        .entry("paygate-api-key".into())
        .or_insert_with(|| format!("pg_test_{}", random_text(24)));
    // Where the payments app finds the paygate when nothing tells it otherwise: the
    // paygate's own default port, as `dapr run -f dapr.yaml` next to a standalone paygate
    // has it (the launcher passes the free port it started the paygate on instead).
    secrets
        .entry("paygate-url".into())
        .or_insert_with(|| "http://127.0.0.1:5006".into());
    // Defaults for the server component sets, for a local PostgreSQL, RabbitMQ, Kafka, Redis
    // and an SMTP sink; edit the file to point elsewhere.
    for (key, value) in [
        (
            "postgres-url",
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        ),
        ("rabbitmq-url", "amqp://guest:guest@127.0.0.1:5672"),
        ("kafka-brokers", "127.0.0.1:9092"),
        ("redis-host", "127.0.0.1:6379"),
        ("smtp-host", "127.0.0.1"),
        ("smtp-port", "1025"),
    ] {
        secrets.entry(key.into()).or_insert_with(|| value.into());
    }
    if secrets != before {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = serde_json::to_string_pretty(&secrets)?;
        write_private(file, &text)?;
    }
    Ok(source)
}

/// One secret of `file`.
pub fn get(file: &Path, key: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let secrets: BTreeMap<String, String> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object of strings", file.display()))?;
    secrets
        .get(key)
        .cloned()
        .with_context(|| format!("{} has no {key}", file.display()))
}

/// Writes a file only its owner can read.
fn write_private(file: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_start_generates_every_secret_and_later_starts_keep_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join(".data/secrets.json");
        let source = ensure(&file, &BTreeMap::new()).expect("created");
        assert!(matches!(source, AdminSource::Generated { .. }));
        let first: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("file")).expect("json");
        assert!(first["jwt-signing-key"].starts_with("-----BEGIN PRIVATE KEY-----"));
        shop_auth::domain::TokenSigner::new(
            &first["jwt-signing-key"],
            None,
            "shop-auth",
            "shop",
            60,
        )
        .expect("the auth app signs with the generated key");
        assert_eq!(first["admin-password"].len(), 20);
        assert_eq!(
            ensure(&file, &BTreeMap::new()).expect("kept"),
            AdminSource::File
        );
        let second: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("file")).expect("json");
        assert_eq!(first, second);
    }

    #[test]
    fn an_older_file_gains_the_missing_secrets_and_keeps_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("secrets.json");
        let older = BTreeMap::from([
            ("admin-email".to_owned(), "me@example.com".to_owned()),
            ("admin-password".to_owned(), "kept password".to_owned()),
            ("paygate-api-key".to_owned(), "pg_test_kept".to_owned()),
        ]);
        std::fs::write(&file, serde_json::to_string(&older).expect("json")).expect("write");
        assert_eq!(
            ensure(&file, &BTreeMap::new()).expect("completed"),
            AdminSource::File
        );
        let secrets: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("file")).expect("json");
        for (key, value) in &older {
            assert_eq!(&secrets[key], value, "{key} is kept");
        }
        assert_eq!(secrets["paygate-url"], "http://127.0.0.1:5006");
        assert!(secrets["jwt-signing-key"].starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn the_environment_sets_the_admin() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("secrets.json");
        let environment = BTreeMap::from([
            ("SHOP_ADMIN_EMAIL".to_owned(), "boss@example.com".to_owned()),
            (
                "SHOP_ADMIN_PASSWORD".to_owned(),
                "a long password".to_owned(),
            ),
        ]);
        assert_eq!(
            ensure(&file, &environment).expect("created"),
            AdminSource::Environment
        );
        let secrets: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("file")).expect("json");
        assert_eq!(secrets["admin-email"], "boss@example.com");
    }
}

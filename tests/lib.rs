//! Starts the whole shop for a test, as `cargo run` does but on a free port, with a data
//! directory of its own and the component set asked for; then talks to it through the gateway
//! like any client, and watches its events through an observer app.

mod mail;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kit::testing::{Events, Stack};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop::{Options, Shop};
use sidecar::testing::{TestDatabase, TestKafka, TestVhost};
use tempfile::TempDir;

pub use mail::{Email, MailSink};

/// The admin account every test shop is seeded with.
pub const ADMIN_EMAIL: &str = "admin@shop.test";
/// See [`ADMIN_EMAIL`].
pub const ADMIN_PASSWORD: &str = "admin password for tests";

/// A component set of the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentSet {
    /// `components/local`: SQLite, in-memory pub/sub.
    Local,
    /// `components/rabbitmq`: the local PostgreSQL and RabbitMQ.
    RabbitMq,
    /// `components/kafka`: the local PostgreSQL and a Kafka-protocol broker (librdkafka's mock
    /// cluster, in the test's process).
    Kafka,
}

/// The shop's topics (`contracts`): created up front on Kafka, observed by every test shop.
pub const TOPICS: &[&str] = &["users", "products", "orders", "payments"];

impl ComponentSet {
    fn dir(self) -> PathBuf {
        let name = match self {
            Self::Local => "local",
            Self::RabbitMq => "rabbitmq",
            Self::Kafka => "kafka",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("components")
            .join(name)
    }
}

/// A running shop and a client for its public API.
pub struct TestShop {
    shop: Shop,
    options: Options,
    observer: Stack,
    /// Every CloudEvent on the shop's topics, as a subscriber app receives them.
    pub events: Events,
    http: reqwest::Client,
    base: String,
    _database: Option<TestDatabase>,
    _vhost: Option<TestVhost>,
    _kafka: Option<TestKafka>,
    /// The SMTP server of the server sets' email binding.
    mail: Option<MailSink>,
    root: TempDir,
}

/// An answer of the API: status, headers and JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// The field named by a problem document's first error.
    pub fn field(&self) -> &str {
        self.body["errors"][0]["field"].as_str().unwrap_or_default()
    }

    /// Whether the body is `application/problem+json`.
    pub fn is_problem(&self) -> bool {
        self.headers
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json")
    }
}

impl TestShop {
    /// Starts the shop on `set`, seeded with the test admin.
    pub async fn start(set: ComponentSet) -> anyhow::Result<Self> {
        Self::start_with(set, &[]).await
    }

    /// Starts the shop on `set` with app settings (`SHOP_<APP>_...` entries, as
    /// [`Options::settings`]).
    pub async fn start_with(set: ComponentSet, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let root = tempfile::tempdir().context("temp dir")?;
        let mut secrets = serde_json::Map::new();
        secrets.insert("admin-email".into(), json!(ADMIN_EMAIL));
        secrets.insert("admin-password".into(), json!(ADMIN_PASSWORD));
        // A database and a virtual host (or a Kafka cluster) of its own, so that shops of
        // tests running at the same time share neither rows nor queues.
        let database = match set {
            ComponentSet::Local => None,
            ComponentSet::RabbitMq | ComponentSet::Kafka => {
                let database = TestDatabase::create().await;
                secrets.insert("postgres-url".into(), json!(database.connection_string()));
                Some(database)
            }
        };
        let vhost = (set == ComponentSet::RabbitMq).then(|| {
            let vhost = TestVhost::create();
            secrets.insert("rabbitmq-url".into(), json!(vhost.url()));
            vhost
        });
        let kafka = (set == ComponentSet::Kafka).then(|| {
            let kafka = TestKafka::start(TOPICS, 2);
            secrets.insert("kafka-brokers".into(), json!(kafka.bootstrap_servers()));
            kafka
        });
        let mail = match set {
            ComponentSet::Local => None,
            ComponentSet::RabbitMq | ComponentSet::Kafka => {
                let sink = MailSink::start().await?;
                secrets.insert("smtp-host".into(), json!("127.0.0.1"));
                secrets.insert("smtp-port".into(), json!(sink.port().to_string()));
                Some(sink)
            }
        };
        std::fs::create_dir_all(root.path().join(".data"))?;
        std::fs::write(
            root.path().join(".data/secrets.json"),
            serde_json::to_vec_pretty(&secrets)?,
        )?;
        let mut options = Options::new(root.path());
        options.components = set.dir();
        options.port = 0;
        options.settings = settings
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let shop = Shop::start(&options).await?;
        let mut observer = Stack::join(shop.topology(), root.path(), &options.components);
        let events = observer.observe(TOPICS).await?;
        if set == ComponentSet::Kafka {
            // Kafka's consumer groups take a while to hand out their partitions, longer on a
            // busy machine: wait until the observer has the admin's USER_REGISTERED, which auth
            // publishes as it starts, so that a test's first wait does not pay for it.
            events
                .wait_for(
                    "shop.user.registered.v1",
                    std::time::Duration::from_secs(90),
                    |data| data["email"] == ADMIN_EMAIL,
                )
                .await
                .context("the observer's Kafka consumers settle")?;
        }
        Ok(Self {
            base: shop.url(),
            shop,
            options,
            observer,
            events,
            http: reqwest::Client::new(),
            _database: database,
            _vhost: vhost,
            _kafka: kafka,
            mail,
            root,
        })
    }

    /// The mails the shop sent so far, oldest first: those the SMTP server received, or for
    /// the embedded default those `bindings.localstorage` wrote (addressed by user id).
    pub fn emails(&self) -> Vec<Email> {
        match &self.mail {
            Some(sink) => sink.received(),
            None => mail::stored(&self.root.path().join(".data").join("mail")),
        }
    }

    /// Stops one app and its sidecar, then starts them again (see [`Shop::restart`]).
    pub async fn restart(&mut self, app_id: &str) -> anyhow::Result<()> {
        self.shop.restart(app_id, &self.options).await
    }

    /// `http://<gateway>`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// A request to the gateway, `path` starting with `/api/`.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request and reads the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A JSON call, with a bearer token when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.request(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let answer = self
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await?;
        anyhow::ensure!(answer.status == StatusCode::OK, "login failed: {answer:?}");
        answer.body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token")
    }

    /// Stops the shop and the observer; fails if an app failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.observer.shutdown().await?;
        let mut shop = self.shop;
        shop.stop().await
    }
}

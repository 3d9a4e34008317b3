//! Scratch space on the real local infrastructure for tests, here and in the apps: a PostgreSQL
//! database, a RabbitMQ virtual host and a Redis key prefix that exist for one test and are
//! removed afterwards, and a Kafka-protocol broker (librdkafka's mock cluster) per test.

/// The local PostgreSQL the tests use (trust authentication).
pub const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres";

/// The local Redis the tests use.
pub const REDIS: &str = "127.0.0.1:6379";

/// `prefix` followed by a fresh UUID (lower-case hex, no dashes): valid in database names,
/// app ids, topics and key prefixes.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A PostgreSQL database created for one test and dropped when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's name.
    pub name: String,
}

impl TestDatabase {
    /// Creates a fresh database on the local server.
    ///
    /// # Panics
    /// When the local PostgreSQL does not answer: the tests cannot run without it.
    pub async fn create() -> Self {
        let name = unique("shop_test_");
        let (client, connection) = tokio_postgres::connect(
            &format!("{POSTGRES} dbname=postgres"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("the local PostgreSQL answers on 127.0.0.1:5432: {e}"));
        tokio::spawn(connection);
        if let Err(error) = client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
        {
            panic!("cannot create the test database {name}: {error}");
        }
        Self { name }
    }

    /// A libpq-style connection string to it.
    pub fn connection_string(&self) -> String {
        format!("{POSTGRES} dbname={}", self.name)
    }
}

/// A RabbitMQ virtual host created for one test (with every permission for `guest`) and deleted
/// when this value is: exchanges and queues of tests running at the same time never meet.
#[derive(Debug)]
pub struct TestVhost {
    /// The virtual host's name.
    pub name: String,
}

impl TestVhost {
    /// Creates a fresh virtual host on the local broker through `rabbitmqctl`.
    ///
    /// # Panics
    /// When `rabbitmqctl` cannot run or fails: the tests cannot run without it.
    pub fn create() -> Self {
        let name = unique("shop-test-");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self { name }
    }

    /// An AMQP URL for `guest` on it.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("rabbitmqctl runs: {e}"));
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Runs `work` to completion on a runtime of its own: `Drop` may run inside or outside one.
fn run_detached<F>(work: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(work());
        }
    })
    .join();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_detached(move || async move {
            if let Ok((client, connection)) = tokio_postgres::connect(
                &format!("{POSTGRES} dbname=postgres"),
                tokio_postgres::NoTls,
            )
            .await
            {
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        });
    }
}

/// Removes every Redis key starting with `prefix` when dropped.
#[derive(Debug)]
pub struct RedisKeys {
    /// The prefix.
    pub prefix: String,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        run_detached(move || async move {
            let Ok(client) = redis::Client::open(format!("redis://{REDIS}")) else {
                return;
            };
            let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut connection)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await;
            }
        });
    }
}

/// A Kafka-protocol broker for one test: librdkafka's in-process mock cluster, with topics
/// created up front, stopped when this value is dropped. The cluster lives on a thread of its
/// own (its handle is neither `Send` nor `Sync`), so this value can be shared across tasks.
#[derive(Debug)]
pub struct TestKafka {
    bootstrap_servers: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestKafka {
    /// Starts a one-broker cluster with `topics`, each with `partitions` partitions.
    ///
    /// # Panics
    /// When the mock cluster cannot start or a topic cannot be created.
    pub fn start(topics: &[&str], partitions: i32) -> Self {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let (ready, started) = std::sync::mpsc::channel::<Result<String, String>>();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let cluster = match rdkafka::mocking::MockCluster::new(1) {
                Ok(cluster) => cluster,
                Err(error) => {
                    let _ = ready.send(Err(format!("the mock Kafka cluster starts: {error}")));
                    return;
                }
            };
            for topic in &topics {
                if let Err(error) = cluster.create_topic(topic, partitions, 1) {
                    let _ = ready.send(Err(format!("topic {topic} is created: {error}")));
                    return;
                }
            }
            let _ = ready.send(Ok(cluster.bootstrap_servers()));
            // Until the value is dropped (or its sender with it).
            let _ = stopped.recv();
            drop(cluster);
        });
        let bootstrap_servers = match started.recv() {
            Ok(Ok(servers)) => servers,
            Ok(Err(error)) => panic!("{error}"),
            Err(_) => panic!("the mock Kafka cluster's thread died"),
        };
        Self {
            bootstrap_servers,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The `brokers` to give the component.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The whole shop under load, through its gateway only: logged-in customers placing orders and
//! paying them with the paygate's good card, as the launcher runs the shop. Results and how to
//! read them: `docs/perf.md`, "The shop under load".
//!
//! ```sh
//! cargo bench -p shop-e2e --bench shop              # components/local, then components/rabbitmq
//! cargo bench -p shop-e2e --bench shop -- local     # only the sets named
//! ```
//!
//! Per component set, in one run:
//!
//! 1. the machine's ceilings: `pgbench` inserting single rows into the local PostgreSQL (1 and 16
//!    clients), for the embedded default SQLite inserting single rows with the sqlite state
//!    store's settings (WAL, `synchronous = NORMAL`), and files created one per email as the
//!    mail binding stores them;
//! 2. a fixed arrival rate (`SHOP_BENCH_RATE`, default 100 orders/s, for `SHOP_BENCH_SECONDS`):
//!    each arrival places an order and pays it. `POST /orders` latency is timed from the moment
//!    the request was due, so a shop that falls behind pays for it (no coordinated omission);
//! 3. saturation: `SHOP_BENCH_CONCURRENCY` customers (default 64) buy back to back for
//!    `SHOP_BENCH_SECONDS`, each waiting for the order's confirmation before the next; what
//!    counts is how many orders reach CONFIRMED per second.
//!
//! An order is complete when its `ORDER_CONFIRMED` event reaches an observer app subscribed like
//! any other. The gateway's rate limit is off (every request comes from one address here), and
//! the load generator runs on the same two cores as the shop. Without `--bench` (as under
//! `cargo test --benches`) it makes a short smoke pass on the embedded default; its numbers mean
//! nothing. `SHOP_BENCH_LOG` (a tracing filter such as `warn`) sends what the shop logs to
//! stderr.

#![allow(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use reqwest::{Method, StatusCode};
use serde_json::json;
use shop_e2e::{ADMIN_EMAIL, ADMIN_PASSWORD, ComponentSet, TestShop};
use sidecar::testing::{POSTGRES, TestDatabase};

/// The issue's targets: `POST /orders` p99 under this at the fixed rate...
const TARGET_PLACE_P99_MS: f64 = 50.0;
/// ...at this rate...
const TARGET_RATE: f64 = 100.0;
/// ...and at least this many orders completed per second on the embedded default.
const TARGET_COMPLETED_PER_SECOND: f64 = 100.0;

/// The paygate's card that always succeeds.
const GOOD_CARD: &str = "4242424242424242";

#[derive(Debug, Clone, Copy)]
struct Settings {
    rate: f64,
    seconds: u64,
    concurrency: usize,
    users: usize,
    products: usize,
    warmup: usize,
    full: bool,
}

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}

impl Settings {
    fn from_env(full: bool) -> Self {
        let (rate, seconds, concurrency, users, warmup) = if full {
            (TARGET_RATE, 20.0, 64.0, 50.0, 200.0)
        } else {
            (10.0, 2.0, 4.0, 4.0, 4.0)
        };
        Self {
            rate: env_number("SHOP_BENCH_RATE", rate),
            seconds: env_number("SHOP_BENCH_SECONDS", seconds) as u64,
            concurrency: env_number("SHOP_BENCH_CONCURRENCY", concurrency) as usize,
            users: env_number("SHOP_BENCH_USERS", users) as usize,
            products: env_number("SHOP_BENCH_PRODUCTS", 20.0) as usize,
            warmup: env_number("SHOP_BENCH_WARMUP", warmup) as usize,
            full,
        }
    }
}

/// Nearest-rank percentiles of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1].as_secs_f64() * 1000.0
        };
        Self {
            count: sorted.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    fn row(&self) -> String {
        format!(
            "{} | {:.1} | {:.1} | {:.1} | {:.1}",
            self.count, self.p50, self.p90, self.p99, self.max
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The machine's ceilings.

/// `pgbench` inserting one row per transaction for `seconds`, with `clients` connections:
/// transactions per second.
async fn pgbench_inserts(clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let database = TestDatabase::create().await;
    let (client, connection) =
        tokio_postgres::connect(&database.connection_string(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE rows (id bigserial PRIMARY KEY, payload text NOT NULL)")
        .await?;
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        "INSERT INTO rows (payload) VALUES ('a row of about forty bytes, as a state row');\n",
    )?;
    let host = POSTGRES
        .split_whitespace()
        .find_map(|part| part.strip_prefix("host="))
        .unwrap_or("127.0.0.1");
    let output = tokio::process::Command::new("pgbench")
        .args(["-n", "-h", host, "-U", "postgres", "-T"])
        .arg(seconds.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.min(2).to_string())
        .arg("-f")
        .arg(script.path())
        .arg(&database.name)
        .output()
        .await
        .context("pgbench runs (Debian: postgresql-client)")?;
    ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    report
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|tps| tps.parse::<f64>().ok())
        })
        .with_context(|| format!("no tps in pgbench's report: {report}"))
}

/// Single-row inserts into SQLite with the sqlite state store's settings (WAL,
/// `synchronous = NORMAL`), one transaction each, for `seconds`: rows per second.
fn sqlite_inserts(seconds: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let connection = rusqlite::Connection::open(dir.path().join("ceiling.db"))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection
        .execute_batch("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")?;
    let mut insert = connection.prepare("INSERT INTO rows (payload) VALUES (?1)")?;
    let started = Instant::now();
    let limit = Duration::from_secs(seconds);
    let mut rows = 0u64;
    while started.elapsed() < limit {
        insert.execute(["a row of about forty bytes, as a state row"])?;
        rows += 1;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// How many files [`file_creations`] creates.
const CEILING_FILES: usize = 2000;

/// Files created the way the embedded default's mail binding (`bindings.localstorage`) stores
/// each email, one small file each, in the temporary directory the shop's data goes to: files
/// per second. The directory is kept until the run ends: removing thousands of files just
/// before the shop starts would make the filesystem's next inode allocations slower.
fn file_creations(files: usize) -> anyhow::Result<(f64, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let body = vec![b'x'; 1024];
    let started = Instant::now();
    for n in 0..files {
        std::fs::write(dir.path().join(format!("{n}.json")), &body)?;
    }
    Ok((files as f64 / started.elapsed().as_secs_f64(), dir))
}

/// The CPU time this process has used so far (user and system), from `/proc/self/stat`; `None`
/// without procfs. The clock ticks are Linux's `USER_HZ`, 100 on every platform it runs on.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (in parentheses, and it may hold spaces) start with the
    // third, so utime (14th) and stime (15th) are the 12th and 13th of them.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The share of one core this process used between two [`cpu_time`] readings, in per cent.
fn cpu_percent(
    before: Option<Duration>,
    after: Option<Duration>,
    elapsed: Duration,
) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    Some(used.as_secs_f64() / elapsed.as_secs_f64() * 100.0)
}

// ---------------------------------------------------------------------------------------------
// The shop and its customers.

struct Customers {
    tokens: Vec<String>,
    products: Vec<String>,
}

/// Products with stock enough for any run, and registered, logged-in customers.
async fn prepare(shop: &TestShop, settings: Settings) -> anyhow::Result<Customers> {
    let admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let mut products = Vec::new();
    for n in 0..settings.products {
        let added = shop
            .call(
                Method::POST,
                "/api/products",
                Some(&admin),
                Some(json!({
                    "name": format!("Lamp {n}"),
                    "description": "A lamp for the benchmark.",
                    "price_cents": 1990,
                    "currency": "EUR",
                    "category": "home",
                    "stock": 100_000_000,
                })),
            )
            .await?;
        ensure!(added.status == StatusCode::CREATED, "product: {added:?}");
        products.push(added.body["id"].as_str().context("product id")?.to_owned());
    }
    let mut tokens = Vec::new();
    for n in 0..settings.users {
        let email = format!("buyer{n}-{}@example.com", uuid::Uuid::new_v4().simple());
        let registered = shop
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "bench password", "name": "Buyer"})),
            )
            .await?;
        ensure!(
            registered.status == StatusCode::CREATED,
            "register: {registered:?}"
        );
        tokens.push(shop.login(&email, "bench password").await?);
    }
    Ok(Customers { tokens, products })
}

/// When each order's `ORDER_CONFIRMED` reached the observer.
#[derive(Clone, Default)]
struct Confirmations(Arc<Mutex<HashMap<String, Instant>>>);

impl Confirmations {
    /// Follows the observer's events until `stop`.
    fn follow(&self, shop: &TestShop, stop: tokio_util::sync::CancellationToken) {
        let events = shop.events.clone();
        let confirmed = self.0.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while !stop.is_cancelled() {
                let new = events.since(seen);
                seen += new.len();
                let now = Instant::now();
                {
                    let mut confirmed = confirmed.lock().unwrap();
                    for event in new {
                        if event["type"] == "shop.order.confirmed.v1"
                            && let Some(order) = event["data"]["order_id"].as_str()
                        {
                            confirmed.entry(order.to_owned()).or_insert(now);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }

    fn at(&self, order: &str) -> Option<Instant> {
        self.0.lock().unwrap().get(order).copied()
    }

    /// How many orders of `orders` were confirmed by `until`.
    fn count(&self, orders: &[Placed], until: Instant) -> usize {
        let confirmed = self.0.lock().unwrap();
        orders
            .iter()
            .filter(|placed| confirmed.get(&placed.id).is_some_and(|at| *at <= until))
            .count()
    }

    /// Waits until `order` is confirmed, or `limit` has passed.
    async fn wait_one(&self, order: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.at(order).is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every order of `orders` is confirmed, or `limit` has passed.
    async fn wait_all(&self, orders: &[Placed], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.count(orders, Instant::now() + Duration::from_secs(3600)) == orders.len() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An order placed and paid.
#[derive(Debug, Clone)]
struct Placed {
    id: String,
    /// When `POST /orders` answered 201.
    created: Instant,
    /// `POST /orders`, from when it was due (or sent, in the closed loop) to its 201.
    place: Duration,
    /// `POST /payments`.
    pay: Duration,
}

/// Places an order for one of the products (retrying the same key while the shop asks to) and
/// pays it.
async fn buy(shop: &TestShop, token: &str, product: &str, due: Instant) -> Result<Placed, Failure> {
    const PLACE: &str = "POST /orders";
    const PAY: &str = "POST /payments";
    let key = uuid::Uuid::new_v4().to_string();
    let answer = loop {
        let answer = shop
            .send(
                shop.request(Method::POST, "/api/orders")
                    .bearer_auth(token)
                    .header("idempotency-key", &key)
                    .json(&json!({"items": [{"product_id": product, "quantity": 1}]})),
            )
            .await
            .map_err(|e| Failure::transport(PLACE, &e))?;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        break answer;
    };
    let created = Instant::now();
    let id = match answer.body["id"].as_str() {
        Some(id)
            if answer.status == StatusCode::CREATED
                && answer.body["status"] == "PENDING_PAYMENT" =>
        {
            id.to_owned()
        }
        _ => return Err(Failure::answer(PLACE, &answer)),
    };
    let paying = Instant::now();
    let paid = shop
        .call(
            Method::POST,
            "/api/payments",
            Some(token),
            Some(json!({
                "order_id": id,
                "card": {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2099, "cvc": "123"},
            })),
        )
        .await
        .map_err(|e| Failure::transport(PAY, &e))?;
    if paid.status != StatusCode::CREATED || paid.body["status"] != "SUCCEEDED" {
        return Err(Failure::answer(PAY, &paid));
    }
    Ok(Placed {
        id,
        created,
        place: created - due,
        pay: paying.elapsed(),
    })
}

/// Why a purchase failed: the request and its answer (status and problem `detail`), or the
/// transport's error.
#[derive(Debug)]
struct Failure(String);

impl Failure {
    fn answer(request: &str, answer: &shop_e2e::Answer) -> Self {
        let detail = answer.body["detail"].as_str().unwrap_or("");
        Self(format!("{request}: {} {detail}", answer.status.as_u16()))
    }

    fn transport(request: &str, error: &anyhow::Error) -> Self {
        Self(format!("{request}: {error:#}"))
    }
}

/// Purchases that failed, counted by why.
#[derive(Debug, Default)]
struct Failures {
    by_kind: std::collections::BTreeMap<String, usize>,
}

impl Failures {
    fn add(&mut self, failure: Failure) {
        *self.by_kind.entry(failure.0).or_default() += 1;
    }

    fn merge(&mut self, other: Self) {
        for (kind, count) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += count;
        }
    }

    fn total(&self) -> usize {
        self.by_kind.values().sum()
    }
}

/// What one load phase measured.
struct Phase {
    orders: Vec<Placed>,
    /// Purchases that failed.
    failures: Failures,
    /// The phase's length (the last arrival, or the end of the closed loop).
    elapsed: Duration,
    /// Orders confirmed within the phase's length, per second.
    completed_per_second: f64,
    /// Orders placed per second.
    placed_per_second: f64,
    /// Orders not confirmed within 60 s after the phase.
    unconfirmed: usize,
    /// created → CONFIRMED.
    completion: Stats,
    /// The CPU the whole process (shop and load generator) used during the phase, in per cent of
    /// one core.
    cpu: Option<f64>,
}

async fn settle(
    confirmations: &Confirmations,
    orders: Vec<Placed>,
    failures: Failures,
    started: Instant,
    elapsed: Duration,
    cpu: Option<f64>,
) -> Phase {
    let end = started + elapsed;
    let in_time = confirmations.count(&orders, end);
    confirmations
        .wait_all(&orders, Duration::from_secs(60))
        .await;
    let completion: Vec<Duration> = orders
        .iter()
        .filter_map(|placed| {
            confirmations
                .at(&placed.id)
                .map(|at| at.saturating_duration_since(placed.created))
        })
        .collect();
    let seconds = elapsed.as_secs_f64();
    Phase {
        unconfirmed: orders.len() - completion.len(),
        completion: Stats::of(&completion),
        completed_per_second: in_time as f64 / seconds,
        placed_per_second: orders.len() as f64 / seconds,
        elapsed,
        orders,
        failures,
        cpu,
    }
}

/// `rate` arrivals a second for `seconds`, each buying once; the customers take turns.
async fn fixed_rate(
    shop: &Arc<TestShop>,
    customers: &Arc<Customers>,
    confirmations: &Confirmations,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Phase> {
    let arrivals = (rate * seconds as f64).round() as usize;
    let (started, cpu_before) = (Instant::now(), cpu_time());
    let mut buyers = tokio::task::JoinSet::new();
    for n in 0..arrivals {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (shop, customers) = (shop.clone(), customers.clone());
        buyers.spawn(async move {
            let token = &customers.tokens[n % customers.tokens.len()];
            let product = &customers.products[n % customers.products.len()];
            buy(&shop, token, product, due).await
        });
    }
    let elapsed = started.elapsed();
    let cpu = cpu_percent(cpu_before, cpu_time(), elapsed);
    let mut orders = Vec::with_capacity(arrivals);
    let mut failures = Failures::default();
    while let Some(bought) = buyers.join_next().await {
        match bought? {
            Ok(placed) => orders.push(placed),
            Err(failure) => failures.add(failure),
        }
    }
    Ok(settle(confirmations, orders, failures, started, elapsed, cpu).await)
}

/// `concurrency` customers buying back to back for `seconds`, each waiting for its order to
/// be confirmed before buying again.
async fn saturation(
    shop: &Arc<TestShop>,
    customers: &Arc<Customers>,
    confirmations: &Confirmations,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Phase> {
    let (started, cpu_before) = (Instant::now(), cpu_time());
    let deadline = started + Duration::from_secs(seconds);
    let mut buyers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (shop, customers) = (shop.clone(), customers.clone());
        let confirmations = confirmations.clone();
        buyers.spawn(async move {
            let mut orders = Vec::new();
            let mut failures = Failures::default();
            let mut n = worker;
            while Instant::now() < deadline {
                let token = &customers.tokens[n % customers.tokens.len()];
                let product = &customers.products[n % customers.products.len()];
                match buy(&shop, token, product, Instant::now()).await {
                    Ok(placed) => {
                        // A customer waits for the confirmation before buying again, so the
                        // shop is driven as fast as it completes orders, not faster.
                        confirmations
                            .wait_one(&placed.id, Duration::from_secs(60))
                            .await;
                        orders.push(placed);
                    }
                    Err(failure) => failures.add(failure),
                }
                n += concurrency;
            }
            (orders, failures)
        });
    }
    let mut orders = Vec::new();
    let mut failures = Failures::default();
    while let Some(bought) = buyers.join_next().await {
        let (bought, failed) = bought?;
        orders.extend(bought);
        failures.merge(failed);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_percent(cpu_before, cpu_time(), elapsed);
    Ok(settle(confirmations, orders, failures, started, elapsed, cpu).await)
}

// ---------------------------------------------------------------------------------------------
// One component set, start to finish.

struct Report {
    set: ComponentSet,
    pgbench_1: f64,
    pgbench_16: f64,
    sqlite: Option<f64>,
    files: f64,
    fixed: Phase,
    saturated: Phase,
}

async fn run_set(set: ComponentSet, settings: Settings) -> anyhow::Result<Report> {
    let ceiling_seconds = if settings.full { 10 } else { 1 };
    let pgbench_1 = pgbench_inserts(1, ceiling_seconds).await?;
    let pgbench_16 = pgbench_inserts(16, ceiling_seconds).await?;
    let sqlite = if set == ComponentSet::Local {
        Some(tokio::task::spawn_blocking(move || sqlite_inserts(ceiling_seconds)).await??)
    } else {
        None
    };
    let files = if settings.full { CEILING_FILES } else { 100 };
    let (files, _created) = tokio::task::spawn_blocking(move || file_creations(files)).await??;
    eprintln!("{set:?}: ceilings measured; starting the shop");

    let shop = Arc::new(
        TestShop::start_with(
            set,
            &[("SHOP_GATEWAY_GATEWAY__RATE_LIMIT__ENABLED", "false")],
        )
        .await?,
    );
    let customers = Arc::new(prepare(&shop, settings).await?);
    let stop = tokio_util::sync::CancellationToken::new();
    let confirmations = Confirmations::default();
    confirmations.follow(&shop, stop.clone());
    eprintln!("{set:?}: warming up with {} purchases", settings.warmup);
    let warmup = saturation(&shop, &customers, &confirmations, 8, 1).await?;
    let mut warmed = warmup.orders.len();
    while warmed < settings.warmup {
        warmed += saturation(&shop, &customers, &confirmations, 8, 1)
            .await?
            .orders
            .len();
    }
    eprintln!(
        "{set:?}: {} orders/s for {} s",
        settings.rate, settings.seconds
    );
    let fixed = fixed_rate(
        &shop,
        &customers,
        &confirmations,
        settings.rate,
        settings.seconds,
    )
    .await?;
    eprintln!(
        "{set:?}: {} customers back to back for {} s",
        settings.concurrency, settings.seconds
    );
    let saturated = saturation(
        &shop,
        &customers,
        &confirmations,
        settings.concurrency,
        settings.seconds,
    )
    .await?;
    stop.cancel();
    drop(customers);
    let Ok(shop) = Arc::try_unwrap(shop) else {
        bail!("the shop is still in use");
    };
    shop.stop().await?;
    Ok(Report {
        set,
        pgbench_1,
        pgbench_16,
        sqlite,
        files,
        fixed,
        saturated,
    })
}

fn cpu() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpu}, {cores} cores")
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn print(report: &Report, settings: Settings) {
    let name = match report.set {
        ComponentSet::Local => "components/local (SQLite, in-memory pub/sub)",
        ComponentSet::RabbitMq => "components/rabbitmq (PostgreSQL, RabbitMQ)",
        ComponentSet::Kafka => "components/kafka (PostgreSQL, Kafka mock cluster)",
    };
    println!("\n### {name}\n");
    println!(
        "Ceilings: pgbench single-row inserts {:.0} tps with 1 client, {:.0} tps with 16{}.\n",
        report.pgbench_1,
        report.pgbench_16,
        report
            .sqlite
            .map(|rate| format!(
                "; SQLite single-row inserts (WAL, synchronous NORMAL) {rate:.0} rows/s"
            ))
            .unwrap_or_default()
    );
    println!(
        "Files created as the mail binding stores emails (1 KB each): {:.0} per second.\n",
        report.files
    );
    for (label, phase) in [
        (
            format!("fixed rate, {} orders/s", settings.rate),
            &report.fixed,
        ),
        (
            format!("{} customers back to back", settings.concurrency),
            &report.saturated,
        ),
    ] {
        let place: Vec<Duration> = phase.orders.iter().map(|o| o.place).collect();
        let pay: Vec<Duration> = phase.orders.iter().map(|o| o.pay).collect();
        println!("#### {label} ({:.1} s)\n", phase.elapsed.as_secs_f64());
        println!("| measure | n | p50 ms | p90 ms | p99 ms | max ms |");
        println!("|---|---:|---:|---:|---:|---:|");
        println!("| POST /orders | {} |", Stats::of(&place).row());
        println!("| POST /payments | {} |", Stats::of(&pay).row());
        println!("| created → CONFIRMED | {} |", phase.completion.row());
        println!(
            "\nPlaced {:.1} orders/s; completed (CONFIRMED within the phase) {:.1} orders/s; not confirmed 60 s later: {}; failed purchases: {}.\n",
            phase.placed_per_second,
            phase.completed_per_second,
            phase.unconfirmed,
            phase.failures.total()
        );
        if let Some(cpu) = phase.cpu {
            println!(
                "CPU used by the shop and the load generator: {cpu:.0} % of one core (of {}).\n",
                std::thread::available_parallelism().map_or(0, usize::from) * 100
            );
        }
        for (kind, count) in &phase.failures.by_kind {
            println!("- {count} × {kind}");
        }
        if phase.failures.total() > 0 {
            println!();
        }
    }
    let p99 = Stats::of(
        &report
            .fixed
            .orders
            .iter()
            .map(|o| o.place)
            .collect::<Vec<_>>(),
    )
    .p99;
    let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
    println!(
        "Targets: POST /orders p99 {:.1} ms at {} orders/s (< {TARGET_PLACE_P99_MS} ms: {}); completed {:.1} orders/s (≥ {TARGET_COMPLETED_PER_SECOND}{}: {}).",
        p99,
        settings.rate,
        verdict(p99 < TARGET_PLACE_P99_MS),
        report.saturated.completed_per_second,
        if report.set == ComponentSet::Local {
            ""
        } else {
            ", asked of the embedded default only"
        },
        verdict(report.saturated.completed_per_second >= TARGET_COMPLETED_PER_SECOND),
    );
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|arg| arg == "--bench");
    let settings = Settings::from_env(full);
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let sets: Vec<ComponentSet> = if full {
        [ComponentSet::Local, ComponentSet::RabbitMq]
            .into_iter()
            .filter(|set| {
                let name = format!("{set:?}").to_ascii_lowercase();
                wanted.is_empty() || wanted.iter().any(|w| name.contains(w.as_str()))
            })
            .collect()
    } else {
        vec![ComponentSet::Local]
    };
    // What the apps and sidecars log, to stderr, when asked (`SHOP_BENCH_LOG=warn`).
    if let Ok(filter) = std::env::var("SHOP_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("## The shop under load\n");
    println!("- machine: {}; load average {}", cpu(), load_average());
    println!(
        "- {} orders/s for {} s, then {} customers back to back for {} s; {} customers, {} products, {} warm-up purchases",
        settings.rate,
        settings.seconds,
        settings.concurrency,
        settings.seconds,
        settings.users,
        settings.products,
        settings.warmup
    );
    for set in sets {
        let report = runtime.block_on(run_set(set, settings))?;
        print(&report, settings);
    }
    println!("\n- load average at the end: {}", load_average());
    Ok(())
}

//! Dapr Workflows against real sidecars: the `dapr` crate's `WorkflowClient` and worker speak
//! the durabletask protocol to the sidecar, whose engine persists in sqlite or PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr::workflow::{
    ActivityContext, ActivityOptions, RegistryExt, RetryPolicy, RuntimeStatus, ScheduleOptions,
    WorkflowClient, WorkflowContext, WorkflowContextExt, WorkflowError, when_all,
};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{RedisKeys, TestDatabase, TestSidecar, eventually, http, sidecar, unique};

/// Where the engine persists.
enum Backend {
    Sqlite(TempDir),
    Postgres(TestDatabase),
    Redis(RedisKeys),
    Memory,
}

impl Backend {
    async fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    async fn postgres() -> Self {
        Self::Postgres(TestDatabase::create().await)
    }

    async fn redis() -> Self {
        Self::Redis(RedisKeys {
            prefix: unique("wfredis"),
        })
    }

    async fn memory() -> Self {
        Self::Memory
    }

    /// An app id of its own (on Redis, under the prefix removed afterwards).
    fn app_id(&self) -> String {
        match self {
            Self::Redis(keys) => format!("{}-app", keys.prefix),
            _ => unique("wf"),
        }
    }

    fn component(&self) -> String {
        let (kind, version, connection) = match self {
            Self::Sqlite(dir) => (
                "state.sqlite",
                "v1",
                dir.path().join("workflows.db").display().to_string(),
            ),
            Self::Postgres(db) => ("state.postgresql", "v2", db.connection_string()),
            Self::Redis(_) => {
                return "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: workflowstore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:6379\n  - name: actorStateStore\n    value: \"true\"\n".to_owned();
            }
            Self::Memory => {
                return "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: workflowstore\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: actorStateStore\n    value: \"true\"\n".to_owned();
            }
        };
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: workflowstore\nspec:\n  type: {kind}\n  version: {version}\n  metadata:\n  - name: connectionString\n    value: \"{connection}\"\n  - name: actorStateStore\n    value: \"true\"\n"
        )
    }

    /// A sidecar on `grpc_port` (0 = any).
    async fn sidecar(&self, app_id: &str, grpc_port: u16) -> TestSidecar {
        sidecar(app_id)
            .resource("workflowstore.yaml", self.component())
            .options(|o| o.grpc_port = grpc_port)
            .start()
            .await
    }

    /// A sidecar with a Configuration.
    async fn sidecar_with_config(&self, app_id: &str, config: &str) -> TestSidecar {
        sidecar(app_id)
            .resource("workflowstore.yaml", self.component())
            .config(config)
            .start()
            .await
    }
}

/// Activity side effects, to check each one happened (at least once) and nothing was lost.
#[derive(Clone, Default)]
struct Effects(Arc<Mutex<Vec<String>>>);

impl Effects {
    fn record(&self, what: String) {
        self.0.lock().expect("effects lock").push(what);
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().expect("effects lock").clone()
    }

    fn distinct_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .all()
            .into_iter()
            .filter(|e| e.starts_with(prefix))
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

fn output<T: serde::de::DeserializeOwned>(state: &dapr::workflow::WorkflowMetadata) -> T {
    serde_json::from_str(state.serialized_output.as_deref().expect("an output"))
        .expect("the output is JSON")
}

async fn add_one(
    _: ActivityContext,
    input: Option<String>,
) -> dapr::workflow::Result<Option<String>> {
    let n: i64 = serde_json::from_str(input.as_deref().unwrap_or("0"))?;
    Ok(Some((n + 1).to_string()))
}

async fn square(
    _: ActivityContext,
    input: Option<String>,
) -> dapr::workflow::Result<Option<String>> {
    let n: i64 = serde_json::from_str(input.as_deref().unwrap_or("0"))?;
    Ok(Some((n * n).to_string()))
}

async fn sequence(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let mut n: i64 = ctx.get_input_typed()?;
    for _ in 0..5 {
        n = ctx.call_activity_typed("add_one", n).await?;
    }
    Ok(Some(n.to_string()))
}

async fn fan_out(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let tasks = (1..=5).map(|i| ctx.call_activity("square", i)).collect();
    let results = when_all(tasks).await?;
    let mut sum = 0i64;
    for result in results {
        sum += serde_json::from_str::<i64>(result.as_deref().unwrap_or("0"))?;
    }
    Ok(Some(sum.to_string()))
}

async fn approval(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let decision: String = ctx.wait_for_external_event_typed("approve", None).await?;
    Ok(Some(serde_json::to_string(&format!(
        "approved by {decision}"
    ))?))
}

async fn approval_with_timeout(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let outcome = ctx
        .wait_for_external_event_with_timeout("approve", Duration::from_millis(500))
        .await?;
    let text = match outcome {
        dapr_durabletask::api::ExternalEventResult::Received(_) => "received",
        _ => "timed out",
    };
    Ok(Some(serde_json::to_string(text)?))
}

async fn with_retries(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let options = ActivityOptions::new()
        .with_input(ctx.instance_id().to_string())
        .with_retry_policy(RetryPolicy::new(4, Duration::from_millis(50)));
    let attempts: i64 = ctx
        .call_activity_with_options_typed("flaky", options)
        .await?;
    Ok(Some(attempts.to_string()))
}

async fn parent(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let child: i64 = ctx.call_sub_workflow_typed("child", 20).await?;
    let failed = match ctx.call_sub_orchestrator("failing_child", (), None).await {
        Ok(_) => "no".to_owned(),
        Err(error) => format!("yes: {error}"),
    };
    Ok(Some(serde_json::to_string(
        &json!({"child": child, "failed": failed}),
    )?))
}

async fn child(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let n: i64 = ctx.get_input_typed()?;
    let n: i64 = ctx.call_activity_typed("add_one", n).await?;
    Ok(Some(n.to_string()))
}

async fn failing_child(_: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    Err(WorkflowError::Other("the child gives up".into()))
}

async fn counter(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let n: i64 = ctx.get_input_typed()?;
    if n < 3 {
        let _ = ctx.call_activity("add_one", n).await?;
        ctx.continue_as_new(n + 1, true);
        return Ok(None);
    }
    Ok(Some(n.to_string()))
}

async fn waits_for_child(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let id = format!("{}-child", ctx.instance_id());
    ctx.call_sub_orchestrator("approval", (), Some(&id)).await?;
    Ok(None)
}

/// How many `gauge` activities ran at once, at most.
#[derive(Default)]
struct Gauge {
    running: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

/// A client with every test workflow and activity registered, and its worker running.
struct Worker {
    client: WorkflowClient,
    handle: Option<dapr::workflow::WorkerHandle>,
    gauge: Arc<Gauge>,
}

impl Worker {
    async fn start(sidecar: &TestSidecar, effects: &Effects) -> Self {
        Self::start_on(sidecar.sidecar.grpc_port(), effects).await
    }

    async fn start_on(port: u16, effects: &Effects) -> Self {
        let mut client = WorkflowClient::new_with_address(format!("http://127.0.0.1:{port}"))
            .await
            .expect("workflow client connects");
        let registry = client.registry_mut();
        registry.add_activity("add_one", add_one);
        registry.add_activity("square", square);
        let attempts: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        registry.add_activity("flaky", move |_, input: Option<String>| {
            let attempts = attempts.clone();
            async move {
                let key = input.unwrap_or_default();
                let count = {
                    let mut attempts = attempts.lock().expect("attempts lock");
                    let count = attempts.entry(key).or_default();
                    *count += 1;
                    *count
                };
                if count < 3 {
                    return Err(WorkflowError::Other(format!("attempt {count} fails")));
                }
                Ok(Some(count.to_string()))
            }
        });
        let gauge: Arc<Gauge> = Arc::default();
        let measured = gauge.clone();
        registry.add_activity("gauge", move |_, _| {
            let gauge = measured.clone();
            async move {
                use std::sync::atomic::Ordering;
                let now = gauge.running.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                gauge.running.fetch_sub(1, Ordering::SeqCst);
                Ok(Some("1".to_owned()))
            }
        });
        registry.add_workflow("gauged_fan_out", |ctx: WorkflowContext| async move {
            let tasks = (0..5).map(|_| ctx.call_activity("gauge", ())).collect();
            let results = when_all(tasks).await?;
            Ok(Some(results.len().to_string()))
        });
        let recorded = effects.clone();
        registry.add_activity("record", move |_, input: Option<String>| {
            let recorded = recorded.clone();
            async move {
                let what: String = serde_json::from_str(input.as_deref().unwrap_or("\"\""))?;
                tokio::time::sleep(Duration::from_millis(150)).await;
                recorded.record(what.clone());
                Ok(Some(serde_json::to_string(&what)?))
            }
        });
        registry.add_workflow("sequence", sequence);
        registry.add_workflow("fan_out", fan_out);
        registry.add_workflow("approval", approval);
        registry.add_workflow("approval_with_timeout", approval_with_timeout);
        registry.add_workflow("with_retries", with_retries);
        registry.add_workflow("parent", parent);
        registry.add_workflow("child", child);
        registry.add_workflow("failing_child", failing_child);
        registry.add_workflow("counter", counter);
        registry.add_workflow("waits_for_child", waits_for_child);
        registry.add_workflow("sleeper", |ctx: WorkflowContext| async move {
            ctx.create_timer(Duration::from_secs(2)).await?;
            Ok(Some(serde_json::to_string("woke")?))
        });
        registry.add_workflow("slow_steps", |ctx: WorkflowContext| async move {
            let id = ctx.instance_id().to_string();
            let mut done = Vec::new();
            for step in 0..5 {
                let what: String = ctx
                    .call_activity_typed("record", format!("{id}/{step}"))
                    .await?;
                done.push(what);
            }
            Ok(Some(serde_json::to_string(&done)?))
        });
        let handle = client.start_worker().await.expect("worker starts");
        Self {
            client,
            handle: Some(handle),
            gauge,
        }
    }

    async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await.expect("worker stops");
        }
    }

    async fn run(&mut self, name: &str, input: Value) -> dapr::workflow::WorkflowMetadata {
        let id = self
            .client
            .schedule_workflow(name, ScheduleOptions::new().with_input(input))
            .await
            .expect("workflow starts");
        self.finish(&id).await
    }

    async fn finish(&mut self, id: &str) -> dapr::workflow::WorkflowMetadata {
        tokio::time::timeout(
            Duration::from_secs(60),
            self.client.wait_for_workflow_completion_with_options(
                id,
                dapr::workflow::FetchOptions::new().with_fetch_payloads(true),
                None,
            ),
        )
        .await
        .expect("the workflow finishes in time")
        .expect("wait succeeds")
    }

    async fn status(&mut self, id: &str) -> RuntimeStatus {
        self.client
            .fetch_workflow_metadata(id, dapr::workflow::FetchOptions::new())
            .await
            .expect("metadata")
            .runtime_status
    }
}

macro_rules! on_every_store {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$scenario(super::Backend::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$scenario(super::Backend::postgres().await).await;
            }
        }
    };
}

async fn activities_run_in_sequence_and_fan_out(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;

    let done = worker.run("sequence", json!(10)).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<i64>(&done), 15);

    let done = worker.run("fan_out", json!(null)).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<i64>(&done), 1 + 4 + 9 + 16 + 25);
    worker.stop().await;
}
on_every_store!(activities_run_in_sequence_and_fan_out);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_run_in_sequence_and_fan_out_on_redis() {
    activities_run_in_sequence_and_fan_out(Backend::redis().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_run_in_sequence_and_fan_out_in_memory() {
    activities_run_in_sequence_and_fan_out(Backend::memory().await).await;
}

async fn external_events_are_delivered_and_timeouts_fire(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;

    // Raised before the workflow waits: buffered until it does.
    let id = worker
        .client
        .schedule_workflow("approval", ScheduleOptions::new())
        .await
        .expect("start");
    worker
        .client
        .raise_event(
            &id,
            "approve",
            dapr::workflow::EventOptions::new().with_payload("ada"),
        )
        .await
        .expect("raise");
    let done = worker.finish(&id).await;
    assert_eq!(output::<String>(&done), "approved by ada");

    let done = worker.run("approval_with_timeout", json!(null)).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<String>(&done), "timed out");
    worker.stop().await;
}
on_every_store!(external_events_are_delivered_and_timeouts_fire);

async fn failed_activities_are_retried_by_policy(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    let done = worker.run("with_retries", json!(null)).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(
        output::<i64>(&done),
        3,
        "two failures, then the third attempt"
    );
    worker.stop().await;
}
on_every_store!(failed_activities_are_retried_by_policy);

async fn child_workflows_return_results_and_failures(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    let done = worker.run("parent", json!(null)).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    let result: Value = output(&done);
    assert_eq!(result["child"], 21);
    let failed = result["failed"].as_str().expect("a string");
    assert!(failed.starts_with("yes"), "{failed}");
    assert!(failed.contains("the child gives up"), "{failed}");
    worker.stop().await;
}
on_every_store!(child_workflows_return_results_and_failures);

async fn continue_as_new_restarts_with_the_new_input(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    let done = worker.run("counter", json!(0)).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<i64>(&done), 3);
    worker.stop().await;
}
on_every_store!(continue_as_new_restarts_with_the_new_input);

async fn terminate_recursively_stops_children_and_purge_removes(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    let id = worker
        .client
        .schedule_workflow(
            "waits_for_child",
            ScheduleOptions::new().with_instance_id(unique("parent")),
        )
        .await
        .expect("start");
    let child_id = format!("{id}-child");
    let http = http();
    let child_url = sidecar.url(&format!("/v1.0/workflows/dapr/{child_id}"));
    assert!(
        eventually(10, || async {
            let Ok(response) = http.get(&child_url).send().await else {
                return false;
            };
            let body: Value = response.json().await.unwrap_or_default();
            body["runtimeStatus"] == "RUNNING"
        })
        .await,
        "the child runs"
    );

    worker
        .client
        .terminate_workflow_recursive(&id, true)
        .await
        .expect("terminate");
    let done = worker.finish(&id).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Terminated);
    let child = worker.finish(&child_id).await;
    assert_eq!(child.runtime_status, RuntimeStatus::Terminated);

    worker
        .client
        .purge_workflow_state_recursive(&id, true)
        .await
        .expect("purge");
    let gone = worker
        .client
        .fetch_workflow_metadata(&id, dapr::workflow::FetchOptions::new())
        .await;
    assert!(gone.is_err(), "purged: {gone:?}");
    let response = http.get(&child_url).send().await.expect("get");
    assert_eq!(response.status(), 404, "the child is purged too");
    worker.stop().await;
}
on_every_store!(terminate_recursively_stops_children_and_purge_removes);

async fn suspended_workflows_wait_until_resumed(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    let id = worker
        .client
        .schedule_workflow("approval", ScheduleOptions::new())
        .await
        .expect("start");
    worker
        .client
        .wait_for_workflow_start(&id)
        .await
        .expect("started");
    worker
        .client
        .suspend_workflow(&id, "hold on")
        .await
        .expect("suspend");
    assert_eq!(worker.status(&id).await, RuntimeStatus::Suspended);
    worker
        .client
        .raise_event(
            &id,
            "approve",
            dapr::workflow::EventOptions::new().with_payload("bob"),
        )
        .await
        .expect("raise");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        worker.status(&id).await,
        RuntimeStatus::Suspended,
        "a suspended workflow does not complete"
    );
    worker
        .client
        .resume_workflow(&id, "go")
        .await
        .expect("resume");
    let done = worker.finish(&id).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<String>(&done), "approved by bob");
    worker.stop().await;
}
on_every_store!(suspended_workflows_wait_until_resumed);

async fn many_instances_complete_at_once(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let worker = Worker::start(&sidecar, &Effects::default()).await;
    let scheduler = worker.client.scheduling_client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200i64 {
        let mut scheduler = scheduler.clone();
        tasks.spawn(async move {
            let id = scheduler
                .schedule_workflow("sequence", ScheduleOptions::new().with_input(i))
                .await
                .expect("start");
            let done = scheduler
                .wait_for_workflow_completion_with_options(
                    &id,
                    dapr::workflow::FetchOptions::new().with_fetch_payloads(true),
                    Some(Duration::from_secs(120)),
                )
                .await
                .expect("finishes");
            (i, done)
        });
    }
    let mut finished = 0;
    while let Some(result) = tasks.join_next().await {
        let (i, done) = result.expect("task");
        assert_eq!(done.runtime_status, RuntimeStatus::Completed);
        assert_eq!(output::<i64>(&done), i + 5);
        finished += 1;
    }
    assert_eq!(finished, 200);
    worker.stop().await;
}
on_every_store!(many_instances_complete_at_once);

fn expected_steps(id: &str) -> Vec<String> {
    (0..5).map(|step| format!("{id}/{step}")).collect()
}

async fn a_workflow_survives_a_sidecar_restart(backend: Backend) {
    let app_id = backend.app_id();
    let first = backend.sidecar(&app_id, 0).await;
    let port = first.sidecar.grpc_port();
    let effects = Effects::default();
    let mut worker = Worker::start(&first, &effects).await;
    let id = worker
        .client
        .schedule_workflow("slow_steps", ScheduleOptions::new())
        .await
        .expect("start");
    assert!(
        eventually(20, || async {
            effects.distinct_with_prefix(&id).len() >= 2
        })
        .await,
        "two steps ran"
    );
    first.sidecar.shutdown().await;

    // The same store and port: the worker reconnects by itself.
    let second = backend.sidecar(&app_id, port).await;
    let done = worker.finish(&id).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<Vec<String>>(&done), expected_steps(&id));
    assert_eq!(effects.distinct_with_prefix(&id), expected_steps(&id));
    worker.stop().await;
    second.sidecar.shutdown().await;
}
on_every_store!(a_workflow_survives_a_sidecar_restart);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_survives_a_sidecar_restart_on_redis() {
    a_workflow_survives_a_sidecar_restart(Backend::redis().await).await;
}

async fn a_timer_fires_after_a_sidecar_restart(backend: Backend) {
    let app_id = backend.app_id();
    let first = backend.sidecar(&app_id, 0).await;
    let port = first.sidecar.grpc_port();
    let mut worker = Worker::start(&first, &Effects::default()).await;
    let id = worker
        .client
        .schedule_workflow("sleeper", ScheduleOptions::new())
        .await
        .expect("start");
    worker
        .client
        .wait_for_workflow_start(&id)
        .await
        .expect("started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.sidecar.shutdown().await;

    let second = backend.sidecar(&app_id, port).await;
    let done = worker.finish(&id).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<String>(&done), "woke");
    worker.stop().await;
    second.sidecar.shutdown().await;
}
on_every_store!(a_timer_fires_after_a_sidecar_restart);

async fn workers_of_one_app_share_the_work(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let (first_effects, second_effects) = (Effects::default(), Effects::default());
    let mut first = Worker::start(&sidecar, &first_effects).await;
    let second = Worker::start(&sidecar, &second_effects).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            first
                .client
                .schedule_workflow("slow_steps", ScheduleOptions::new())
                .await
                .expect("start"),
        );
    }
    for id in &ids {
        let done = first.finish(id).await;
        assert_eq!(done.runtime_status, RuntimeStatus::Completed);
        assert_eq!(output::<Vec<String>>(&done), expected_steps(id));
    }
    assert!(
        !first_effects.all().is_empty(),
        "the first worker ran activities"
    );
    assert!(
        !second_effects.all().is_empty(),
        "the second worker ran activities"
    );
    let mut all: Vec<String> = first_effects.all();
    all.extend(second_effects.all());
    all.sort();
    all.dedup();
    let mut expected: Vec<String> = ids.iter().flat_map(|id| expected_steps(id)).collect();
    expected.sort();
    assert_eq!(all, expected);
    first.stop().await;
    second.stop().await;
}
on_every_store!(workers_of_one_app_share_the_work);

async fn a_workflow_scheduled_for_later_starts_then(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    let at = std::time::SystemTime::now() + Duration::from_millis(1500);
    let id = worker
        .client
        .schedule_workflow(
            "sequence",
            ScheduleOptions::new().with_input(0).with_start_time(at),
        )
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(worker.status(&id).await, RuntimeStatus::Pending, "not yet");
    let done = worker.finish(&id).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert!(std::time::SystemTime::now() >= at);
    assert_eq!(output::<i64>(&done), 5);
    worker.stop().await;
}
on_every_store!(a_workflow_scheduled_for_later_starts_then);

async fn activity_concurrency_follows_the_configured_limit(backend: Backend) {
    let unlimited = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&unlimited, &Effects::default()).await;
    let done = worker.run("gauged_fan_out", json!(null)).await;
    assert_eq!(output::<i64>(&done), 5);
    let peak = worker.gauge.peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak > 1, "without a limit activities overlap (peak {peak})");
    worker.stop().await;

    let limited = backend
        .sidecar_with_config(
            &backend.app_id(),
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: wf\nspec:\n  workflow:\n    maxConcurrentActivityInvocations: 1\n    maxConcurrentWorkflowInvocations: 1\n",
        )
        .await;
    let mut worker = Worker::start(&limited, &Effects::default()).await;
    let done = worker.run("gauged_fan_out", json!(null)).await;
    assert_eq!(output::<i64>(&done), 5);
    assert_eq!(
        worker.gauge.peak.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    worker.stop().await;
}
on_every_store!(activity_concurrency_follows_the_configured_limit);

async fn a_workflow_survives_a_worker_restart(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let effects = Effects::default();
    let mut worker = Worker::start(&sidecar, &effects).await;
    let id = worker
        .client
        .schedule_workflow("slow_steps", ScheduleOptions::new())
        .await
        .expect("start");
    assert!(
        eventually(20, || async {
            effects.distinct_with_prefix(&id).len() >= 2
        })
        .await,
        "two steps ran"
    );
    worker.stop().await;
    let mut worker = Worker::start(&sidecar, &effects).await;
    let done = worker.finish(&id).await;
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(output::<Vec<String>>(&done), expected_steps(&id));
    assert_eq!(effects.distinct_with_prefix(&id), expected_steps(&id));
    worker.stop().await;
}
on_every_store!(a_workflow_survives_a_worker_restart);

async fn the_http_api_drives_workflows(backend: Backend) {
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    let http = http();
    let id = unique("order");

    for version in ["v1.0", "v1.0-beta1"] {
        let id = format!("{id}_{}", version.replace(['.', '-'], ""));
        let response = http
            .post(sidecar.url(&format!(
                "/{version}/workflows/dapr/approval/start?instanceID={id}"
            )))
            .send()
            .await
            .expect("start");
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({"instanceID": id}));

        worker
            .client
            .wait_for_workflow_start(&id)
            .await
            .expect("started");
        let url = sidecar.url(&format!("/{version}/workflows/dapr/{id}"));
        for action in ["pause", "resume"] {
            let response = http
                .post(format!("{url}/{action}"))
                .send()
                .await
                .expect(action);
            assert_eq!(response.status(), 202, "{action}");
        }
        let response = http
            .post(format!("{url}/raiseEvent/approve"))
            .json(&json!("carol"))
            .send()
            .await
            .expect("raise");
        assert_eq!(response.status(), 202);
        worker.finish(&id).await;

        let body: Value = http
            .get(&url)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(body["instanceID"], id.as_str());
        assert_eq!(body["workflowName"], "approval");
        assert_eq!(body["runtimeStatus"], "COMPLETED");
        assert_eq!(
            body["properties"]["dapr.workflow.output"],
            "\"approved by carol\""
        );
        assert!(body["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));

        let response = http
            .post(format!("{url}/purge"))
            .send()
            .await
            .expect("purge");
        assert_eq!(response.status(), 202);
        let response = http.get(&url).send().await.expect("get");
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["errorCode"], "ERR_INSTANCE_ID_NOT_FOUND");
    }

    let response = http
        .post(sidecar.url("/v1.0/workflows/dapr/approval/start?instanceID=not%20valid"))
        .send()
        .await
        .expect("start");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_INSTANCE_ID_INVALID");

    let response = http
        .post(sidecar.url("/v1.0/workflows/other/approval/start"))
        .send()
        .await
        .expect("start");
    assert_eq!(response.status(), 400);

    let response = http
        .post(sidecar.url("/v1.0/workflows/dapr/nobody/terminate"))
        .send()
        .await
        .expect("terminate");
    assert_eq!(response.status(), 404);

    let metadata: Value = http
        .get(sidecar.url("/v1.0/metadata"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["workflows"]["connectedWorkers"], 1);
    worker.stop().await;
}
on_every_store!(the_http_api_drives_workflows);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_and_activity_executions_are_counted_in_the_metrics() {
    let backend = Backend::sqlite().await;
    let app_id = backend.app_id();
    let sidecar = backend.sidecar(&app_id, 0).await;
    let mut worker = Worker::start(&sidecar, &Effects::default()).await;
    worker.run("sequence", json!(1)).await;
    worker.run("parent", json!(null)).await;

    let port = sidecar.sidecar.ports().metrics.expect("a metrics port");
    let metrics = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = |name: &str, labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        line(
            "dapr_runtime_workflow_execution_count{",
            "status=\"success\",workflow_name=\"sequence\""
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        line(
            "dapr_runtime_workflow_execution_count{",
            "status=\"failed\",workflow_name=\"failing_child\""
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        line(
            "dapr_runtime_workflow_activity_execution_count{",
            "activity_name=\"add_one\""
        ),
        Some(6.0),
        "five in the sequence, one in the child: {metrics}"
    );
    assert!(metrics.contains("dapr_runtime_workflow_activity_execution_latency_bucket"));

    // The instances show in the metadata by status: the sequence, the parent and its
    // succeeding child completed; the failing child failed.
    let metadata: Value = http()
        .get(sidecar.url("/v1.0/metadata"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    let instances = &metadata["workflows"]["instances"];
    assert_eq!(instances["FAILED"], 1, "{metadata}");
    assert!(
        instances["COMPLETED"].as_u64().is_some_and(|n| n >= 2),
        "{metadata}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn workflows_are_unavailable_without_an_actor_state_store() {
    let sidecar = sidecar(&unique("wf")).memory_store("plain").start().await;
    let response = http()
        .post(sidecar.url("/v1.0/workflows/dapr/any/start"))
        .send()
        .await
        .expect("start");
    assert_eq!(response.status(), 500);
    let metadata: Value = http()
        .get(sidecar.url("/v1.0/metadata"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert!(metadata.get("workflows").is_none());
}

/// The protocol itself, with the raw generated client: a turn held by a worker whose stream
/// dies goes to the next worker, a stale completion token is refused, and the listing, history
/// and filtered purge calls answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_redelivered_when_its_worker_goes_away() {
    use dapr_durabletask_proto as pb;
    use futures::StreamExt as _;
    use pb::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;

    let backend = Backend::sqlite().await;
    let sidecar = backend.sidecar(&backend.app_id(), 0).await;
    let address = format!("http://127.0.0.1:{}", sidecar.sidecar.grpc_port());
    let mut client = TaskHubSidecarServiceClient::connect(address.clone())
        .await
        .expect("connect");
    client.hello(()).await.expect("hello");

    let id = unique("raw");
    client
        .start_instance(pb::CreateInstanceRequest {
            instance_id: id.clone(),
            name: "raw".into(),
            input: Some("1".into()),
            ..Default::default()
        })
        .await
        .expect("start");

    let next_turn = |mut stream: tonic::Streaming<pb::WorkItem>| async move {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a work item in time")
            .expect("the stream is open")
            .expect("a work item");
        (stream, item)
    };
    let first = client
        .get_work_items(pb::GetWorkItemsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let (first, item) = next_turn(first).await;
    let Some(pb::work_item::Request::WorkflowRequest(request)) = &item.request else {
        panic!("expected a turn, got {item:?}");
    };
    assert_eq!(request.instance_id, id);
    assert!(matches!(
        request
            .new_events
            .first()
            .and_then(|e| e.event_type.as_ref()),
        Some(pb::history_event::EventType::WorkflowStarted(_))
    ));
    let stale_token = item.completion_token.clone();
    drop(first);

    let mut second_client = TaskHubSidecarServiceClient::connect(address)
        .await
        .expect("connect");
    let second = second_client
        .get_work_items(pb::GetWorkItemsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let (_second, again) = next_turn(second).await;
    let Some(pb::work_item::Request::WorkflowRequest(request)) = &again.request else {
        panic!("expected the turn again, got {again:?}");
    };
    assert_eq!(request.instance_id, id, "the same turn, redelivered");
    assert_ne!(again.completion_token, stale_token);

    let complete = |token: String| pb::WorkflowResponse {
        instance_id: id.clone(),
        completion_token: token,
        actions: vec![pb::WorkflowAction {
            id: 0,
            router: None,
            workflow_action_type: Some(pb::workflow_action::WorkflowActionType::CompleteWorkflow(
                pb::CompleteWorkflowAction {
                    workflow_status: pb::OrchestrationStatus::Completed as i32,
                    result: Some("\"done\"".into()),
                    ..Default::default()
                },
            )),
        }],
        ..Default::default()
    };
    let refused = client.complete_workflow_task(complete(stale_token)).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::FailedPrecondition)
    );
    client
        .complete_workflow_task(complete(again.completion_token.clone()))
        .await
        .expect("the current token is accepted");

    let state = client
        .get_instance(pb::GetInstanceRequest {
            instance_id: id.clone(),
            get_inputs_and_outputs: true,
            router: None,
        })
        .await
        .expect("get")
        .into_inner();
    let state = state.workflow_state.expect("a state");
    assert_eq!(
        state.workflow_status,
        pb::OrchestrationStatus::Completed as i32
    );
    assert_eq!(state.output.as_deref(), Some("\"done\""));

    let history = client
        .get_instance_history(pb::GetInstanceHistoryRequest {
            instance_id: id.clone(),
        })
        .await
        .expect("history")
        .into_inner()
        .events;
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| match &e.event_type {
            Some(pb::history_event::EventType::WorkflowStarted(_)) => "WorkflowStarted",
            Some(pb::history_event::EventType::ExecutionStarted(_)) => "ExecutionStarted",
            Some(pb::history_event::EventType::ExecutionCompleted(_)) => "ExecutionCompleted",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["WorkflowStarted", "ExecutionStarted", "ExecutionCompleted"]
    );

    let listed = client
        .list_instance_i_ds(pb::ListInstanceIDsRequest {
            continuation_token: None,
            page_size: Some(10),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.instance_ids, vec![id.clone()]);
    assert_eq!(listed.continuation_token, None);

    let purged = client
        .purge_instances(pb::PurgeInstancesRequest {
            request: Some(pb::purge_instances_request::Request::PurgeInstanceFilter(
                pb::PurgeInstanceFilter {
                    created_time_from: None,
                    created_time_to: None,
                    runtime_status: vec![pb::OrchestrationStatus::Completed as i32],
                },
            )),
            ..Default::default()
        })
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(purged.deleted_instance_count, 1);
    let gone = client
        .get_instance(pb::GetInstanceRequest {
            instance_id: id,
            get_inputs_and_outputs: false,
            router: None,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!gone.exists);
}

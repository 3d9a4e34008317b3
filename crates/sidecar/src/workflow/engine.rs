//! The workflow engine: instances in memory (loaded from the actor state store at start),
//! orchestration turns and activities handed to connected workers, their results applied and
//! persisted, durable timers, and the operations of the workflow client.
//!
//! This follows the durabletask-go backend daprd embeds: a turn sends `{pastEvents, newEvents}`
//! (new events start with `WorkflowStarted`), the worker answers with actions, and the engine
//! records them as history and new work, one write per turn.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use dapr_durabletask_proto as pb;
use pb::history_event::EventType;
use pb::workflow_action::WorkflowActionType;
use pb::{HistoryEvent, OrchestrationStatus};
use prost_types::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::store::{self, Committed, Keys, StoredActivity, StoredInstance, StoredTimer, Writer};
use crate::metrics::Metrics;
use crate::state::StateStore;
use crate::trace::{RequestTrace, SpanContext};

/// Why an engine operation failed; mapped to gRPC codes and Dapr's HTTP errors by the APIs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("no such instance exists: {0}")]
    NotFound(String),
    #[error("an active workflow with ID '{0}' already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("the workflow engine is not available: {0}")]
    Unavailable(String),
}

/// Limits on work handed out at once (Dapr's `maxConcurrentWorkflowInvocations` and
/// `maxConcurrentActivityInvocations`); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) workflows: Option<usize>,
    pub(crate) activities: Option<usize>,
}

/// How turns and activities are traced (the Configuration's `tracing`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TraceSettings {
    pub(crate) sampling_rate: f64,
    pub(crate) stdout: bool,
}

/// What a work-item stream receives.
pub(crate) type WorkSender = mpsc::UnboundedSender<Result<pb::WorkItem, tonic::Status>>;

/// The engine of one sidecar.
pub(crate) struct Engine {
    app_id: String,
    keys: Keys,
    writer: Writer,
    state: Mutex<State>,
    timers: mpsc::UnboundedSender<TimerEntry>,
    metrics: Metrics,
    limits: Limits,
    trace: TraceSettings,
    shutdown: CancellationToken,
}

struct Instance {
    record: StoredInstance,
    /// The turn a worker holds, if any (at most one per instance).
    turn: Option<Turn>,
    /// Whether the instance sits in the ready queue.
    queued: bool,
    /// Clients waiting for a status change.
    waiters: Vec<oneshot::Sender<()>>,
}

struct Turn {
    token: String,
    /// How many inbox events the worker got.
    events: usize,
    started: HistoryEvent,
    span: tracing::Span,
    trace: RequestTrace,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ActivityRef {
    instance_id: String,
    execution_id: String,
    task_id: i32,
}

impl ActivityRef {
    /// The completion token names the activity itself, so a result sent after a reconnect or a
    /// sidecar restart still finds its activity.
    fn token(&self) -> String {
        format!(
            "a\n{}\n{}\n{}",
            self.execution_id, self.task_id, self.instance_id
        )
    }

    fn parse(token: &str) -> Option<Self> {
        let mut parts = token.splitn(4, '\n');
        if parts.next()? != "a" {
            return None;
        }
        let execution_id = parts.next()?.to_owned();
        let task_id = parts.next()?.parse().ok()?;
        let instance_id = parts.next()?.to_owned();
        Some(Self {
            instance_id,
            execution_id,
            task_id,
        })
    }
}

struct ActivityInFlight {
    worker: u64,
    name: String,
    dispatched: Instant,
    span: tracing::Span,
    trace: RequestTrace,
}

struct Worker {
    id: u64,
    sender: WorkSender,
}

#[derive(Default)]
struct State {
    instances: HashMap<String, Instance>,
    ready: VecDeque<String>,
    activity_queue: VecDeque<ActivityRef>,
    activities_in_flight: HashMap<ActivityRef, ActivityInFlight>,
    /// Instance id → worker holding its turn.
    turns_in_flight: HashMap<String, u64>,
    workers: Vec<Worker>,
    next_worker: u64,
    round_robin: usize,
    turn_counter: u64,
}

/// A timer to arm.
pub(crate) struct TimerEntry {
    fire_at: SystemTime,
    instance_id: String,
    execution_id: String,
    timer_id: i32,
}

fn now() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

fn event(event_id: i32, event_type: EventType) -> HistoryEvent {
    HistoryEvent {
        event_id,
        timestamp: Some(now()),
        router: None,
        event_type: Some(event_type),
    }
}

/// The trace context the workflow was started with (`ExecutionStarted.parentTraceContext`).
fn parent_context(record: &StoredInstance) -> Option<SpanContext> {
    record
        .history
        .iter()
        .chain(record.inbox.iter())
        .find_map(|e| match &e.event_type {
            Some(EventType::ExecutionStarted(started)) => started.parent_trace_context.as_ref(),
            _ => None,
        })
        .and_then(|t| SpanContext::parse(&t.trace_parent))
}

/// A span of the sidecar's own, child of `parent` or the root of a new trace.
fn start_trace(parent: Option<SpanContext>, sampling_rate: f64) -> RequestTrace {
    RequestTrace {
        parent,
        span: parent.map_or_else(|| SpanContext::root(sampling_rate), |p| p.child()),
        tracestate: None,
        start: SystemTime::now(),
    }
}

fn status_of(record: &StoredInstance) -> OrchestrationStatus {
    OrchestrationStatus::try_from(record.status).unwrap_or(OrchestrationStatus::Running)
}

/// Completed, failed or terminated (Dapr lets these be purged and their ids reused).
pub(crate) fn is_terminal(status: OrchestrationStatus) -> bool {
    matches!(
        status,
        OrchestrationStatus::Completed
            | OrchestrationStatus::Failed
            | OrchestrationStatus::Terminated
            | OrchestrationStatus::Canceled
    )
}

fn to_system_time(timestamp: &Timestamp) -> SystemTime {
    SystemTime::try_from(*timestamp).unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Instance {
    fn new(record: StoredInstance) -> Self {
        Self {
            record,
            turn: None,
            queued: false,
            waiters: Vec::new(),
        }
    }

    fn status(&self) -> OrchestrationStatus {
        status_of(&self.record)
    }

    fn wake(&mut self) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn touch(&mut self) {
        self.record.last_updated = Some(now());
    }

    fn runnable(&self) -> bool {
        self.turn.is_none()
            && !self.record.inbox.is_empty()
            && !is_terminal(self.status())
            && scheduled_start(&self.record).is_none_or(|at| at <= SystemTime::now())
    }
}

/// Timer id of the wake-up of a workflow scheduled to start later (no real timer has it: the
/// SDKs number their actions from 0).
const START_TIMER: i32 = i32::MIN;

/// When a workflow that has not started yet is scheduled to start (`scheduledStartTimestamp`).
fn scheduled_start(record: &StoredInstance) -> Option<SystemTime> {
    if record.started {
        return None;
    }
    record.inbox.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStarted(started)) => started
            .scheduled_start_timestamp
            .as_ref()
            .map(to_system_time),
        _ => None,
    })
}

impl State {
    fn make_ready(&mut self, instance_id: &str) {
        if let Some(instance) = self.instances.get_mut(instance_id)
            && !instance.queued
            && instance.runnable()
        {
            instance.queued = true;
            self.ready.push_back(instance_id.to_owned());
        }
    }

    fn pick_worker(&mut self) -> Option<(u64, WorkSender)> {
        if self.workers.is_empty() {
            return None;
        }
        self.round_robin = (self.round_robin + 1) % self.workers.len();
        let worker = &self.workers[self.round_robin];
        Some((worker.id, worker.sender.clone()))
    }
}

impl Engine {
    /// Loads every instance of `app_id` from `store` and starts the writer and the timers.
    pub(crate) async fn start(
        app_id: &str,
        store: Arc<dyn StateStore>,
        metrics: Metrics,
        limits: Limits,
        trace: TraceSettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let keys = Keys::new(app_id);
        let stored = store
            .scan_prefix(keys.prefix())
            .await
            .map_err(|e| anyhow::anyhow!("cannot load workflow instances: {e}"))?;
        let (timers, timer_receiver) = mpsc::unbounded_channel();
        let engine = Arc::new(Self {
            app_id: app_id.to_owned(),
            keys,
            writer: Writer::spawn(store),
            state: Mutex::new(State::default()),
            timers,
            metrics,
            limits,
            trace,
            shutdown,
        });
        {
            let mut state = engine.lock();
            for (key, value) in stored {
                let record = match store::decode(&value) {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::error!(%key, %error, "skipping an unreadable workflow instance");
                        continue;
                    }
                };
                let id = record.instance_id.clone();
                if !is_terminal(status_of(&record)) {
                    for timer in &record.timers {
                        engine.arm(&record, timer);
                    }
                    engine.arm_start(&record);
                    for activity in &record.activities {
                        state.activity_queue.push_back(ActivityRef {
                            instance_id: id.clone(),
                            execution_id: record.execution_id.clone(),
                            task_id: activity.task_id,
                        });
                    }
                }
                state.instances.insert(id.clone(), Instance::new(record));
                state.make_ready(&id);
            }
            tracing::info!(
                app_id,
                instances = state.instances.len(),
                "workflow engine started"
            );
        }
        tokio::spawn(run_timers(Arc::downgrade(&engine), timer_receiver));
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arm(&self, record: &StoredInstance, timer: &StoredTimer) {
        let fire_at = timer
            .fire_at
            .as_ref()
            .map_or(SystemTime::now(), to_system_time);
        let _ = self.timers.send(TimerEntry {
            fire_at,
            instance_id: record.instance_id.clone(),
            execution_id: record.execution_id.clone(),
            timer_id: timer.timer_id,
        });
    }

    /// Wakes a workflow scheduled to start later when its time comes.
    fn arm_start(&self, record: &StoredInstance) {
        if let Some(at) = scheduled_start(record).filter(|at| *at > SystemTime::now()) {
            let _ = self.timers.send(TimerEntry {
                fire_at: at,
                instance_id: record.instance_id.clone(),
                execution_id: record.execution_id.clone(),
                timer_id: START_TIMER,
            });
        }
    }

    fn persist(&self, records: &[&StoredInstance]) -> Committed {
        self.writer.write(
            records
                .iter()
                .map(|r| store::set(self.keys.instance(&r.instance_id), r))
                .collect(),
        )
    }

    /// Hands out what is ready, within the limits, to connected workers (round robin).
    fn pump(&self, state: &mut State) {
        if state.workers.is_empty() {
            return;
        }
        while self
            .limits
            .workflows
            .is_none_or(|max| state.turns_in_flight.len() < max)
        {
            let Some(id) = state.ready.pop_front() else {
                break;
            };
            let Some((worker, sender)) = state.pick_worker() else {
                state.ready.push_front(id);
                break;
            };
            state.turn_counter += 1;
            let counter = state.turn_counter;
            let Some(instance) = state.instances.get_mut(&id) else {
                continue;
            };
            instance.queued = false;
            if !instance.runnable() {
                continue;
            }
            let started = event(
                -1,
                EventType::WorkflowStarted(pb::WorkflowStartedEvent::default()),
            );
            let mut new_events = Vec::with_capacity(instance.record.inbox.len() + 1);
            new_events.push(started.clone());
            new_events.extend(instance.record.inbox.iter().cloned());
            let token = format!("o\n{counter}\n{id}");
            let span = tracing::info_span!(
                "workflow turn",
                app_id = %self.app_id,
                instance_id = %id,
                workflow = %instance.record.name,
                events = new_events.len()
            );
            let item = pb::WorkItem {
                completion_token: token.clone(),
                request: Some(pb::work_item::Request::WorkflowRequest(
                    pb::WorkflowRequest {
                        instance_id: id.clone(),
                        execution_id: Some(instance.record.execution_id.clone()),
                        past_events: instance.record.history.clone(),
                        new_events,
                        ..pb::WorkflowRequest::default()
                    },
                )),
            };
            let trace = start_trace(parent_context(&instance.record), self.trace.sampling_rate);
            instance.turn = Some(Turn {
                token,
                events: instance.record.inbox.len(),
                started,
                span,
                trace,
            });
            state.turns_in_flight.insert(id.clone(), worker);
            if sender.send(Ok(item)).is_err() {
                self.worker_gone_locked(state, worker);
            }
        }
        while self
            .limits
            .activities
            .is_none_or(|max| state.activities_in_flight.len() < max)
        {
            let Some(activity) = state.activity_queue.pop_front() else {
                break;
            };
            let Some((worker, sender)) = state.pick_worker() else {
                state.activity_queue.push_front(activity);
                break;
            };
            let Some(instance) = state.instances.get(&activity.instance_id) else {
                continue;
            };
            if instance.record.execution_id != activity.execution_id
                || is_terminal(instance.status())
            {
                continue;
            }
            let Some(stored) = instance
                .record
                .activities
                .iter()
                .find(|a| a.task_id == activity.task_id)
            else {
                continue;
            };
            let span = tracing::info_span!(
                "workflow activity",
                app_id = %self.app_id,
                instance_id = %activity.instance_id,
                activity = %stored.name,
                task_id = activity.task_id
            );
            let trace = start_trace(parent_context(&instance.record), self.trace.sampling_rate);
            let item = pb::WorkItem {
                completion_token: activity.token(),
                request: Some(pb::work_item::Request::ActivityRequest(
                    pb::ActivityRequest {
                        name: stored.name.clone(),
                        version: stored.version.clone(),
                        input: stored.input.clone(),
                        workflow_instance: Some(pb::WorkflowInstance {
                            instance_id: activity.instance_id.clone(),
                            execution_id: Some(activity.execution_id.clone()),
                        }),
                        task_id: activity.task_id,
                        // The app's activity span becomes a child of the sidecar's.
                        parent_trace_context: Some(pb::TraceContext {
                            trace_parent: trace.span.to_string(),
                            ..pb::TraceContext::default()
                        }),
                        task_execution_id: stored.task_execution_id.clone(),
                        propagated_history: None,
                    },
                )),
            };
            let name = stored.name.clone();
            state.activities_in_flight.insert(
                activity,
                ActivityInFlight {
                    worker,
                    name,
                    dispatched: Instant::now(),
                    span,
                    trace,
                },
            );
            if sender.send(Ok(item)).is_err() {
                self.worker_gone_locked(state, worker);
            }
        }
    }

    /// A worker opened a `GetWorkItems` stream: it gets its share of what is waiting.
    pub(crate) fn connect_worker(&self, sender: WorkSender) -> u64 {
        let mut state = self.lock();
        state.next_worker += 1;
        let id = state.next_worker;
        state.workers.push(Worker { id, sender });
        tracing::debug!(app_id = %self.app_id, worker = id, "workflow worker connected");
        self.pump(&mut state);
        id
    }

    /// A worker's stream ended: whatever it held is handed out again.
    pub(crate) fn disconnect_worker(&self, worker: u64) {
        let mut state = self.lock();
        self.worker_gone_locked(&mut state, worker);
        self.pump(&mut state);
    }

    fn worker_gone_locked(&self, state: &mut State, worker: u64) {
        let before = state.workers.len();
        state.workers.retain(|w| w.id != worker);
        if state.workers.len() != before {
            tracing::debug!(app_id = %self.app_id, worker, "workflow worker disconnected");
        }
        let turns: Vec<String> = state
            .turns_in_flight
            .iter()
            .filter(|(_, w)| **w == worker)
            .map(|(id, _)| id.clone())
            .collect();
        for id in turns {
            state.turns_in_flight.remove(&id);
            if let Some(instance) = state.instances.get_mut(&id) {
                instance.turn = None;
            }
            state.make_ready(&id);
        }
        let activities: Vec<ActivityRef> = state
            .activities_in_flight
            .iter()
            .filter(|(_, a)| a.worker == worker)
            .map(|(r, _)| r.clone())
            .collect();
        for activity in activities {
            state.activities_in_flight.remove(&activity);
            state.activity_queue.push_back(activity);
        }
    }

    // ----- client operations -----

    /// `StartInstance`: records the instance with `ExecutionStarted` in its inbox.
    pub(crate) async fn start_instance(
        &self,
        request: pb::CreateInstanceRequest,
    ) -> Result<String, EngineError> {
        if request.name.is_empty() {
            return Err(EngineError::InvalidArgument(
                "workflow name is not configured".into(),
            ));
        }
        let instance_id = if request.instance_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            request.instance_id.clone()
        };
        let execution_id = request
            .execution_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let committed = {
            let mut state = self.lock();
            if let Some(existing) = state.instances.get(&instance_id)
                && !is_terminal(existing.status())
            {
                return Err(EngineError::AlreadyExists(instance_id));
            }
            let started = event(
                -1,
                EventType::ExecutionStarted(pb::ExecutionStartedEvent {
                    name: request.name.clone(),
                    version: request.version.clone(),
                    input: request.input.clone(),
                    workflow_instance: Some(pb::WorkflowInstance {
                        instance_id: instance_id.clone(),
                        execution_id: Some(execution_id.clone()),
                    }),
                    parent_instance: None,
                    scheduled_start_timestamp: request.scheduled_start_timestamp,
                    parent_trace_context: request.parent_trace_context.clone(),
                    workflow_span_id: None,
                    tags: request.tags.clone(),
                }),
            );
            let record = StoredInstance {
                instance_id: instance_id.clone(),
                name: request.name,
                status: OrchestrationStatus::Pending as i32,
                created: Some(now()),
                last_updated: Some(now()),
                input: request.input,
                execution_id,
                inbox: vec![started],
                tags: request.tags,
                ..StoredInstance::default()
            };
            let committed = self.persist(&[&record]);
            self.arm_start(&record);
            let mut instance = Instance::new(record);
            if let Some(old) = state.instances.remove(&instance_id) {
                instance.waiters = old.waiters;
            }
            instance.wake();
            state.instances.insert(instance_id.clone(), instance);
            state.make_ready(&instance_id);
            self.pump(&mut state);
            committed
        };
        self.committed(committed).await?;
        Ok(instance_id)
    }

    async fn committed(&self, committed: Committed) -> Result<(), EngineError> {
        if committed.wait().await {
            Ok(())
        } else {
            Err(EngineError::Unavailable("the state writer stopped".into()))
        }
    }

    /// The state of one instance, `None` if there is none.
    pub(crate) fn get_instance(
        &self,
        instance_id: &str,
        payloads: bool,
    ) -> Option<pb::WorkflowState> {
        let state = self.lock();
        state
            .instances
            .get(instance_id)
            .map(|i| workflow_state(&i.record, payloads))
    }

    /// Waits until `done` holds for the instance (or it does not exist).
    pub(crate) async fn wait_for(
        &self,
        instance_id: &str,
        payloads: bool,
        done: impl Fn(OrchestrationStatus) -> bool,
    ) -> Option<pb::WorkflowState> {
        loop {
            let receiver = {
                let mut state = self.lock();
                let instance = state.instances.get_mut(instance_id)?;
                if done(instance.status()) {
                    return Some(workflow_state(&instance.record, payloads));
                }
                let (sender, receiver) = oneshot::channel();
                instance.waiters.push(sender);
                receiver
            };
            tokio::select! {
                _ = receiver => {}
                () = self.shutdown.cancelled() => return self.get_instance(instance_id, payloads),
            }
        }
    }

    /// Appends events to instances' inboxes (one write), making them ready.
    async fn deliver(
        &self,
        instance_id: &str,
        build: impl FnOnce(&mut Instance) -> Result<Vec<HistoryEvent>, EngineError>,
    ) -> Result<(), EngineError> {
        let committed = {
            let mut state = self.lock();
            let instance = state
                .instances
                .get_mut(instance_id)
                .ok_or_else(|| EngineError::NotFound(instance_id.to_owned()))?;
            let events = build(instance)?;
            if events.is_empty() {
                return Ok(());
            }
            instance.record.inbox.extend(events);
            instance.touch();
            instance.wake();
            let committed = self.persist(&[&instance.record]);
            state.make_ready(instance_id);
            self.pump(&mut state);
            committed
        };
        self.committed(committed).await
    }

    /// `RaiseEvent`: buffered in the inbox until the workflow waits for it (the SDK keeps
    /// events nobody waits for yet).
    pub(crate) async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), EngineError> {
        let name = name.to_owned();
        self.deliver(instance_id, move |instance| {
            if is_terminal(instance.status()) {
                return Ok(Vec::new());
            }
            Ok(vec![event(
                -1,
                EventType::EventRaised(pb::EventRaisedEvent { name, input }),
            )])
        })
        .await
    }

    /// `SuspendInstance`.
    pub(crate) async fn suspend(
        &self,
        instance_id: &str,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.deliver(instance_id, move |instance| {
            let status = instance.status();
            if is_terminal(status) || status == OrchestrationStatus::Suspended {
                return Ok(Vec::new());
            }
            instance.record.status = OrchestrationStatus::Suspended as i32;
            Ok(vec![event(
                -1,
                EventType::ExecutionSuspended(pb::ExecutionSuspendedEvent { input: reason }),
            )])
        })
        .await
    }

    /// `ResumeInstance`.
    pub(crate) async fn resume(
        &self,
        instance_id: &str,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.deliver(instance_id, move |instance| {
            if instance.status() != OrchestrationStatus::Suspended {
                return Ok(Vec::new());
            }
            instance.record.status = if instance.record.started {
                OrchestrationStatus::Running as i32
            } else {
                OrchestrationStatus::Pending as i32
            };
            Ok(vec![event(
                -1,
                EventType::ExecutionResumed(pb::ExecutionResumedEvent { input: reason }),
            )])
        })
        .await
    }

    /// `TerminateInstance`; with `recursive`, every running descendant too.
    pub(crate) async fn terminate(
        &self,
        instance_id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), EngineError> {
        let committed = {
            let mut state = self.lock();
            if !state.instances.contains_key(instance_id) {
                return Err(EngineError::NotFound(instance_id.to_owned()));
            }
            let mut targets = vec![instance_id.to_owned()];
            if recursive {
                let mut index = 0;
                while index < targets.len() {
                    let parent = targets[index].clone();
                    targets.extend(children_of(&state, &parent));
                    index += 1;
                }
            }
            let mut records = Vec::new();
            for target in &targets {
                let Some(instance) = state.instances.get_mut(target) else {
                    continue;
                };
                if is_terminal(instance.status()) {
                    continue;
                }
                instance.record.inbox.push(event(
                    -1,
                    EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
                        input: output.clone(),
                        recurse: recursive,
                    }),
                ));
                instance.touch();
                records.push(instance.record.clone());
            }
            let committed = self.persist(&records.iter().collect::<Vec<_>>());
            for target in &targets {
                state.make_ready(target);
            }
            self.pump(&mut state);
            committed
        };
        self.committed(committed).await
    }

    /// `PurgeInstances` for one instance: removes a finished instance (and with `recursive`
    /// its finished descendants). Returns how many were removed.
    pub(crate) async fn purge(
        &self,
        instance_id: &str,
        recursive: bool,
    ) -> Result<usize, EngineError> {
        let committed_and_count = {
            let mut state = self.lock();
            let Some(instance) = state.instances.get(instance_id) else {
                return Ok(0);
            };
            if !is_terminal(instance.status()) {
                return Err(EngineError::FailedPrecondition(format!(
                    "workflow instance '{instance_id}' is not in a terminal state"
                )));
            }
            let mut targets = vec![instance_id.to_owned()];
            if recursive {
                let mut index = 0;
                while index < targets.len() {
                    let parent = targets[index].clone();
                    targets.extend(children_of(&state, &parent));
                    index += 1;
                }
            }
            self.remove_instances(&mut state, &targets)
        };
        let (committed, count) = committed_and_count;
        self.committed(committed).await?;
        Ok(count)
    }

    /// `PurgeInstances` with a filter: every finished instance created in the range with one
    /// of the statuses.
    pub(crate) async fn purge_filtered(
        &self,
        filter: &pb::PurgeInstanceFilter,
    ) -> Result<usize, EngineError> {
        let (committed, count) = {
            let mut state = self.lock();
            let from = filter.created_time_from.as_ref().map(to_system_time);
            let to = filter.created_time_to.as_ref().map(to_system_time);
            let targets: Vec<String> = state
                .instances
                .values()
                .filter(|i| is_terminal(i.status()))
                .filter(|i| {
                    filter.runtime_status.is_empty()
                        || filter.runtime_status.contains(&i.record.status)
                })
                .filter(|i| {
                    let created = i
                        .record
                        .created
                        .as_ref()
                        .map_or(SystemTime::UNIX_EPOCH, to_system_time);
                    from.is_none_or(|f| created >= f) && to.is_none_or(|t| created < t)
                })
                .map(|i| i.record.instance_id.clone())
                .collect();
            self.remove_instances(&mut state, &targets)
        };
        self.committed(committed).await?;
        Ok(count)
    }

    fn remove_instances(&self, state: &mut State, targets: &[String]) -> (Committed, usize) {
        let mut operations = Vec::new();
        for target in targets {
            if let Some(mut instance) = state.instances.remove(target) {
                instance.wake();
                operations.push(store::delete(self.keys.instance(target)));
            }
        }
        let count = operations.len();
        (self.writer.write(operations), count)
    }

    /// `ListInstanceIDs`: ids in order, a page at a time.
    pub(crate) fn list_instance_ids(
        &self,
        after: Option<&str>,
        page_size: usize,
    ) -> (Vec<String>, Option<String>) {
        let state = self.lock();
        let mut ids: Vec<&String> = state
            .instances
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort();
        let more = ids.len() > page_size;
        let page: Vec<String> = ids.into_iter().take(page_size).cloned().collect();
        let next = if more { page.last().cloned() } else { None };
        (page, next)
    }

    /// `GetInstanceHistory`.
    pub(crate) fn history(&self, instance_id: &str) -> Option<Vec<HistoryEvent>> {
        let state = self.lock();
        state
            .instances
            .get(instance_id)
            .map(|i| i.record.history.clone())
    }

    /// How many workers are connected.
    pub(crate) fn connected_workers(&self) -> usize {
        self.lock().workers.len()
    }

    /// How many instances there are in each runtime status (purged ones are gone).
    pub(crate) fn instance_counts(&self) -> std::collections::BTreeMap<OrchestrationStatus, usize> {
        let state = self.lock();
        let mut counts = std::collections::BTreeMap::new();
        for instance in state.instances.values() {
            *counts.entry(instance.status()).or_insert(0) += 1;
        }
        counts
    }

    // ----- worker results -----

    /// `CompleteActivityTask`: the result becomes `TaskCompleted` or `TaskFailed` in the
    /// instance's inbox. A late or repeated result of an activity already settled is dropped.
    pub(crate) async fn complete_activity(
        &self,
        response: pb::ActivityResponse,
    ) -> Result<(), EngineError> {
        let committed = {
            let mut state = self.lock();
            let activity = match ActivityRef::parse(&response.completion_token) {
                Some(activity) => activity,
                None => {
                    let execution_id = state
                        .instances
                        .get(&response.instance_id)
                        .map(|i| i.record.execution_id.clone())
                        .unwrap_or_default();
                    ActivityRef {
                        instance_id: response.instance_id.clone(),
                        execution_id,
                        task_id: response.task_id,
                    }
                }
            };
            let in_flight = state.activities_in_flight.remove(&activity);
            let Some(instance) = state.instances.get_mut(&activity.instance_id) else {
                return Ok(());
            };
            if instance.record.execution_id != activity.execution_id {
                return Ok(());
            }
            let Some(position) = instance
                .record
                .activities
                .iter()
                .position(|a| a.task_id == activity.task_id)
            else {
                return Ok(());
            };
            let stored = instance.record.activities.remove(position);
            let failed = response.failure_details.is_some();
            let name = in_flight
                .as_ref()
                .map_or(stored.name.as_str(), |f| f.name.as_str());
            let elapsed = in_flight
                .as_ref()
                .map(|f| f.dispatched.elapsed())
                .unwrap_or_default();
            self.metrics.workflow_activity(name, !failed, elapsed);
            if let Some(in_flight) = &in_flight {
                in_flight.span.in_scope(|| {
                    tracing::debug!(failed, "activity completed");
                });
                in_flight
                    .trace
                    .finish(|| format!("activity||{name}"), self.trace.stdout);
            }
            let event_type = match response.failure_details {
                Some(failure_details) => EventType::TaskFailed(pb::TaskFailedEvent {
                    task_scheduled_id: activity.task_id,
                    failure_details: Some(failure_details),
                    task_execution_id: stored.task_execution_id,
                    ..pb::TaskFailedEvent::default()
                }),
                None => EventType::TaskCompleted(pb::TaskCompletedEvent {
                    task_scheduled_id: activity.task_id,
                    result: response.result,
                    task_execution_id: stored.task_execution_id,
                    ..pb::TaskCompletedEvent::default()
                }),
            };
            instance.record.inbox.push(event(-1, event_type));
            instance.touch();
            let committed = self.persist(&[&instance.record]);
            state.make_ready(&activity.instance_id);
            self.pump(&mut state);
            committed
        };
        self.committed(committed).await
    }

    /// A timer came due.
    fn fire_timer(&self, entry: &TimerEntry) {
        let mut state = self.lock();
        let Some(instance) = state.instances.get_mut(&entry.instance_id) else {
            return;
        };
        if instance.record.execution_id != entry.execution_id || is_terminal(instance.status()) {
            return;
        }
        if entry.timer_id == START_TIMER {
            state.make_ready(&entry.instance_id);
            self.pump(&mut state);
            return;
        }
        let Some(position) = instance
            .record
            .timers
            .iter()
            .position(|t| t.timer_id == entry.timer_id)
        else {
            return;
        };
        let timer = instance.record.timers.remove(position);
        instance.record.inbox.push(event(
            -1,
            EventType::TimerFired(pb::TimerFiredEvent {
                fire_at: timer.fire_at,
                timer_id: timer.timer_id,
            }),
        ));
        instance.touch();
        // Nobody waits for this write: a crash before it lands re-fires the timer on restart.
        drop(self.persist(&[&instance.record]));
        state.make_ready(&entry.instance_id);
        self.pump(&mut state);
    }

    /// `CompleteOrchestratorTask`: applies a turn's actions and commits history and new work
    /// in one write. A result for a turn no longer in flight (redelivered meanwhile) is refused.
    pub(crate) async fn complete_turn(
        &self,
        response: pb::WorkflowResponse,
    ) -> Result<(), EngineError> {
        let committed = {
            let mut state = self.lock();
            let id = response.instance_id.clone();
            let Some(instance) = state.instances.get_mut(&id) else {
                return Err(EngineError::NotFound(id));
            };
            match &instance.turn {
                Some(turn) if turn.token == response.completion_token => {}
                _ => {
                    return Err(EngineError::FailedPrecondition(format!(
                        "the completion token of the turn of '{id}' is not the one in flight"
                    )));
                }
            }
            let Some(turn) = instance.turn.take() else {
                return Ok(());
            };
            state.turns_in_flight.remove(&id);
            let outcome = self.apply_turn(&mut state, &id, turn, response);
            let records: Vec<&StoredInstance> = outcome
                .touched
                .iter()
                .filter_map(|t| state.instances.get(t).map(|i| &i.record))
                .collect();
            let committed = self.persist(&records);
            for touched in &outcome.touched {
                state.make_ready(touched);
            }
            self.pump(&mut state);
            committed
        };
        self.committed(committed).await
    }

    fn apply_turn(
        &self,
        state: &mut State,
        id: &str,
        turn: Turn,
        response: pb::WorkflowResponse,
    ) -> TurnOutcome {
        let mut touched = vec![id.to_owned()];
        let Some(instance) = state.instances.get_mut(id) else {
            return TurnOutcome { touched };
        };
        let _entered = turn.span.enter();
        turn.trace.finish(
            || format!("orchestration||{}", instance.record.name),
            self.trace.stdout,
        );
        let record = &mut instance.record;
        let delivered: Vec<HistoryEvent> = record
            .inbox
            .drain(..turn.events.min(record.inbox.len()))
            .collect();
        record.history.push(turn.started);
        for event in &delivered {
            match &event.event_type {
                Some(EventType::ExecutionSuspended(_)) => {
                    record.status = OrchestrationStatus::Suspended as i32;
                }
                Some(EventType::ExecutionResumed(_)) => {
                    record.status = OrchestrationStatus::Running as i32;
                }
                _ => {}
            }
        }
        record.history.extend(delivered);
        if !record.started {
            record.started = true;
            if record.status == OrchestrationStatus::Pending as i32 {
                record.status = OrchestrationStatus::Running as i32;
            }
        }
        if response.custom_status.is_some() {
            record.custom_status = response.custom_status;
        }
        record.last_updated = Some(now());

        let mut new_children: Vec<StoredInstance> = Vec::new();
        let mut sends: Vec<(String, HistoryEvent)> = Vec::new();
        let mut terminations: Vec<(String, Option<String>, bool)> = Vec::new();
        let mut new_activities: Vec<ActivityRef> = Vec::new();
        let mut new_timers: Vec<StoredTimer> = Vec::new();
        let mut completion: Option<pb::CompleteWorkflowAction> = None;

        for action in response.actions {
            let Some(kind) = action.workflow_action_type else {
                continue;
            };
            match kind {
                WorkflowActionType::ScheduleTask(task) => {
                    record.history.push(event(
                        action.id,
                        EventType::TaskScheduled(pb::TaskScheduledEvent {
                            name: task.name.clone(),
                            version: task.version.clone(),
                            input: task.input.clone(),
                            task_execution_id: task.task_execution_id.clone(),
                            ..pb::TaskScheduledEvent::default()
                        }),
                    ));
                    record.activities.push(StoredActivity {
                        task_id: action.id,
                        name: task.name,
                        input: task.input,
                        task_execution_id: task.task_execution_id,
                        trace_context: None,
                        version: task.version,
                    });
                    new_activities.push(ActivityRef {
                        instance_id: id.to_owned(),
                        execution_id: record.execution_id.clone(),
                        task_id: action.id,
                    });
                }
                WorkflowActionType::CreateTimer(timer) => {
                    let origin = timer.origin.map(|o| match o {
                        pb::create_timer_action::Origin::CreateTimer(t) => {
                            pb::timer_created_event::Origin::CreateTimer(t)
                        }
                        pb::create_timer_action::Origin::ExternalEvent(t) => {
                            pb::timer_created_event::Origin::ExternalEvent(t)
                        }
                        pb::create_timer_action::Origin::ActivityRetry(t) => {
                            pb::timer_created_event::Origin::ActivityRetry(t)
                        }
                        pb::create_timer_action::Origin::ChildWorkflowRetry(t) => {
                            pb::timer_created_event::Origin::ChildWorkflowRetry(t)
                        }
                    });
                    record.history.push(event(
                        action.id,
                        EventType::TimerCreated(pb::TimerCreatedEvent {
                            fire_at: timer.fire_at,
                            name: timer.name,
                            rerun_parent_instance_info: None,
                            origin,
                        }),
                    ));
                    let stored = StoredTimer {
                        timer_id: action.id,
                        fire_at: timer.fire_at,
                    };
                    record.timers.push(stored.clone());
                    new_timers.push(stored);
                }
                WorkflowActionType::CreateChildWorkflow(child) => {
                    let child_id = if child.instance_id.is_empty() {
                        format!("{id}:{:04x}", action.id)
                    } else {
                        child.instance_id.clone()
                    };
                    record.history.push(event(
                        action.id,
                        EventType::ChildWorkflowInstanceCreated(
                            pb::ChildWorkflowInstanceCreatedEvent {
                                instance_id: child_id.clone(),
                                name: child.name.clone(),
                                version: child.version.clone(),
                                input: child.input.clone(),
                                ..pb::ChildWorkflowInstanceCreatedEvent::default()
                            },
                        ),
                    ));
                    let execution_id = uuid::Uuid::new_v4().simple().to_string();
                    let parent = pb::ParentInstanceInfo {
                        task_scheduled_id: action.id,
                        name: Some(record.name.clone()),
                        version: None,
                        workflow_instance: Some(pb::WorkflowInstance {
                            instance_id: id.to_owned(),
                            execution_id: Some(record.execution_id.clone()),
                        }),
                        app_id: Some(self.app_id.clone()),
                        app_namespace: None,
                    };
                    new_children.push(StoredInstance {
                        instance_id: child_id.clone(),
                        name: child.name.clone(),
                        status: OrchestrationStatus::Pending as i32,
                        created: Some(now()),
                        last_updated: Some(now()),
                        input: child.input.clone(),
                        execution_id: execution_id.clone(),
                        parent: Some(parent.clone()),
                        inbox: vec![event(
                            -1,
                            EventType::ExecutionStarted(pb::ExecutionStartedEvent {
                                name: child.name,
                                version: child.version,
                                input: child.input,
                                workflow_instance: Some(pb::WorkflowInstance {
                                    instance_id: child_id,
                                    execution_id: Some(execution_id),
                                }),
                                parent_instance: Some(parent),
                                ..pb::ExecutionStartedEvent::default()
                            }),
                        )],
                        ..StoredInstance::default()
                    });
                }
                WorkflowActionType::SendEvent(send) => {
                    let target = send
                        .instance
                        .as_ref()
                        .map(|i| i.instance_id.clone())
                        .unwrap_or_default();
                    record.history.push(event(
                        action.id,
                        EventType::EventSent(pb::EventSentEvent {
                            instance_id: target.clone(),
                            name: send.name.clone(),
                            input: send.data.clone(),
                        }),
                    ));
                    sends.push((
                        target,
                        event(
                            -1,
                            EventType::EventRaised(pb::EventRaisedEvent {
                                name: send.name,
                                input: send.data,
                            }),
                        ),
                    ));
                }
                WorkflowActionType::CompleteWorkflow(complete) => {
                    completion = Some(complete);
                }
                WorkflowActionType::TerminateWorkflow(terminate) => {
                    terminations.push((terminate.instance_id, terminate.reason, terminate.recurse));
                }
                WorkflowActionType::WorkflowVersionNotAvailable(_) => {
                    record.status = OrchestrationStatus::Stalled as i32;
                }
                WorkflowActionType::CreateDetachedWorkflow(detached) => {
                    let child_id = if detached.instance_id.is_empty() {
                        uuid::Uuid::new_v4().to_string()
                    } else {
                        detached.instance_id.clone()
                    };
                    record.history.push(event(
                        action.id,
                        EventType::DetachedWorkflowInstanceCreated(
                            pb::DetachedWorkflowInstanceCreatedEvent {
                                instance_id: child_id.clone(),
                            },
                        ),
                    ));
                    let execution_id = uuid::Uuid::new_v4().simple().to_string();
                    new_children.push(StoredInstance {
                        instance_id: child_id.clone(),
                        name: detached.name.clone(),
                        status: OrchestrationStatus::Pending as i32,
                        created: Some(now()),
                        last_updated: Some(now()),
                        input: detached.input.clone(),
                        execution_id: execution_id.clone(),
                        tags: detached.tags.clone(),
                        inbox: vec![event(
                            -1,
                            EventType::ExecutionStarted(pb::ExecutionStartedEvent {
                                name: detached.name,
                                version: detached.version,
                                input: detached.input,
                                workflow_instance: Some(pb::WorkflowInstance {
                                    instance_id: child_id,
                                    execution_id: Some(execution_id),
                                }),
                                parent_trace_context: detached.parent_trace_context,
                                tags: detached.tags,
                                ..pb::ExecutionStartedEvent::default()
                            }),
                        )],
                        ..StoredInstance::default()
                    });
                }
            }
        }

        let mut parent_notice: Option<(String, HistoryEvent)> = None;
        let mut finished: Option<(String, bool, std::time::Duration)> = None;
        if let Some(complete) = completion {
            let status = OrchestrationStatus::try_from(complete.workflow_status)
                .unwrap_or(OrchestrationStatus::Failed);
            if status == OrchestrationStatus::ContinuedAsNew {
                // Continue-as-new: a fresh execution with the new input; events that arrived
                // meanwhile, and those the SDK carries over, are kept for it.
                let execution_id = uuid::Uuid::new_v4().simple().to_string();
                let started = event(
                    -1,
                    EventType::ExecutionStarted(pb::ExecutionStartedEvent {
                        name: record.name.clone(),
                        version: complete.new_version.clone(),
                        input: complete.result.clone(),
                        workflow_instance: Some(pb::WorkflowInstance {
                            instance_id: id.to_owned(),
                            execution_id: Some(execution_id.clone()),
                        }),
                        parent_instance: record.parent.clone(),
                        tags: record.tags.clone(),
                        ..pb::ExecutionStartedEvent::default()
                    }),
                );
                let mut inbox = vec![started];
                inbox.extend(complete.carryover_events);
                inbox.append(&mut record.inbox);
                record.inbox = inbox;
                record.history.clear();
                record.activities.clear();
                record.timers.clear();
                new_activities.clear();
                new_timers.clear();
                record.execution_id = execution_id;
                record.input = complete.result;
                record.output = None;
                record.custom_status = None;
            } else {
                record.history.push(event(
                    -1,
                    EventType::ExecutionCompleted(pb::ExecutionCompletedEvent {
                        workflow_status: complete.workflow_status,
                        result: complete.result.clone(),
                        failure_details: complete.failure_details.clone(),
                    }),
                ));
                record.status = status as i32;
                record.output = complete.result.clone();
                record.failure = complete.failure_details.clone();
                record.completed = Some(now());
                record.activities.clear();
                record.timers.clear();
                record.inbox.clear();
                new_activities.clear();
                new_timers.clear();
                let elapsed = record
                    .created
                    .as_ref()
                    .and_then(|c| SystemTime::now().duration_since(to_system_time(c)).ok())
                    .unwrap_or_default();
                finished = Some((
                    record.name.clone(),
                    status == OrchestrationStatus::Completed,
                    elapsed,
                ));
                if let Some(parent) = &record.parent
                    && let Some(parent_instance) = &parent.workflow_instance
                {
                    let notice = if status == OrchestrationStatus::Completed {
                        EventType::ChildWorkflowInstanceCompleted(
                            pb::ChildWorkflowInstanceCompletedEvent {
                                task_scheduled_id: parent.task_scheduled_id,
                                result: complete.result,
                                ..pb::ChildWorkflowInstanceCompletedEvent::default()
                            },
                        )
                    } else {
                        let failure_details =
                            complete
                                .failure_details
                                .unwrap_or_else(|| pb::TaskFailureDetails {
                                    error_type: format!("{status:?}"),
                                    error_message: format!(
                                        "child workflow '{id}' ended as {}",
                                        status.as_str_name()
                                    ),
                                    ..pb::TaskFailureDetails::default()
                                });
                        EventType::ChildWorkflowInstanceFailed(
                            pb::ChildWorkflowInstanceFailedEvent {
                                task_scheduled_id: parent.task_scheduled_id,
                                failure_details: Some(failure_details),
                                ..pb::ChildWorkflowInstanceFailedEvent::default()
                            },
                        )
                    };
                    parent_notice = Some((parent_instance.instance_id.clone(), event(-1, notice)));
                }
            }
        }
        let record_snapshot_for_timers = record.clone();
        instance.wake();
        drop(_entered);

        if let Some((name, succeeded, elapsed)) = finished {
            self.metrics.workflow_execution(&name, succeeded, elapsed);
        }
        for timer in &new_timers {
            self.arm(&record_snapshot_for_timers, timer);
        }
        state.activity_queue.extend(new_activities);
        for child in new_children {
            let child_id = child.instance_id.clone();
            if let Some(existing) = state.instances.get(&child_id)
                && !is_terminal(existing.status())
            {
                // The id is taken by a running instance: the child cannot start.
                let failure = pb::TaskFailureDetails {
                    error_type: "AlreadyExists".into(),
                    error_message: format!(
                        "an active workflow with ID '{child_id}' already exists"
                    ),
                    ..pb::TaskFailureDetails::default()
                };
                let task_scheduled_id = child.parent.as_ref().map_or(0, |p| p.task_scheduled_id);
                sends.push((
                    id.to_owned(),
                    event(
                        -1,
                        EventType::ChildWorkflowInstanceFailed(
                            pb::ChildWorkflowInstanceFailedEvent {
                                task_scheduled_id,
                                failure_details: Some(failure),
                                ..pb::ChildWorkflowInstanceFailedEvent::default()
                            },
                        ),
                    ),
                ));
                continue;
            }
            let mut fresh = Instance::new(child);
            if let Some(old) = state.instances.remove(&child_id) {
                fresh.waiters = old.waiters;
            }
            state.instances.insert(child_id.clone(), fresh);
            touched.push(child_id);
        }
        if let Some(notice) = parent_notice {
            sends.push(notice);
        }
        for (target, event) in sends {
            if let Some(target_instance) = state.instances.get_mut(&target)
                && !is_terminal(target_instance.status())
            {
                target_instance.record.inbox.push(event);
                target_instance.touch();
                target_instance.wake();
                touched.push(target);
            }
        }
        for (target, reason, recurse) in terminations {
            let mut targets = vec![target];
            if recurse {
                let mut index = 0;
                while index < targets.len() {
                    let parent = targets[index].clone();
                    targets.extend(children_of(state, &parent));
                    index += 1;
                }
            }
            for target in targets {
                if let Some(target_instance) = state.instances.get_mut(&target)
                    && !is_terminal(target_instance.status())
                {
                    target_instance.record.inbox.push(event(
                        -1,
                        EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
                            input: reason.clone(),
                            recurse,
                        }),
                    ));
                    target_instance.touch();
                    touched.push(target);
                }
            }
        }
        touched.sort();
        touched.dedup();
        TurnOutcome { touched }
    }
}

struct TurnOutcome {
    /// Instances whose documents changed.
    touched: Vec<String>,
}

/// Running instances started by `parent` as child workflows.
fn children_of(state: &State, parent: &str) -> Vec<String> {
    state
        .instances
        .values()
        .filter(|i| {
            i.record
                .parent
                .as_ref()
                .and_then(|p| p.workflow_instance.as_ref())
                .is_some_and(|w| w.instance_id == parent)
        })
        .map(|i| i.record.instance_id.clone())
        .collect()
}

fn workflow_state(record: &StoredInstance, payloads: bool) -> pb::WorkflowState {
    pb::WorkflowState {
        instance_id: record.instance_id.clone(),
        name: record.name.clone(),
        version: None,
        workflow_status: record.status,
        scheduled_start_timestamp: None,
        created_timestamp: record.created,
        last_updated_timestamp: record.last_updated,
        input: payloads.then(|| record.input.clone()).flatten(),
        output: payloads.then(|| record.output.clone()).flatten(),
        custom_status: payloads.then(|| record.custom_status.clone()).flatten(),
        failure_details: record.failure.clone(),
        execution_id: Some(record.execution_id.clone()),
        completed_timestamp: record.completed,
        parent_instance_id: record
            .parent
            .as_ref()
            .and_then(|p| p.workflow_instance.as_ref())
            .map(|w| w.instance_id.clone()),
        tags: record.tags.clone(),
        parent_app_id: None,
        started_at: record.created,
    }
}

/// Fires timers when due: one task keeps them ordered by due time.
async fn run_timers(
    engine: std::sync::Weak<Engine>,
    mut receiver: mpsc::UnboundedReceiver<TimerEntry>,
) {
    let mut due: BTreeMap<(SystemTime, u64), TimerEntry> = BTreeMap::new();
    let mut sequence: u64 = 0;
    loop {
        let next = due.keys().next().map(|(at, _)| *at);
        let sleep = match next {
            Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            entry = receiver.recv() => match entry {
                Some(entry) => {
                    sequence += 1;
                    due.insert((entry.fire_at, sequence), entry);
                }
                None => return,
            },
            () = tokio::time::sleep(sleep) => {
                let Some(engine) = engine.upgrade() else { return };
                let now = SystemTime::now();
                while let Some(entry) = due.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let entry = entry.remove();
                    engine.fire_timer(&entry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_tokens_name_their_activity() {
        let activity = ActivityRef {
            instance_id: "order:1\nx".into(),
            execution_id: "e1".into(),
            task_id: 7,
        };
        let parsed = ActivityRef::parse(&activity.token());
        assert!(parsed == Some(activity));
        assert!(ActivityRef::parse("o\n1\nx").is_none());
    }
}

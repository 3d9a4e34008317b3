//! `OrderWorkflow` replayed with no sidecar: `OrchestrationExecutor` runs it over histories
//! built here turn by turn, as the engine would (each turn's actions become history, then the
//! test adds what happens next: an activity's result, a decision event, a timer firing).

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::{CancellationReason, DeclineReason};
use dapr::workflow::RetryPolicy;
use dapr_durabletask::worker::{OrchestrationExecutor, OrchestratorFn, WorkerOptions};
use dapr_durabletask_proto as proto;
use proto::history_event::EventType;
use proto::workflow_action::WorkflowActionType;
use serde_json::{Value, json};
use shop_orders::domain::{Items, OrderId};
use shop_orders::workflow::{
    DECISION_EVENT, Decision, Opened, PlaceOrder, Settled, activity, order_workflow,
};
use uuid::Uuid;

fn timestamp(at: DateTime<Utc>) -> proto::prost_types::Timestamp {
    proto::prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap(),
    }
}

fn from_timestamp(at: &proto::prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap()).unwrap()
}

fn event(event_id: i32, at: DateTime<Utc>, event_type: EventType) -> proto::HistoryEvent {
    proto::HistoryEvent {
        event_id,
        timestamp: Some(timestamp(at)),
        router: None,
        event_type: Some(event_type),
    }
}

/// What one turn asked for.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Activity { id: i32, name: String, input: Value },
    Timer { id: i32, fire_at: DateTime<Utc> },
    Completed(Option<Settled>),
}

/// One workflow instance: its history so far and a clock the test moves.
struct Instance {
    workflow: OrchestratorFn,
    history: Vec<proto::HistoryEvent>,
    /// Events that arrived since the last turn.
    inbox: Vec<proto::HistoryEvent>,
    now: DateTime<Utc>,
    next_event_id: i32,
    /// Execution ids of scheduled activities, by task id.
    executions: std::collections::HashMap<i32, String>,
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(3, Duration::from_secs(1)).with_backoff_coefficient(2.0)
}

impl Instance {
    fn start(order: &PlaceOrder, now: DateTime<Utc>) -> Self {
        let retry = retry_policy();
        let workflow: OrchestratorFn =
            Arc::new(move |ctx| Box::pin(order_workflow(ctx, retry.clone())));
        let started = event(
            -1,
            now,
            EventType::ExecutionStarted(proto::ExecutionStartedEvent {
                name: shop_orders::workflow::NAME.into(),
                version: None,
                input: Some(serde_json::to_string(order).unwrap()),
                workflow_instance: Some(proto::WorkflowInstance {
                    instance_id: order.order_id.to_string(),
                    execution_id: Some("e1".into()),
                }),
                parent_instance: None,
                scheduled_start_timestamp: None,
                parent_trace_context: None,
                workflow_span_id: None,
                tags: Default::default(),
            }),
        );
        Self {
            workflow,
            history: Vec::new(),
            inbox: vec![started],
            now,
            next_event_id: 1000,
            executions: Default::default(),
        }
    }

    fn next_id(&mut self) -> i32 {
        self.next_event_id += 1;
        self.next_event_id
    }

    /// Runs one turn over the history and what arrived, records the actions as the engine
    /// does, and returns them.
    async fn turn(&mut self) -> Vec<Step> {
        let mut new_events = vec![event(
            -1,
            self.now,
            EventType::WorkflowStarted(proto::WorkflowStartedEvent { version: None }),
        )];
        new_events.append(&mut self.inbox);
        let response = OrchestrationExecutor::execute(
            &self.workflow,
            "order",
            self.history.clone(),
            new_events.clone(),
            String::new(),
            &WorkerOptions::default(),
            None,
        )
        .await
        .unwrap();
        self.history.extend(new_events);
        let mut steps = Vec::new();
        for action in response.actions {
            match action.workflow_action_type.unwrap() {
                WorkflowActionType::ScheduleTask(task) => {
                    self.executions
                        .insert(action.id, task.task_execution_id.clone());
                    steps.push(Step::Activity {
                        id: action.id,
                        name: task.name.clone(),
                        input: serde_json::from_str(task.input.as_deref().unwrap_or("null"))
                            .unwrap(),
                    });
                    self.history.push(event(
                        action.id,
                        self.now,
                        EventType::TaskScheduled(proto::TaskScheduledEvent {
                            name: task.name,
                            version: None,
                            input: task.input,
                            parent_trace_context: None,
                            task_execution_id: task.task_execution_id,
                            rerun_parent_instance_info: None,
                            history_propagation_scope: None,
                        }),
                    ));
                }
                WorkflowActionType::CreateTimer(timer) => {
                    let fire_at = timer.fire_at.unwrap();
                    steps.push(Step::Timer {
                        id: action.id,
                        fire_at: from_timestamp(&fire_at),
                    });
                    let origin = timer.origin.map(|origin| {
                        use proto::create_timer_action::Origin as From;
                        use proto::timer_created_event::Origin as To;
                        match origin {
                            From::CreateTimer(o) => To::CreateTimer(o),
                            From::ExternalEvent(o) => To::ExternalEvent(o),
                            From::ActivityRetry(o) => To::ActivityRetry(o),
                            From::ChildWorkflowRetry(o) => To::ChildWorkflowRetry(o),
                        }
                    });
                    self.history.push(event(
                        action.id,
                        self.now,
                        EventType::TimerCreated(proto::TimerCreatedEvent {
                            fire_at: Some(fire_at),
                            name: timer.name,
                            rerun_parent_instance_info: None,
                            origin,
                        }),
                    ));
                }
                WorkflowActionType::CompleteWorkflow(done) => {
                    assert_eq!(
                        done.workflow_status,
                        proto::OrchestrationStatus::Completed as i32,
                        "the workflow failed: {:?}",
                        done.failure_details
                    );
                    steps.push(Step::Completed(
                        done.result.map(|r| serde_json::from_str(&r).unwrap()),
                    ));
                }
                other => panic!("unexpected action {other:?}"),
            }
        }
        steps
    }

    fn complete(&mut self, task: i32, result: Value) {
        let id = self.next_id();
        let execution = self.executions.get(&task).cloned().unwrap_or_default();
        self.inbox.push(event(
            id,
            self.now,
            EventType::TaskCompleted(proto::TaskCompletedEvent {
                task_scheduled_id: task,
                result: Some(result.to_string()),
                task_execution_id: execution,
                attestation: None,
                signer_certificate: None,
            }),
        ));
    }

    fn fail(&mut self, task: i32, message: &str) {
        let id = self.next_id();
        let execution = self.executions.get(&task).cloned().unwrap_or_default();
        self.inbox.push(event(
            id,
            self.now,
            EventType::TaskFailed(proto::TaskFailedEvent {
                task_scheduled_id: task,
                failure_details: Some(proto::TaskFailureDetails {
                    error_type: "ActivityError".into(),
                    error_message: message.into(),
                    stack_trace: None,
                    inner_failure: None,
                    is_non_retriable: false,
                }),
                task_execution_id: execution,
                attestation: None,
                signer_certificate: None,
            }),
        ));
    }

    fn raise(&mut self, payload: Value) {
        self.inbox.push(event(
            -1,
            self.now,
            EventType::EventRaised(proto::EventRaisedEvent {
                name: DECISION_EVENT.into(),
                input: Some(payload.to_string()),
            }),
        ));
    }

    fn fire(&mut self, timer: i32, fire_at: DateTime<Utc>) {
        self.now = fire_at;
        let id = self.next_id();
        self.inbox.push(event(
            id,
            fire_at,
            EventType::TimerFired(proto::TimerFiredEvent {
                fire_at: Some(timestamp(fire_at)),
                timer_id: timer,
            }),
        ));
    }

    /// Completes the one activity of `steps` (checking its name) with `result`.
    fn finish_activity(&mut self, steps: &[Step], name: &str, result: Value) -> Value {
        let [
            Step::Activity {
                id,
                name: got,
                input,
            },
        ] = steps
        else {
            panic!("expected only the activity {name}, got {steps:?}");
        };
        assert_eq!(got, name, "{steps:?}");
        let input = input.clone();
        self.complete(*id, result);
        input
    }
}

fn order(now: DateTime<Utc>) -> PlaceOrder {
    PlaceOrder {
        order_id: OrderId::generate(),
        user_id: Uuid::new_v4(),
        user_email: "ada@example.com".into(),
        items: Items::parse(&[(Uuid::now_v7(), 2)], 10).unwrap(),
        placed_at: now,
        payment_due_at: now + chrono::Duration::minutes(15),
    }
}

/// Runs the workflow up to its wait for a decision: the stock is reserved and ORDER_CREATED
/// published. Returns the instance and the id of the deadline timer.
async fn pending(order: &PlaceOrder) -> (Instance, i32) {
    let mut instance = Instance::start(order, order.placed_at);
    let steps = instance.turn().await;
    let input = instance.finish_activity(
        &steps,
        activity::RESERVE_STOCK,
        json!(Opened::PendingPayment),
    );
    assert_eq!(
        input,
        serde_json::to_value(order).unwrap(),
        "reserves what was placed"
    );

    let steps = instance.turn().await;
    let input = instance.finish_activity(&steps, activity::PUBLISH, Value::Null);
    assert_eq!(
        input,
        json!({"order_id": order.order_id, "event": "created"})
    );

    instance.now += chrono::Duration::seconds(1);
    let steps = instance.turn().await;
    let [Step::Timer { id, fire_at }] = steps[..] else {
        panic!("expected the payment deadline, got {steps:?}");
    };
    assert_eq!(
        fire_at, order.payment_due_at,
        "waits until the payment is due"
    );
    (instance, id)
}

/// Completes the remaining activities, which must be `expected` in order, and returns the
/// workflow's result and the inputs the activities got.
async fn finish(instance: &mut Instance, expected: &[&str]) -> (Settled, Vec<Value>) {
    let mut inputs = Vec::new();
    for name in expected {
        let steps = instance.turn().await;
        inputs.push(instance.finish_activity(&steps, name, Value::Null));
    }
    let steps = instance.turn().await;
    let [Step::Completed(Some(settled))] = &steps[..] else {
        panic!("expected the workflow to complete, got {steps:?}");
    };
    (settled.clone(), inputs)
}

#[tokio::test]
async fn a_paid_order_commits_its_stock_is_confirmed_and_announced() {
    let order = order(Utc::now());
    let (mut instance, _) = pending(&order).await;
    let payment_id = Uuid::new_v4();
    instance.raise(json!(Decision::Paid { payment_id }));
    let (settled, inputs) = finish(
        &mut instance,
        &[
            activity::COMMIT_STOCK,
            activity::CLOSE_ORDER,
            activity::PUBLISH,
        ],
    )
    .await;
    assert_eq!(settled.status, shop_orders::domain::OrderStatus::Confirmed);
    assert_eq!(inputs[0], json!(order.order_id));
    assert_eq!(
        inputs[1],
        json!({"order_id": order.order_id, "closing": {"status": "confirmed", "payment_id": payment_id}})
    );
    assert_eq!(
        inputs[2],
        json!({"order_id": order.order_id, "event": "confirmed"})
    );
}

#[tokio::test]
async fn a_declined_payment_releases_the_stock_and_cancels_the_order() {
    let order = order(Utc::now());
    let (mut instance, _) = pending(&order).await;
    instance.raise(json!(Decision::PaymentFailed {
        payment_id: Uuid::new_v4(),
        reason: DeclineReason::CardDeclined,
    }));
    let (settled, inputs) = finish(
        &mut instance,
        &[
            activity::RELEASE_STOCK,
            activity::CLOSE_ORDER,
            activity::PUBLISH,
        ],
    )
    .await;
    assert_eq!(settled.status, shop_orders::domain::OrderStatus::Cancelled);
    assert_eq!(settled.reason, Some(CancellationReason::PaymentFailed));
    assert_eq!(
        inputs[1],
        json!({"order_id": order.order_id, "closing": {"status": "cancelled", "reason": "payment_failed"}})
    );
    assert_eq!(
        inputs[2],
        json!({"order_id": order.order_id, "event": "cancelled"})
    );
}

#[tokio::test]
async fn an_order_nobody_pays_is_cancelled_when_the_deadline_passes() {
    let order = order(Utc::now());
    let (mut instance, deadline) = pending(&order).await;
    instance.fire(deadline, order.payment_due_at);
    let (settled, inputs) = finish(
        &mut instance,
        &[
            activity::RELEASE_STOCK,
            activity::CLOSE_ORDER,
            activity::PUBLISH,
        ],
    )
    .await;
    assert_eq!(settled.reason, Some(CancellationReason::PaymentTimeout));
    assert_eq!(
        inputs[1]["closing"],
        json!({"status": "cancelled", "reason": "payment_timeout"})
    );
}

#[tokio::test]
async fn a_customer_cancellation_releases_the_stock() {
    let order = order(Utc::now());
    let (mut instance, _) = pending(&order).await;
    instance.raise(json!(Decision::CancelRequested));
    let (settled, inputs) = finish(
        &mut instance,
        &[
            activity::RELEASE_STOCK,
            activity::CLOSE_ORDER,
            activity::PUBLISH,
        ],
    )
    .await;
    assert_eq!(
        settled.reason,
        Some(CancellationReason::CancelledByCustomer)
    );
    assert_eq!(inputs[0], json!(order.order_id));
}

#[tokio::test]
async fn a_rejected_order_ends_without_announcing_or_waiting() {
    let order = order(Utc::now());
    let mut instance = Instance::start(&order, order.placed_at);
    let steps = instance.turn().await;
    instance.finish_activity(&steps, activity::RESERVE_STOCK, json!(Opened::Rejected));
    let steps = instance.turn().await;
    let [Step::Completed(Some(settled))] = &steps[..] else {
        panic!("expected the workflow to complete at once, got {steps:?}");
    };
    assert_eq!(settled.status, shop_orders::domain::OrderStatus::Rejected);
}

#[tokio::test]
async fn only_the_first_decision_counts() {
    let order = order(Utc::now());
    let (mut instance, _) = pending(&order).await;
    // A cancellation and a (late) payment arrive in the same turn: the first one wins.
    instance.raise(json!(Decision::CancelRequested));
    instance.raise(json!(Decision::Paid {
        payment_id: Uuid::new_v4()
    }));
    let (settled, _) = finish(
        &mut instance,
        &[
            activity::RELEASE_STOCK,
            activity::CLOSE_ORDER,
            activity::PUBLISH,
        ],
    )
    .await;
    assert_eq!(
        settled.reason,
        Some(CancellationReason::CancelledByCustomer)
    );
}

#[tokio::test]
async fn a_decision_that_is_not_one_is_ignored_and_the_deadline_still_holds() {
    let order = order(Utc::now());
    let (mut instance, _) = pending(&order).await;
    instance.now += chrono::Duration::minutes(5);
    instance.raise(json!({"decision": "refund_please"}));
    let steps = instance.turn().await;
    let [Step::Timer { id, fire_at }] = steps[..] else {
        panic!("expected a new wait, got {steps:?}");
    };
    assert_eq!(
        fire_at, order.payment_due_at,
        "the same deadline, not a fresh 15 minutes"
    );
    instance.fire(id, fire_at);
    let (settled, _) = finish(
        &mut instance,
        &[
            activity::RELEASE_STOCK,
            activity::CLOSE_ORDER,
            activity::PUBLISH,
        ],
    )
    .await;
    assert_eq!(settled.reason, Some(CancellationReason::PaymentTimeout));
}

#[tokio::test]
async fn a_failed_activity_is_retried_after_the_policys_delay() {
    let order = order(Utc::now());
    let mut instance = Instance::start(&order, order.placed_at);
    let steps = instance.turn().await;
    let [Step::Activity { id, ref name, .. }] = steps[..] else {
        panic!("expected the reservation, got {steps:?}");
    };
    assert_eq!(name, activity::RESERVE_STOCK);
    instance.fail(id, "the inventory is unavailable");
    let steps = instance.turn().await;
    let [Step::Timer { id: retry, fire_at }] = steps[..] else {
        panic!("expected a retry timer, got {steps:?}");
    };
    assert_eq!(fire_at, order.placed_at + chrono::Duration::seconds(1));
    instance.fire(retry, fire_at);
    let steps = instance.turn().await;
    instance.finish_activity(
        &steps,
        activity::RESERVE_STOCK,
        json!(Opened::PendingPayment),
    );
    let steps = instance.turn().await;
    instance.finish_activity(&steps, activity::PUBLISH, Value::Null);
}

//! `OrderWorkflow`, one instance per order (instance id = order id): reserve the stock, announce
//! the order, wait for the payment outcome (or a cancellation, or the deadline), then commit the
//! stock and confirm the order, or release the stock and cancel it.
//!
//! The workflow itself only decides; every effect is an activity ([`activities`]), retried by
//! the SDK with the app's retry policy and written so that running it twice changes nothing
//! more than running it once (Dapr runs activities at least once).

pub mod activities;

use chrono::{DateTime, Utc};
use contracts::{CancellationReason, DeclineReason};
use dapr::workflow::{
    ActivityOptions, RetryPolicy, WorkflowContext, WorkflowContextExt as _, WorkflowError,
};
use dapr_durabletask::api::ExternalEventResult;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Items, OrderId, OrderStatus};

pub use activities::Activities;

/// The workflow's registered name.
pub const NAME: &str = "OrderWorkflow";
/// The external event that settles an order: a payment outcome or a cancellation.
pub const DECISION_EVENT: &str = "decision";

/// Activity names.
pub mod activity {
    /// Reserves the stock and stores the order's view.
    pub const RESERVE_STOCK: &str = "reserve_stock";
    /// Publishes an `ORDER_*` event.
    pub const PUBLISH: &str = "publish_order_event";
    /// Marks the reserved stock as sold.
    pub const COMMIT_STOCK: &str = "commit_stock";
    /// Gives the reserved stock back.
    pub const RELEASE_STOCK: &str = "release_stock";
    /// Confirms or cancels the order's view.
    pub const CLOSE_ORDER: &str = "close_order";
}

/// The workflow's input: the order as placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The order (and workflow instance).
    pub order_id: OrderId,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email.
    pub user_email: String,
    /// What was asked for.
    pub items: Items,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When the order stops waiting for its payment (fixed at placement, so that replays agree).
    pub payment_due_at: DateTime<Utc>,
}

/// What settles a pending order: the payload of [`DECISION_EVENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The payment went through.
    Paid {
        /// The payment.
        payment_id: Uuid,
    },
    /// The payment was refused.
    PaymentFailed {
        /// The payment.
        payment_id: Uuid,
        /// Why.
        reason: DeclineReason,
    },
    /// The customer (or an admin) cancelled.
    CancelRequested,
}

/// What [`activity::RESERVE_STOCK`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opened {
    /// Stock reserved; the order waits for its payment.
    PendingPayment,
    /// The stock could not be reserved; the order is rejected.
    Rejected,
    /// The order was settled by an earlier run of this instance (the instance was started
    /// again): nothing is left to do.
    AlreadySettled,
}

/// Which `ORDER_*` event [`activity::PUBLISH`] sends (built from the order's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Announcement {
    /// `ORDER_CREATED`.
    Created,
    /// `ORDER_CONFIRMED`.
    Confirmed,
    /// `ORDER_CANCELLED`.
    Cancelled,
}

/// Input of [`activity::PUBLISH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The order.
    pub order_id: OrderId,
    /// The event.
    pub event: Announcement,
}

/// How [`activity::CLOSE_ORDER`] settles the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Closing {
    /// Paid: `CONFIRMED`.
    Confirmed {
        /// The payment.
        payment_id: Uuid,
    },
    /// `CANCELLED`, and why.
    Cancelled {
        /// Why.
        reason: CancellationReason,
    },
}

/// Input of [`activity::CLOSE_ORDER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    /// The order.
    pub order_id: OrderId,
    /// How.
    pub closing: Closing,
}

/// The workflow's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// The order's final status.
    pub status: OrderStatus,
    /// Why it was cancelled, if it was.
    pub reason: Option<CancellationReason>,
}

fn settled(
    status: OrderStatus,
    reason: Option<CancellationReason>,
) -> dapr::workflow::Result<Option<String>> {
    Ok(Some(serde_json::to_string(&Settled { status, reason })?))
}

/// Runs one activity with the retry policy and reads its JSON output.
async fn run<T, I>(
    ctx: &WorkflowContext,
    name: &str,
    input: I,
    retry: &RetryPolicy,
) -> dapr::workflow::Result<T>
where
    T: DeserializeOwned + Send + 'static,
    I: Serialize,
{
    ctx.call_activity_with_options_typed(
        name,
        ActivityOptions::new()
            .try_with_input(input)?
            .with_retry_policy(retry.clone()),
    )
    .await
}

/// `OrderWorkflow`.
pub async fn order_workflow(
    ctx: WorkflowContext,
    retry: RetryPolicy,
) -> dapr::workflow::Result<Option<String>> {
    let order: PlaceOrder = ctx.get_input_typed()?;
    let id = order.order_id;
    let opened: Opened = run(&ctx, activity::RESERVE_STOCK, &order, &retry).await?;
    match opened {
        Opened::PendingPayment => {}
        Opened::Rejected => return settled(OrderStatus::Rejected, None),
        Opened::AlreadySettled => return Ok(None),
    }
    let created = Announce {
        order_id: id,
        event: Announcement::Created,
    };
    run::<(), _>(&ctx, activity::PUBLISH, created, &retry).await?;

    let (closing, announcement) = match wait_for_decision(&ctx, order.payment_due_at).await? {
        Some(Decision::Paid { payment_id }) => {
            run::<(), _>(&ctx, activity::COMMIT_STOCK, id, &retry).await?;
            (Closing::Confirmed { payment_id }, Announcement::Confirmed)
        }
        other => {
            let reason = match other {
                Some(Decision::PaymentFailed { .. }) => CancellationReason::PaymentFailed,
                Some(Decision::CancelRequested) => CancellationReason::CancelledByCustomer,
                _ => CancellationReason::PaymentTimeout,
            };
            run::<(), _>(&ctx, activity::RELEASE_STOCK, id, &retry).await?;
            (Closing::Cancelled { reason }, Announcement::Cancelled)
        }
    };
    let close = Close {
        order_id: id,
        closing,
    };
    run::<(), _>(&ctx, activity::CLOSE_ORDER, close, &retry).await?;
    let announce = Announce {
        order_id: id,
        event: announcement,
    };
    run::<(), _>(&ctx, activity::PUBLISH, announce, &retry).await?;
    match closing {
        Closing::Confirmed { .. } => settled(OrderStatus::Confirmed, None),
        Closing::Cancelled { reason } => settled(OrderStatus::Cancelled, Some(reason)),
    }
}

/// The first valid decision before `due`, or `None` when the deadline passes. A payload that is
/// not a decision is ignored (the wait goes on until the same deadline).
async fn wait_for_decision(
    ctx: &WorkflowContext,
    due: DateTime<Utc>,
) -> dapr::workflow::Result<Option<Decision>> {
    loop {
        // The workflow's clock comes from its history, so replays compute the same wait.
        let Ok(left) = (due - ctx.current_utc_datetime()).to_std() else {
            return Ok(None);
        };
        if left.is_zero() {
            return Ok(None);
        }
        match ctx
            .wait_for_external_event_with_timeout(DECISION_EVENT, left)
            .await?
        {
            ExternalEventResult::TimedOut => return Ok(None),
            ExternalEventResult::Received(payload) => {
                match serde_json::from_str::<Decision>(payload.as_deref().unwrap_or("null")) {
                    Ok(decision) => return Ok(Some(decision)),
                    Err(error) if !ctx.is_replaying() => {
                        tracing::warn!(instance_id = %ctx.instance_id(), %error, "ignoring a decision event that is not one");
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Registers the workflow and its activities.
pub fn register(
    registry: &mut dapr::workflow::Registry,
    activities: Activities,
    retry: RetryPolicy,
) {
    use dapr::workflow::RegistryExt as _;
    registry.add_workflow(NAME, move |ctx| order_workflow(ctx, retry.clone()));
    activities.register(registry);
}

/// An activity's failure, as the SDK reports it (and retries it).
pub(crate) fn failure(error: impl std::fmt::Display) -> WorkflowError {
    WorkflowError::Other(error.to_string())
}

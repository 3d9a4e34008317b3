//! Where the sidecar delivers payment events: each becomes the decision event of the order's
//! workflow. Deliveries are at least once; a repeat is harmless, because the workflow acts on
//! the first decision only and an order already settled is not asked again.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use contracts::{Event, PaymentFailed, PaymentSuccessful};
use kit::events::{Received, Reply};
use uuid::Uuid;

use crate::domain::{OrderId, OrderStatus};
use crate::events::paths;
use crate::startup::AppState;
use crate::workflow::Decision;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(paths::PAYMENT_SUCCESSFUL, post(payment_successful))
        .route(paths::PAYMENT_FAILED, post(payment_failed))
}

/// What the handlers need to know of a payment event.
struct Payment {
    order_id: Uuid,
    user_id: Uuid,
    amount_cents: i64,
    currency: String,
}

async fn payment_successful(
    State(state): State<AppState>,
    event: Received<PaymentSuccessful>,
) -> Reply {
    let data = event.data;
    let payment = Payment {
        order_id: data.order_id,
        user_id: data.user_id,
        amount_cents: data.amount_cents,
        currency: data.currency,
    };
    decide::<PaymentSuccessful>(
        &state,
        &event.id,
        payment,
        Decision::Paid {
            payment_id: data.payment_id,
        },
    )
    .await
}

async fn payment_failed(State(state): State<AppState>, event: Received<PaymentFailed>) -> Reply {
    let data = event.data;
    let payment = Payment {
        order_id: data.order_id,
        user_id: data.user_id,
        amount_cents: data.amount_cents,
        currency: data.currency,
    };
    decide::<PaymentFailed>(
        &state,
        &event.id,
        payment,
        Decision::PaymentFailed {
            payment_id: data.payment_id,
            reason: data.reason,
        },
    )
    .await
}

/// Raises `decision` on the order's workflow, if the payment is for that order as it stands.
async fn decide<E: Event>(
    state: &AppState,
    event_id: &str,
    payment: Payment,
    decision: Decision,
) -> Reply {
    let id = OrderId::from(payment.order_id);
    let order = match state.orders.get(id).await {
        Ok(Some(order)) => order.value,
        Ok(None) => {
            tracing::warn!(event = E::NAME, %event_id, order_id = %id, "payment for an unknown order; dropping it");
            return Reply::Drop;
        }
        Err(error) => {
            tracing::warn!(event = E::NAME, %event_id, %error, "cannot read the order; will retry");
            return Reply::Retry;
        }
    };
    if order.status != OrderStatus::PendingPayment {
        // Settled already (this is a redelivery, or the order timed out or was cancelled
        // first): nothing to decide. A payment taken for a cancelled order is refunded by the
        // payments app on ORDER_CANCELLED.
        tracing::info!(event = E::NAME, %event_id, order_id = %id, status = ?order.status, "order already settled; ignoring the payment event");
        return Reply::Success;
    }
    if order.user_id != payment.user_id
        || order.total_cents != payment.amount_cents
        || order.currency.as_deref() != Some(payment.currency.as_str())
    {
        tracing::warn!(event = E::NAME, %event_id, order_id = %id, "the payment does not match the order (customer or amount); dropping it");
        return Reply::Drop;
    }
    match state.workflows.decide(id, decision).await {
        Ok(true) => {
            tracing::info!(event = E::NAME, %event_id, order_id = %id, "decision raised");
            Reply::Success
        }
        Ok(false) => {
            tracing::warn!(event = E::NAME, %event_id, order_id = %id, "the order has no workflow; dropping the event");
            Reply::Drop
        }
        Err(error) => {
            tracing::warn!(event = E::NAME, %event_id, %error, "raising the decision failed; will retry");
            Reply::Retry
        }
    }
}

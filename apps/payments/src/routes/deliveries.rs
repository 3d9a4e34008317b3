//! Where the sidecar delivers `ORDER_CANCELLED`: a succeeded charge for the order is refunded
//! (with an idempotency key per payment, so a redelivery never refunds twice).

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use contracts::OrderCancelled;
use kit::events::{Received, Reply};

use chrono::Utc;

use crate::domain::PaymentStatus;
use crate::events::paths;
use crate::startup::AppState;

/// How long a payment may wait for the provider's answer before a cancellation stops waiting.
const PROCESSING_GRACE_MINUTES: i64 = 10;

pub(super) fn router() -> Router<AppState> {
    Router::new().route(paths::ORDER_CANCELLED, post(order_cancelled))
}

async fn order_cancelled(State(state): State<AppState>, event: Received<OrderCancelled>) -> Reply {
    let order = event.data.order_id;
    let payment = match state.payments.get(order).await {
        Ok(Some(payment)) => payment.value,
        Ok(None) => return Reply::Success,
        Err(error) => {
            tracing::warn!(%error, %order, "cannot read the payment; will retry");
            return Reply::Retry;
        }
    };
    match payment.status {
        PaymentStatus::Failed | PaymentStatus::Refunded => Reply::Success,
        // The charge may still succeed: look again later. A charge that never got an answer
        // (the provider was down and the customer did not pay again) cannot be settled here
        // without the card: after a while it goes to the dead letters for reconciliation.
        PaymentStatus::Processing
            if Utc::now() - payment.updated_at
                > chrono::Duration::minutes(PROCESSING_GRACE_MINUTES) =>
        {
            tracing::error!(%order, payment_id = %payment.id, "a payment of a cancelled order never got the provider's answer; reconcile it by hand");
            Reply::Drop
        }
        PaymentStatus::Processing => Reply::Retry,
        PaymentStatus::Succeeded => {
            let Some(provider) = state.provider.get() else {
                return Reply::Retry;
            };
            let Some(charge) = payment.charge_id.as_deref() else {
                tracing::error!(%order, "a succeeded payment without a charge id");
                return Reply::Drop;
            };
            if let Err(error) = provider
                .refund(&format!("refund-{}", payment.id), charge)
                .await
            {
                tracing::warn!(%error, %order, "refund failed; will retry");
                return Reply::Retry;
            }
            match state.payments.refunded(order).await {
                Ok(()) => {
                    tracing::info!(%order, payment_id = %payment.id, "refunded the charge of a cancelled order");
                    Reply::Success
                }
                Err(error) => {
                    tracing::warn!(%error, %order, "cannot record the refund; will retry");
                    Reply::Retry
                }
            }
        }
    }
}

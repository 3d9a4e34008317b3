//! Where the sidecar delivers events: one route per event type (`GET /dapr/subscribe` lists
//! them, see [`crate::events::subscriptions`]).

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use contracts::{
    OrderCancelled, OrderConfirmed, OrderCreated, PaymentFailed, PaymentSuccessful, UserRegistered,
};
use kit::events::{Received, Reply};

use crate::error::HandleError;
use crate::events::{Notify, paths};
use crate::startup::AppState;
use crate::store::Outcome;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(paths::USER_REGISTERED, post(deliver::<UserRegistered>))
        .route(paths::ORDER_CREATED, post(deliver::<OrderCreated>))
        .route(paths::ORDER_CONFIRMED, post(deliver::<OrderConfirmed>))
        .route(paths::ORDER_CANCELLED, post(deliver::<OrderCancelled>))
        .route(
            paths::PAYMENT_SUCCESSFUL,
            post(deliver::<PaymentSuccessful>),
        )
        .route(paths::PAYMENT_FAILED, post(deliver::<PaymentFailed>))
}

/// Notifies the user of one event; anything that failed is delivered again.
async fn deliver<E: Notify>(State(state): State<AppState>, event: Received<E>) -> Reply {
    match state
        .notifications
        .handle(&event.source, &event.id, &event.data)
        .await
    {
        Ok(Outcome::Notified(_)) => Reply::Success,
        Ok(Outcome::Duplicate) => {
            tracing::info!(event = E::NAME, id = %event.id, "already notified; dropping the redelivery");
            Reply::Success
        }
        Err(error @ HandleError::Sending) => {
            tracing::info!(event = E::NAME, id = %event.id, %error, "will check again later");
            Reply::Retry
        }
        Err(error) => {
            tracing::warn!(event = E::NAME, id = %event.id, %error, "notifying failed; will retry");
            Reply::Retry
        }
    }
}

//! What the payments app needs to charge an order: its owner, status and amount, read through
//! service invocation. Only the app ids in `orders.payment_callers` may read it (the sidecar
//! sets the caller's app id); the gateway routes nothing here.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kit::extract::headers::CALLER_APP_ID;
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{OrderId, OrderStatus};
use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/payable-orders/{id}", get(get_one))
}

/// An order as the payments app sees it.
#[derive(Debug, Serialize)]
struct PayableView {
    id: Uuid,
    user_id: Uuid,
    user_email: String,
    status: OrderStatus,
    total_cents: i64,
    currency: Option<String>,
    payment_due_at: DateTime<Utc>,
}

fn check_caller(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let caller = headers
        .get(CALLER_APP_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if state
        .settings
        .payment_callers
        .iter()
        .any(|allowed| allowed == caller)
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "payable orders are for the payments app",
        ))
    }
}

async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<PayableView>, ApiError> {
    check_caller(&state, &headers)?;
    let id = OrderId::parse(&id).ok_or(ApiError::NotFound)?;
    let order = state.orders.get(id).await?.ok_or(ApiError::NotFound)?.value;
    Ok(Json(PayableView {
        id: order.id.as_uuid(),
        user_id: order.user_id,
        user_email: order.user_email,
        status: order.status,
        total_cents: order.total_cents,
        currency: order.currency,
        payment_due_at: order.payment_due_at,
    }))
}

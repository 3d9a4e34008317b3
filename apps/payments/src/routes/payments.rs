//! Paying an order: its owner only, while it waits for payment; the amount comes from the
//! order, never from the client. One payment per order: paying again returns it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kit::extract::AuthUser;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Card, PaymentStatus, StoredPayment};
use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/payments", post(pay))
}

/// A payment as customers ask for it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PayRequest {
    order_id: Uuid,
    card: CardRequest,
}

/// A card (never stored: only its last four digits are kept).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CardRequest {
    number: String,
    exp_month: i64,
    exp_year: i64,
    cvc: String,
}

impl std::fmt::Debug for CardRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardRequest { .. }")
    }
}

/// A payment as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PaymentView {
    id: Uuid,
    order_id: Uuid,
    /// `PROCESSING`, `SUCCEEDED`, `FAILED` or `REFUNDED`.
    #[schema(value_type = String)]
    status: PaymentStatus,
    amount_cents: i64,
    currency: String,
    card_last4: String,
    /// Why the provider refused: `card_declined`, `insufficient_funds`, `expired_card`,
    /// `processing_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    failure_reason: Option<contracts::DeclineReason>,
    created_at: DateTime<Utc>,
}

impl From<&StoredPayment> for PaymentView {
    fn from(payment: &StoredPayment) -> Self {
        Self {
            id: payment.id,
            order_id: payment.order_id,
            status: payment.status,
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            card_last4: payment.card_last4.clone(),
            failure_reason: payment.failure,
            created_at: payment.created_at,
        }
    }
}

/// An order as the orders app shows it to the payments app.
#[derive(Debug, Deserialize)]
struct Payable {
    user_id: Uuid,
    user_email: String,
    status: String,
    total_cents: i64,
    currency: Option<String>,
}

/// Reads what `order` costs and who owns it from the orders app.
#[tracing::instrument(skip(state))]
async fn payable(state: &AppState, order: Uuid) -> Result<Option<Payable>, ApiError> {
    let response = state
        .dapr
        .invoke(
            Method::GET,
            &state.settings.orders_app_id,
            &format!("/payable-orders/{order}"),
        )
        .timeout(std::time::Duration::from_secs(
            state.settings.orders_timeout_seconds,
        ))
        .send()
        .await
        .map_err(|e| ApiError::Orders(e.to_string()))?;
    match response.status() {
        StatusCode::NOT_FOUND => Ok(None),
        status if status.is_success() => response
            .json()
            .await
            .map(Some)
            .map_err(|e| ApiError::Orders(e.to_string())),
        status => Err(ApiError::Orders(format!("answered {status}"))),
    }
}

/// Pays an order by card: 201 with the outcome (`SUCCEEDED` or `FAILED` with the reason);
/// paying an order again returns its payment (200).
#[utoipa::path(
    post,
    path = "/payments",
    request_body = PayRequest,
    responses(
        (status = 201, body = PaymentView, description = "Charged, or declined with the reason"),
        (status = 200, body = PaymentView, description = "The order's payment, made before"),
        (status = 404, description = "No such order of yours"),
        (status = 409, description = "The order does not wait for a payment"),
        (status = 422, description = "A field is not valid"),
        (status = 502, description = "The provider did not answer; paying again is safe"),
    )
)]
pub(super) async fn pay(
    State(state): State<AppState>,
    user: AuthUser,
    kit::extract::Json(request): kit::extract::Json<PayRequest>,
) -> Result<(StatusCode, Json<PaymentView>), ApiError> {
    let card = Card::parse(
        &request.card.number,
        request.card.exp_month,
        request.card.exp_year,
        &request.card.cvc,
    )
    .map_err(|e| ApiError::Invalid {
        field: e.field.into(),
        message: e.message,
    })?;
    let order_id = request.order_id;
    let provider = state.provider.get().cloned().ok_or(ApiError::NotReady)?;
    let existing = state.payments.get(order_id).await?.map(|p| p.value);
    let payment = match existing {
        Some(payment) if payment.user_id != user.id => return Err(ApiError::NotFound),
        Some(payment) if payment.status != PaymentStatus::Processing => {
            return Ok((StatusCode::OK, Json(PaymentView::from(&payment))));
        }
        // A payment whose charge got no answer: charge again with the same idempotency key.
        Some(payment) => payment,
        None => {
            let order = payable(&state, order_id)
                .await?
                .filter(|order| order.user_id == user.id)
                .ok_or(ApiError::NotFound)?;
            if order.status != "PENDING_PAYMENT" {
                return Err(ApiError::NotPayable(order.status));
            }
            let now = Utc::now();
            state
                .payments
                .create(&StoredPayment {
                    id: Uuid::now_v7(),
                    order_id,
                    user_id: user.id,
                    user_email: order.user_email,
                    amount_cents: order.total_cents,
                    currency: order.currency.unwrap_or_default(),
                    card_last4: card.last4().to_owned(),
                    status: PaymentStatus::Processing,
                    charge_id: None,
                    failure: None,
                    created_at: now,
                    updated_at: now,
                })
                .await?
        }
    };
    if payment.status != PaymentStatus::Processing {
        return Ok((StatusCode::OK, Json(PaymentView::from(&payment))));
    }
    let outcome = provider
        .charge(
            payment.id,
            order_id,
            payment.amount_cents,
            &payment.currency,
            &card,
        )
        .await?;
    let settled = state.payments.settle(order_id, &outcome).await?;
    tracing::info!(%order_id, payment_id = %settled.id, status = ?settled.status, card_last4 = %settled.card_last4, "payment settled");
    Ok((StatusCode::CREATED, Json(PaymentView::from(&settled))))
}

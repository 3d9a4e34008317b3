//! `POST /v1/refunds`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Authenticated, IdempotencyKey, Started};
use crate::domain::{Amount, ChargeId, Refund, RefundError};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::RefundFailure;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/refunds", post(create))
}

/// A refund as clients ask for it: the whole charge when `amount_cents` is absent.
#[derive(Debug, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefundInput {
    charge_id: String,
    #[serde(default)]
    amount_cents: Option<i64>,
}

/// A refund as the API shows it.
#[derive(Debug, Serialize)]
struct RefundView {
    id: String,
    charge_id: String,
    status: &'static str,
    amount_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
}

impl From<&Refund> for RefundView {
    fn from(refund: &Refund) -> Self {
        Self {
            id: refund.id.as_str().to_owned(),
            charge_id: refund.charge_id.as_str().to_owned(),
            status: "succeeded",
            amount_cents: refund.amount.cents(),
            currency: refund.currency.as_str().to_owned(),
            created_at: refund.created_at,
        }
    }
}

/// Refunds (part of) a successful charge.
pub(super) async fn create(
    State(state): State<AppState>,
    _: Authenticated,
    IdempotencyKey(key): IdempotencyKey,
    kit::extract::Json(input): kit::extract::Json<RefundInput>,
) -> Result<Response, ApiError> {
    let fingerprint = state.ledger.fingerprint("refunds", &input);
    let charge_id = ChargeId::parse(&input.charge_id).map_err(ApiError::invalid("charge_id"))?;
    let amount = input
        .amount_cents
        .map(|cents| Amount::new(cents).map_err(ApiError::invalid("amount_cents")))
        .transpose()?;
    let claim = match super::start(&state, &key, fingerprint).await? {
        Started::Replay(response) => return Ok(response),
        Started::Fresh(claim) => claim,
    };
    let (refund, _) = state
        .ledger
        .refund(&charge_id, amount, Utc::now())
        .map_err(|failure| match failure {
            RefundFailure::UnknownCharge => ApiError::ChargeNotFound {
                field: Some("charge_id"),
            },
            RefundFailure::Refused(RefundError::NotSucceeded) => ApiError::NotRefundable,
            RefundFailure::Refused(RefundError::TooMuch { remaining }) => {
                ApiError::RefundTooLarge { remaining }
            }
        })?;
    tracing::info!(
        refund_id = refund.id.as_str(),
        charge_id = refund.charge_id.as_str(),
        amount_cents = refund.amount.cents(),
        "refund"
    );
    super::answer(claim, StatusCode::CREATED, &RefundView::from(&refund))
}

//! `POST /v1/charges` and `GET /v1/charges/{id}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Authenticated, IdempotencyKey, Started};
use crate::domain::{
    Amount, Card, CardNumber, Charge, ChargeId, ChargeRequest, ChargeStatus, Currency, Cvc, Expiry,
    ExpiryError,
};
use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/charges", post(create))
        .route("/v1/charges/{id}", get(get_one))
}

/// A card as clients send it.
#[derive(Debug, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CardInput {
    number: String,
    exp_month: i64,
    exp_year: i64,
    cvc: String,
}

/// A charge as clients ask for it.
#[derive(Debug, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChargeInput {
    amount_cents: i64,
    currency: String,
    card: CardInput,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// A charge as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ChargeView {
    id: String,
    status: ChargeStatus,
    amount_cents: i64,
    currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<crate::domain::FailureCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_message: Option<&'static str>,
    card_last4: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    amount_refunded_cents: i64,
    refunded: bool,
    created_at: DateTime<Utc>,
}

impl From<&Charge> for ChargeView {
    fn from(charge: &Charge) -> Self {
        Self {
            id: charge.id.as_str().to_owned(),
            status: charge.status,
            amount_cents: charge.amount.cents(),
            currency: charge.currency.as_str().to_owned(),
            failure_code: charge.failure,
            failure_message: charge.failure.map(|code| code.message()),
            card_last4: charge.card_last4.clone(),
            description: charge.description.clone(),
            metadata: charge.metadata.clone(),
            amount_refunded_cents: charge.amount_refunded,
            refunded: charge.status == ChargeStatus::Succeeded
                && charge.amount_refunded == charge.amount.cents(),
            created_at: charge.created_at,
        }
    }
}

/// Longest description accepted.
const MAX_DESCRIPTION: usize = 500;
/// Most metadata keys accepted, and the longest key and value.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;

fn validate(input: ChargeInput) -> Result<ChargeRequest, ApiError> {
    let amount = Amount::new(input.amount_cents).map_err(ApiError::invalid("amount_cents"))?;
    let currency = Currency::parse(&input.currency).map_err(ApiError::invalid("currency"))?;
    let number = CardNumber::parse(&input.card.number).map_err(ApiError::invalid("card.number"))?;
    let expiry = Expiry::new(input.card.exp_month, input.card.exp_year).map_err(|e| match e {
        ExpiryError::Month(message) => ApiError::invalid("card.exp_month")(message),
        ExpiryError::Year(message) => ApiError::invalid("card.exp_year")(message),
    })?;
    let cvc = Cvc::parse(&input.card.cvc).map_err(ApiError::invalid("card.cvc"))?;
    if let Some(description) = &input.description
        && description.chars().count() > MAX_DESCRIPTION
    {
        return Err(ApiError::invalid("description")(format!(
            "must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    let metadata = input.metadata.unwrap_or_default();
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ApiError::invalid("metadata")(format!(
            "must have at most {MAX_METADATA_KEYS} keys"
        )));
    }
    for (key, value) in &metadata {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY {
            return Err(ApiError::invalid(format!("metadata.{key}"))(format!(
                "keys must be 1 to {MAX_METADATA_KEY} characters"
            )));
        }
        if value.chars().count() > MAX_METADATA_VALUE {
            return Err(ApiError::invalid(format!("metadata.{key}"))(format!(
                "must be at most {MAX_METADATA_VALUE} characters"
            )));
        }
    }
    Ok(ChargeRequest {
        amount,
        currency,
        card: Card {
            number,
            expiry,
            cvc,
        },
        description: input.description,
        metadata,
    })
}

/// Charges a card. A declined card is still a charge (201, `status: failed`, with
/// `failure_code`); only invalid requests and provider errors are problem documents.
pub(super) async fn create(
    State(state): State<AppState>,
    _: Authenticated,
    IdempotencyKey(key): IdempotencyKey,
    kit::extract::Json(input): kit::extract::Json<ChargeInput>,
) -> Result<Response, ApiError> {
    let fingerprint = state.ledger.fingerprint("charges", &input);
    let request = validate(input)?;
    let claim = match super::start(&state, &key, fingerprint).await? {
        Started::Replay(response) => return Ok(response),
        Started::Fresh(claim) => claim,
    };
    let charge = Charge::decide(request, Utc::now());
    tracing::info!(
        charge_id = charge.id.as_str(),
        status = ?charge.status,
        failure_code = ?charge.failure,
        card_last4 = %charge.card_last4,
        amount_cents = charge.amount.cents(),
        "charge"
    );
    let view = ChargeView::from(&charge);
    state.ledger.insert(charge);
    super::answer(claim, StatusCode::CREATED, &view)
}

/// One charge as it is now (with what was refunded since).
pub(super) async fn get_one(
    State(state): State<AppState>,
    _: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ChargeView>, ApiError> {
    state.conditions.delay().await;
    let not_found = ApiError::ChargeNotFound { field: Some("id") };
    let id = ChargeId::parse(&id).map_err(|_| not_found)?;
    let charge = state
        .ledger
        .charge(&id)
        .ok_or(ApiError::ChargeNotFound { field: Some("id") })?;
    Ok(Json(ChargeView::from(&charge)))
}

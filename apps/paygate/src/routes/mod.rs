//! The provider's API: `/v1/charges` and `/v1/refunds`, every call with the API key.

mod charges;
mod refunds;

use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;

use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::{Claim, KeyClaim, StoredAnswer};

/// Every route of the app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(charges::router())
        .merge(refunds::router())
        .with_state(state)
}

/// A caller that sent the API key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authenticated;

/// Compares without stopping at the first difference, so that timing does not reveal the key.
fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if same(given.as_bytes(), state.api_key.expose_secret().as_bytes()) {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// The `Idempotency-Key` header: required on every POST.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey(pub(crate) String);

/// Longest idempotency key accepted.
const MAX_KEY: usize = 255;

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |message: &str| ApiError::Header {
            header: "Idempotency-Key",
            message: message.to_owned(),
        };
        let value = parts
            .headers
            .get("idempotency-key")
            .ok_or_else(|| invalid("is required: a unique value per request, reused on retries"))?
            .to_str()
            .map_err(|_| invalid("must be visible ASCII"))?
            .trim();
        if value.is_empty() || value.len() > MAX_KEY {
            return Err(invalid(&format!("must be 1 to {MAX_KEY} characters")));
        }
        Ok(Self(value.to_owned()))
    }
}

/// A request to run, or an answer to send again.
pub(crate) enum Started {
    /// Run it, then store the answer in the claim.
    Fresh(KeyClaim),
    /// Send this again.
    Replay(Response),
}

/// Claims `key` for a request with `fingerprint`; a new request then takes the provider's
/// latency and may meet a simulated outage (which releases the key).
pub(crate) async fn start(
    state: &AppState,
    key: &str,
    fingerprint: u64,
) -> Result<Started, ApiError> {
    let claim = match state.ledger.claim(key, fingerprint) {
        Claim::Fresh(claim) => claim,
        Claim::Replay(answer) => return Ok(Started::Replay(replayed(answer))),
        Claim::Mismatch => return Err(ApiError::KeyReused),
        Claim::InUse => return Err(ApiError::KeyInUse),
    };
    state.conditions.delay().await;
    if state.conditions.fails() {
        tracing::info!("simulated processing error");
        return Err(ApiError::ProcessingError);
    }
    Ok(Started::Fresh(claim))
}

/// Stores `body` as the answer to the claimed key and returns it.
pub(crate) fn answer(
    claim: KeyClaim,
    status: StatusCode,
    body: &impl serde::Serialize,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    let answer = StoredAnswer { status, body };
    claim.answer(answer.clone());
    Ok(json(answer))
}

fn json(answer: StoredAnswer) -> Response {
    (
        answer.status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.body,
    )
        .into_response()
}

/// A stored answer, marked as a replay as providers do.
fn replayed(answer: StoredAnswer) -> Response {
    let mut response = json(answer);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

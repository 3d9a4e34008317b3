//! The payment provider's HTTP API (`POST /v1/charges`, `POST /v1/refunds`), outside the mesh:
//! called with reqwest, an API key, timeouts, and retries only where the provider's
//! `Idempotency-Key` makes a retry safe (the same key never charges twice).

use std::time::Duration;

use contracts::DeclineReason;
use reqwest::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::Card;

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or kept failing; trying again later is safe.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request itself (not the card): retrying will not help.
    #[error("the payment provider refused the request: {0}")]
    Refused(String),
}

/// What a charge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged.
    Succeeded {
        /// The provider's charge id.
        charge_id: String,
    },
    /// Declined.
    Failed {
        /// Why.
        reason: DeclineReason,
    },
}

#[derive(Debug, Deserialize)]
struct ChargeAnswer {
    id: String,
    status: String,
    #[serde(default)]
    failure_code: Option<String>,
}

/// The provider's client.
#[derive(Clone)]
pub struct Provider {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    attempts: u32,
    retry: Duration,
}

impl Provider {
    /// A client for the provider at `base` with API key `key`.
    pub fn new(
        base: &str,
        key: SecretString,
        timeout: Duration,
        attempts: u32,
        retry: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(timeout)
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            key,
            attempts: attempts.max(1),
            retry,
        })
    }

    /// POSTs `body` to `path` with `idempotency_key`, retrying what is safe to retry: no
    /// answer, a timeout, 409 (the same key still in flight), 429 and 5xx.
    async fn post(
        &self,
        path: &str,
        idempotency_key: &str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, bytes::Bytes), ProviderError> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.retry * 2u32.saturating_pow(attempt - 1)).await;
            }
            let sent = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(self.key.expose_secret())
                .header("idempotency-key", idempotency_key)
                .json(body)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status();
                    let text = response
                        .bytes()
                        .await
                        .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
                    if status.is_success() {
                        return Ok((status, text));
                    }
                    if status == StatusCode::CONFLICT
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error()
                    {
                        last = format!("{status}");
                        continue;
                    }
                    return Err(ProviderError::Refused(format!(
                        "{status} {}",
                        String::from_utf8_lossy(&text)
                    )));
                }
                Err(error) => last = error.to_string(),
            }
        }
        Err(ProviderError::Unavailable(last))
    }

    /// Charges `card`; `payment` is the idempotency key.
    #[tracing::instrument(skip(self, card), fields(card_last4 = card.last4()))]
    pub async fn charge(
        &self,
        payment: Uuid,
        order: Uuid,
        amount_cents: i64,
        currency: &str,
        card: &Card,
    ) -> Result<ChargeOutcome, ProviderError> {
        let body = serde_json::json!({
            "amount_cents": amount_cents,
            "currency": currency,
            "card": card.to_provider_json(),
            "description": format!("Order {order}"),
            "metadata": {"order_id": order.to_string(), "payment_id": payment.to_string()},
        });
        let (_, text) = self
            .post("/v1/charges", &payment.to_string(), &body)
            .await?;
        let answer: ChargeAnswer = serde_json::from_slice(&text)
            .map_err(|e| ProviderError::Refused(format!("unexpected answer: {e}")))?;
        match answer.status.as_str() {
            "succeeded" => Ok(ChargeOutcome::Succeeded {
                charge_id: answer.id,
            }),
            "failed" => Ok(ChargeOutcome::Failed {
                reason: match answer.failure_code.as_deref() {
                    Some("card_declined") => DeclineReason::CardDeclined,
                    Some("insufficient_funds") => DeclineReason::InsufficientFunds,
                    Some("expired_card") => DeclineReason::ExpiredCard,
                    _ => DeclineReason::ProcessingError,
                },
            }),
            other => Err(ProviderError::Refused(format!(
                "unknown charge status {other}"
            ))),
        }
    }

    /// Refunds the whole charge; `key` is the idempotency key.
    #[tracing::instrument(skip(self))]
    pub async fn refund(&self, key: &str, charge_id: &str) -> Result<(), ProviderError> {
        self.post(
            "/v1/refunds",
            key,
            &serde_json::json!({"charge_id": charge_id}),
        )
        .await
        .map(|_| ())
    }
}

//! A payment as stored (`payment:<order id>`: one per order, which makes paying idempotent per
//! order).

use chrono::{DateTime, Utc};
use contracts::DeclineReason;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// The provider has not answered yet (a retry of the request charges with the same
    /// idempotency key, so it cannot charge twice).
    Processing,
    /// Charged.
    Succeeded,
    /// Refused by the provider.
    Failed,
    /// Charged, then refunded because the order was cancelled meanwhile.
    Refunded,
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPayment {
    /// Id (also the provider's idempotency key for the charge).
    pub id: Uuid,
    /// The order paid for.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email, for the events.
    pub user_email: String,
    /// Amount, in cents, taken from the order.
    pub amount_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The card's last four digits.
    pub card_last4: String,
    /// Status.
    pub status: PaymentStatus,
    /// The provider's charge id, once charged.
    pub charge_id: Option<String>,
    /// Why the provider refused.
    pub failure: Option<DeclineReason>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

//! Charges and refunds, and how a charge's outcome is decided.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::card::{Card, TestBehaviour};
use super::money::{Amount, Currency};

/// A charge id, `ch_` and 24 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChargeId(String);

impl ChargeId {
    /// A new id.
    pub fn generate() -> Self {
        Self(format!(
            "ch_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..24]
        ))
    }

    /// Parses an id given by a client.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text
            .strip_prefix("ch_")
            .ok_or_else(|| "is not a charge id (ch_...)".to_owned())?;
        if hex.len() == 24 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err("is not a charge id (ch_...)".into())
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A refund id, `re_` and 24 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RefundId(String);

impl RefundId {
    /// A new id.
    pub fn generate() -> Self {
        Self(format!(
            "re_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..24]
        ))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether the money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// The card was charged.
    Succeeded,
    /// The card was not charged; `failure_code` says why.
    Failed,
}

/// Why a charge failed (the codes card processors use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The issuer declined the card.
    CardDeclined,
    /// Not enough funds.
    InsufficientFunds,
    /// The card has expired.
    ExpiredCard,
    /// The provider could not process the card.
    ProcessingError,
}

impl FailureCode {
    /// The message shown to the customer.
    pub fn message(self) -> &'static str {
        match self {
            Self::CardDeclined => "Your card was declined.",
            Self::InsufficientFunds => "Your card has insufficient funds.",
            Self::ExpiredCard => "Your card has expired.",
            Self::ProcessingError => {
                "An error occurred while processing your card. Try again in a little bit."
            }
        }
    }
}

/// A refund of (part of) a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// Its id.
    pub id: RefundId,
    /// The charge refunded.
    pub charge_id: ChargeId,
    /// How much.
    pub amount: Amount,
    /// In the charge's currency.
    pub currency: Currency,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A charge attempt and its outcome. Only the card's last four digits are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Its id.
    pub id: ChargeId,
    /// Succeeded or failed.
    pub status: ChargeStatus,
    /// Amount asked for.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Why it failed.
    pub failure: Option<FailureCode>,
    /// The card's last four digits.
    pub card_last4: String,
    /// The client's description.
    pub description: Option<String>,
    /// The client's key-value pairs.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Refunded so far, in cents.
    pub amount_refunded: i64,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A charge request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Amount.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Card.
    pub card: Card,
    /// Description.
    pub description: Option<String>,
    /// Metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Why a refund is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    /// The charge did not take any money.
    #[error("the charge did not succeed; there is nothing to refund")]
    NotSucceeded,
    /// More than what is left of the charge.
    #[error("only {remaining} cents of the charge are left to refund")]
    TooMuch {
        /// What is left.
        remaining: i64,
    },
}

impl Charge {
    /// Charges `request` on `now`: the card's test number and its expiry decide the outcome.
    pub fn decide(request: ChargeRequest, now: DateTime<Utc>) -> Self {
        let failure = match request.card.number.behaviour() {
            _ if request.card.expiry.is_past(now.date_naive()) => Some(FailureCode::ExpiredCard),
            TestBehaviour::Succeed => None,
            TestBehaviour::Decline => Some(FailureCode::CardDeclined),
            TestBehaviour::InsufficientFunds => Some(FailureCode::InsufficientFunds),
            TestBehaviour::Expired => Some(FailureCode::ExpiredCard),
            TestBehaviour::ProcessingError => Some(FailureCode::ProcessingError),
        };
        Self {
            id: ChargeId::generate(),
            status: if failure.is_some() {
                ChargeStatus::Failed
            } else {
                ChargeStatus::Succeeded
            },
            amount: request.amount,
            currency: request.currency,
            failure,
            card_last4: request.card.number.last4(),
            description: request.description,
            metadata: request.metadata,
            amount_refunded: 0,
            created_at: now,
        }
    }

    /// What is left to refund, in cents.
    pub fn refundable(&self) -> i64 {
        match self.status {
            ChargeStatus::Succeeded => self.amount.cents() - self.amount_refunded,
            ChargeStatus::Failed => 0,
        }
    }

    /// Refunds `amount` (everything left when `None`).
    pub fn refund(
        &mut self,
        amount: Option<Amount>,
        now: DateTime<Utc>,
    ) -> Result<Refund, RefundError> {
        if self.status != ChargeStatus::Succeeded {
            return Err(RefundError::NotSucceeded);
        }
        let remaining = self.refundable();
        let amount = match amount {
            Some(amount) if amount.cents() > remaining => {
                return Err(RefundError::TooMuch { remaining });
            }
            Some(amount) => amount,
            None => Amount::new(remaining).map_err(|_| RefundError::TooMuch { remaining })?,
        };
        self.amount_refunded += amount.cents();
        Ok(Refund {
            id: RefundId::generate(),
            charge_id: self.id.clone(),
            amount,
            currency: self.currency.clone(),
            created_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CardNumber, Cvc, Expiry};

    fn request(number: &str, month: i64, year: i64) -> ChargeRequest {
        ChargeRequest {
            amount: Amount::new(1000).expect("valid"),
            currency: Currency::parse("eur").expect("valid"),
            card: Card {
                number: CardNumber::parse(number).expect("valid"),
                expiry: Expiry::new(month, year).expect("valid"),
                cvc: Cvc::parse("123").expect("valid"),
            },
            description: None,
            metadata: Default::default(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2030-06-15T12:00:00Z".parse().expect("date")
    }

    #[test]
    fn a_card_past_its_expiry_fails_as_expired() {
        let charge = Charge::decide(request("4242424242424242", 5, 2030), now());
        assert_eq!(charge.status, ChargeStatus::Failed);
        assert_eq!(charge.failure, Some(FailureCode::ExpiredCard));
        let charge = Charge::decide(request("4242424242424242", 6, 2030), now());
        assert_eq!(charge.status, ChargeStatus::Succeeded);
        assert_eq!(charge.currency.as_str(), "EUR");
    }

    #[test]
    fn refunds_never_exceed_the_charge_and_failed_charges_refund_nothing() {
        let mut charge = Charge::decide(request("4242424242424242", 12, 2099), now());
        let first = charge
            .refund(Some(Amount::new(400).expect("valid")), now())
            .expect("partial");
        assert_eq!(first.amount.cents(), 400);
        assert_eq!(
            charge.refund(Some(Amount::new(601).expect("valid")), now()),
            Err(RefundError::TooMuch { remaining: 600 })
        );
        let rest = charge.refund(None, now()).expect("the rest");
        assert_eq!(rest.amount.cents(), 600);
        assert_eq!(
            charge.refund(None, now()),
            Err(RefundError::TooMuch { remaining: 0 })
        );
        let mut failed = Charge::decide(request("4000000000000002", 12, 2099), now());
        assert_eq!(failed.refund(None, now()), Err(RefundError::NotSucceeded));
    }
}

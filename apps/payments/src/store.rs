//! Payments in the state store: `payment:<order id>`, one per order. A payment is created
//! create-only (so concurrent requests for one order make one payment), then settled once
//! under its ETag, in the same transaction as its event in the outbox.

use chrono::Utc;
use kit::dapr::{Dapr, DaprError, StateOperation, Versioned, Write, back_off};
use kit::outbox::Outbox;
use uuid::Uuid;

use crate::domain::{PaymentStatus, StoredPayment};
use crate::error::ApiError;
use crate::provider::ChargeOutcome;

const ATTEMPTS: u32 = 60;

fn payment_key(order: &Uuid) -> String {
    format!("payment:{order}")
}

/// The shop's payments.
#[derive(Clone)]
pub struct Payments {
    dapr: Dapr,
    store: String,
    outbox: Outbox,
}

impl Payments {
    /// The payments in `store`, announced through `outbox`.
    pub fn new(dapr: Dapr, store: impl Into<String>, outbox: Outbox) -> Self {
        Self {
            dapr,
            store: store.into(),
            outbox,
        }
    }

    /// The payment of `order`.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, order: Uuid) -> Result<Option<Versioned<StoredPayment>>, DaprError> {
        self.dapr.get_state(&self.store, &payment_key(&order)).await
    }

    /// Stores a new payment, or returns the one the order already has.
    #[tracing::instrument(skip(self, payment), fields(order_id = %payment.order_id))]
    pub async fn create(&self, payment: &StoredPayment) -> Result<StoredPayment, ApiError> {
        for attempt in 0..ATTEMPTS {
            if let Some(existing) = self.get(payment.order_id).await? {
                return Ok(existing.value);
            }
            match self
                .dapr
                .save_state(
                    &self.store,
                    &payment_key(&payment.order_id),
                    payment,
                    Write::create_only(),
                )
                .await
            {
                Ok(()) => return Ok(payment.clone()),
                Err(DaprError::Conflict(_)) => back_off(attempt).await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// Records the provider's answer and stages PAYMENT_SUCCESSFUL or PAYMENT_FAILED with it.
    /// A payment settled meanwhile (by a concurrent request) is returned as it is.
    #[tracing::instrument(skip(self))]
    pub async fn settle(
        &self,
        order: Uuid,
        outcome: &ChargeOutcome,
    ) -> Result<StoredPayment, ApiError> {
        for attempt in 0..ATTEMPTS {
            let current = self.get(order).await?.ok_or(ApiError::NotFound)?;
            if current.value.status != PaymentStatus::Processing {
                return Ok(current.value);
            }
            let now = Utc::now();
            let mut settled = StoredPayment {
                updated_at: now,
                ..current.value.clone()
            };
            let entity = payment_key(&order);
            let mut staged = match outcome {
                ChargeOutcome::Succeeded { charge_id } => {
                    settled.status = PaymentStatus::Succeeded;
                    settled.charge_id = Some(charge_id.clone());
                    self.outbox
                        .stage(
                            &entity,
                            &contracts::PaymentSuccessful {
                                payment_id: settled.id,
                                order_id: settled.order_id,
                                user_id: settled.user_id,
                                user_email: settled.user_email.clone(),
                                amount_cents: settled.amount_cents,
                                currency: settled.currency.clone(),
                                card_last4: settled.card_last4.clone(),
                                paid_at: now,
                            },
                        )
                        .await?
                }
                ChargeOutcome::Failed { reason } => {
                    settled.status = PaymentStatus::Failed;
                    settled.failure = Some(*reason);
                    self.outbox
                        .stage(
                            &entity,
                            &contracts::PaymentFailed {
                                payment_id: settled.id,
                                order_id: settled.order_id,
                                user_id: settled.user_id,
                                user_email: settled.user_email.clone(),
                                amount_cents: settled.amount_cents,
                                currency: settled.currency.clone(),
                                reason: *reason,
                                failed_at: now,
                            },
                        )
                        .await?
                }
            };
            let mut operations = staged.take_operations();
            operations.push(StateOperation::upsert(
                payment_key(&order),
                &settled,
                Write::if_match(current.etag),
            )?);
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => {
                    self.outbox.relay_soon(staged);
                    return Ok(settled);
                }
                Err(DaprError::Conflict(_)) => {
                    // Our turn at the outbox shard is not needed while waiting.
                    drop(staged);
                    back_off(attempt).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// Marks a succeeded payment refunded.
    #[tracing::instrument(skip(self))]
    pub async fn refunded(&self, order: Uuid) -> Result<(), ApiError> {
        for attempt in 0..ATTEMPTS {
            let current = self.get(order).await?.ok_or(ApiError::NotFound)?;
            if current.value.status != PaymentStatus::Succeeded {
                return Ok(());
            }
            let refunded = StoredPayment {
                status: PaymentStatus::Refunded,
                updated_at: Utc::now(),
                ..current.value
            };
            match self
                .dapr
                .save_state(
                    &self.store,
                    &payment_key(&order),
                    &refunded,
                    Write::if_match(current.etag),
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(DaprError::Conflict(_)) => back_off(attempt).await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }
}

//! The workflow's activities: every effect of an order, each safe to run more than once.
//!
//! - The inventory's reservations are idempotent per order id (reserving again returns the
//!   same reservation; committing or releasing twice is fine).
//! - The view is created once (create-only) and closed only from `PENDING_PAYMENT`.
//! - Events carry a CloudEvent id derived from the order (`<order id>.created`, ...), so a
//!   repeated publish is the same event, which consumers drop.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use contracts::Event;
use dapr::workflow::{ActivityContext, Registry, RegistryExt as _, WorkflowError};
use kit::dapr::Dapr;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Announce, Announcement, Close, Closing, Opened, PlaceOrder, activity, failure};
use crate::domain::{Line, OrderId, OrderStatus, ProductId, Quantity, Rejection, StoredOrder};
use crate::store::Orders;

/// What the activities need.
#[derive(Clone)]
pub struct Activities {
    orders: Orders,
    dapr: Dapr,
    inventory: String,
    pubsub: String,
    timeout: Duration,
}

/// A reservation as the inventory app answers.
#[derive(Debug, Deserialize)]
struct Reservation {
    items: Vec<ReservedLine>,
    total_cents: i64,
    currency: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReservedLine {
    product_id: Uuid,
    name: String,
    quantity: i64,
    unit_price_cents: i64,
    currency: String,
}

/// The parts of the inventory's problem documents that say why a reservation was refused.
#[derive(Debug, Default, Deserialize)]
struct Problem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

#[derive(Debug, Deserialize)]
struct FieldError {
    field: String,
}

/// The line index in a field such as `items[3].quantity`.
fn line_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("items[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

impl Activities {
    /// Activities on `orders`, reaching the inventory app `inventory` and publishing to
    /// `pubsub`; calls to the inventory give up after `timeout` (and are retried).
    pub fn new(
        orders: Orders,
        dapr: Dapr,
        inventory: impl Into<String>,
        pubsub: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            orders,
            dapr,
            inventory: inventory.into(),
            pubsub: pubsub.into(),
            timeout,
        }
    }

    /// Registers every activity.
    pub(super) fn register(self, registry: &mut Registry) {
        fn add<I, O, F, Fut>(registry: &mut Registry, name: &str, activities: &Activities, f: F)
        where
            I: DeserializeOwned + Send + 'static,
            O: Serialize + Send + 'static,
            F: Fn(Activities, I) -> Fut + Send + Sync + Copy + 'static,
            Fut: std::future::Future<Output = Result<O, WorkflowError>> + Send + 'static,
        {
            let activities = activities.clone();
            let name_owned = name.to_owned();
            registry.add_activity(name, move |_: ActivityContext, input: Option<String>| {
                let activities = activities.clone();
                let name = name_owned.clone();
                async move {
                    let input: I = serde_json::from_str(input.as_deref().unwrap_or("null"))?;
                    match f(activities, input).await {
                        Ok(output) => Ok(Some(serde_json::to_string(&output)?)),
                        Err(error) => {
                            tracing::warn!(activity = %name, %error, "activity failed; it will be retried");
                            Err(error)
                        }
                    }
                }
            });
        }
        add(
            registry,
            activity::RESERVE_STOCK,
            &self,
            |a, order: PlaceOrder| async move { a.reserve_stock(&order).await },
        );
        add(
            registry,
            activity::PUBLISH,
            &self,
            |a, announce: Announce| async move { a.publish(announce).await },
        );
        add(
            registry,
            activity::COMMIT_STOCK,
            &self,
            |a, id: OrderId| async move { a.settle_reservation(id, "commit").await },
        );
        add(
            registry,
            activity::RELEASE_STOCK,
            &self,
            |a, id: OrderId| async move { a.settle_reservation(id, "release").await },
        );
        add(
            registry,
            activity::CLOSE_ORDER,
            &self,
            |a, close: Close| async move { a.close(close).await },
        );
    }

    /// Reserves the order's stock and stores its view: `PENDING_PAYMENT` with the inventory's
    /// prices, or `REJECTED` with the reason.
    #[tracing::instrument(skip(self, order), fields(order_id = %order.order_id))]
    pub async fn reserve_stock(&self, order: &PlaceOrder) -> Result<Opened, WorkflowError> {
        if let Some(existing) = self.orders.get(order.order_id).await.map_err(failure)? {
            return Ok(opened(existing.value.status));
        }
        let items: Vec<serde_json::Value> = order
            .items
            .as_slice()
            .iter()
            .map(|item| {
                serde_json::json!({"product_id": item.product_id, "quantity": item.quantity})
            })
            .collect();
        let response = self
            .dapr
            .invoke(Method::POST, &self.inventory, "/reservations")
            .timeout(self.timeout)
            .json(&serde_json::json!({"order_id": order.order_id, "items": items}))
            .send()
            .await
            .map_err(failure)?;
        let status = response.status();
        let body = response.bytes().await.map_err(failure)?;
        let now = Utc::now();
        let mut view = StoredOrder {
            id: order.order_id,
            user_id: order.user_id,
            user_email: order.user_email.clone(),
            status: OrderStatus::PendingPayment,
            lines: StoredOrder::unpriced(&order.items),
            total_cents: 0,
            currency: None,
            rejection: None,
            cancellation: None,
            payment_id: None,
            placed_at: order.placed_at,
            payment_due_at: order.payment_due_at,
            updated_at: now,
        };
        if status.is_success() {
            let reservation: Reservation = serde_json::from_slice(&body).map_err(failure)?;
            view.lines = reservation
                .items
                .iter()
                .map(|line| {
                    Ok(Line {
                        product_id: ProductId::from(line.product_id),
                        quantity: Quantity::new(line.quantity).map_err(failure)?,
                        name: Some(line.name.clone()),
                        unit_price_cents: Some(line.unit_price_cents),
                    })
                })
                .collect::<Result<_, WorkflowError>>()?;
            if reservation
                .items
                .iter()
                .any(|line| Some(&line.currency) != reservation.currency.as_ref())
            {
                // A total across currencies means nothing: give the stock back and refuse.
                self.settle_reservation(order.order_id, "release").await?;
                view.status = OrderStatus::Rejected;
                view.rejection = Some(Rejection::MixedCurrencies);
            } else {
                view.total_cents = reservation.total_cents;
                view.currency = reservation.currency;
            }
        } else {
            let rejection = self
                .rejection(order, status, &body)
                .ok_or_else(|| failure(format!("the inventory answered {status}")))?;
            view.status = OrderStatus::Rejected;
            view.rejection = Some(rejection);
        }
        let stored = self.orders.open(&view).await.map_err(failure)?;
        tracing::info!(status = ?stored.status, "order opened");
        Ok(opened(stored.status))
    }

    /// Why the inventory refused the reservation, when it is the order's fault (not enough
    /// stock, an unknown product); `None` for anything worth retrying.
    fn rejection(&self, order: &PlaceOrder, status: StatusCode, body: &[u8]) -> Option<Rejection> {
        let problem: Problem = serde_json::from_slice(body).unwrap_or_default();
        let field = problem.errors.first().map(|e| e.field.as_str())?;
        let item = order.items.as_slice().get(line_index(field)?)?;
        match status {
            StatusCode::CONFLICT if problem.kind.ends_with("/out-of-stock") => {
                Some(Rejection::OutOfStock {
                    product_id: item.product_id,
                })
            }
            StatusCode::UNPROCESSABLE_ENTITY if field.ends_with(".product_id") => {
                Some(Rejection::UnknownProduct {
                    product_id: item.product_id,
                })
            }
            _ => None,
        }
    }

    /// Commits (`commit`) or releases (`release`) the order's reservation.
    #[tracing::instrument(skip(self))]
    pub async fn settle_reservation(&self, id: OrderId, how: &str) -> Result<(), WorkflowError> {
        let response = self
            .dapr
            .invoke(
                Method::POST,
                &self.inventory,
                &format!("/reservations/{id}/{how}"),
            )
            .timeout(self.timeout)
            .send()
            .await
            .map_err(failure)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(failure(format!(
            "{how} of the reservation failed: {status} {body}"
        )))
    }

    /// Confirms or cancels the order's view; a view already closed stays as it is.
    #[tracing::instrument(skip(self))]
    pub async fn close(&self, close: Close) -> Result<(), WorkflowError> {
        let stored = self
            .orders
            .update(close.order_id, |order| {
                if order.status != OrderStatus::PendingPayment {
                    return None;
                }
                let mut closed = order.clone();
                closed.updated_at = Utc::now();
                match close.closing {
                    Closing::Confirmed { payment_id } => {
                        closed.status = OrderStatus::Confirmed;
                        closed.payment_id = Some(payment_id);
                    }
                    Closing::Cancelled { reason } => {
                        closed.status = OrderStatus::Cancelled;
                        closed.cancellation = Some(reason);
                    }
                }
                Some(closed)
            })
            .await
            .map_err(failure)?;
        tracing::info!(status = ?stored.status, "order closed");
        Ok(())
    }

    /// Publishes an `ORDER_*` event built from the order's view.
    #[tracing::instrument(skip(self))]
    pub async fn publish(&self, announce: Announce) -> Result<(), WorkflowError> {
        let order = self
            .orders
            .get(announce.order_id)
            .await
            .map_err(failure)?
            .ok_or_else(|| failure("the order's view is missing"))?
            .value;
        match announce.event {
            Announcement::Created => {
                let event = contracts::OrderCreated {
                    order_id: order.id.as_uuid(),
                    user_id: order.user_id,
                    user_email: order.user_email.clone(),
                    items: order.event_lines(),
                    total_cents: order.total_cents,
                    currency: order.currency.clone().unwrap_or_default(),
                    payment_due_at: order.payment_due_at,
                    created_at: order.placed_at,
                };
                self.send(&order, "created", &event).await
            }
            Announcement::Confirmed => {
                let event = contracts::OrderConfirmed {
                    order_id: order.id.as_uuid(),
                    user_id: order.user_id,
                    user_email: order.user_email.clone(),
                    total_cents: order.total_cents,
                    currency: order.currency.clone().unwrap_or_default(),
                    confirmed_at: order.updated_at,
                };
                self.send(&order, "confirmed", &event).await
            }
            Announcement::Cancelled => {
                let reason = order
                    .cancellation
                    .ok_or_else(|| failure("the order has no cancellation reason"))?;
                let event = contracts::OrderCancelled {
                    order_id: order.id.as_uuid(),
                    user_id: order.user_id,
                    user_email: order.user_email.clone(),
                    reason,
                    cancelled_at: order.updated_at,
                };
                self.send(&order, "cancelled", &event).await
            }
        }
    }

    async fn send<E: Event>(
        &self,
        order: &StoredOrder,
        suffix: &str,
        event: &E,
    ) -> Result<(), WorkflowError> {
        let metadata = HashMap::from([
            ("cloudevent.type".to_owned(), E::TYPE.to_owned()),
            // The same id on every attempt lets consumers drop duplicates.
            ("cloudevent.id".to_owned(), format!("{}.{suffix}", order.id)),
        ]);
        self.dapr
            .publish_raw(
                &self.pubsub,
                E::TOPIC,
                &serde_json::to_value(event)?,
                metadata,
            )
            .await
            .map_err(failure)?;
        tracing::info!(event = E::NAME, order_id = %order.id, "published");
        Ok(())
    }
}

fn opened(status: OrderStatus) -> Opened {
    match status {
        OrderStatus::PendingPayment => Opened::PendingPayment,
        OrderStatus::Rejected => Opened::Rejected,
        OrderStatus::Confirmed | OrderStatus::Cancelled => Opened::AlreadySettled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_indexes_are_read_from_field_paths() {
        assert_eq!(line_index("items[3].quantity"), Some(3));
        assert_eq!(line_index("items[0].product_id"), Some(0));
        assert_eq!(line_index("order_id"), None);
    }
}

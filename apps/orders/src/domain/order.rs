//! An order as stored (`order:<id>`): what was asked, what the inventory priced it at, and
//! where it stands.

use chrono::{DateTime, Utc};
use contracts::CancellationReason;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Items, OrderId, ProductId, Quantity};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Stock is reserved; waiting for the payment.
    PendingPayment,
    /// Paid; the stock is sold.
    Confirmed,
    /// Payment failed, never came, or the customer cancelled; the stock went back.
    Cancelled,
    /// The stock could not be reserved.
    Rejected,
}

impl OrderStatus {
    /// Whether nothing more will happen to the order.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::PendingPayment)
    }
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// Not enough stock of a product.
    OutOfStock {
        /// The product.
        product_id: ProductId,
    },
    /// The inventory does not know a product.
    UnknownProduct {
        /// The product.
        product_id: ProductId,
    },
    /// The products are priced in different currencies.
    MixedCurrencies,
}

/// One line of an order. Name and price come from the inventory when the stock is reserved,
/// so a rejected order has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The product.
    pub product_id: ProductId,
    /// Units.
    pub quantity: Quantity,
    /// The product's name when reserved.
    pub name: Option<String>,
    /// Price per unit when reserved, in cents.
    pub unit_price_cents: Option<i64>,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOrder {
    /// Id (and workflow instance id).
    pub id: OrderId,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email, for the events.
    pub user_email: String,
    /// Status.
    pub status: OrderStatus,
    /// Lines.
    pub lines: Vec<Line>,
    /// Total in cents (0 for a rejected order).
    pub total_cents: i64,
    /// ISO 4217 code of the prices (none for a rejected order).
    pub currency: Option<String>,
    /// Why it was rejected.
    pub rejection: Option<Rejection>,
    /// Why it was cancelled.
    pub cancellation: Option<CancellationReason>,
    /// The payment that confirmed it.
    pub payment_id: Option<Uuid>,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When payment stops being accepted.
    pub payment_due_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl StoredOrder {
    /// The lines of `items` with no price yet.
    pub fn unpriced(items: &Items) -> Vec<Line> {
        items
            .as_slice()
            .iter()
            .map(|item| Line {
                product_id: item.product_id,
                quantity: item.quantity,
                name: None,
                unit_price_cents: None,
            })
            .collect()
    }

    /// The lines as events carry them.
    pub fn event_lines(&self) -> Vec<contracts::OrderLine> {
        self.lines
            .iter()
            .map(|line| contracts::OrderLine {
                product_id: line.product_id.as_uuid(),
                name: line.name.clone().unwrap_or_default(),
                quantity: line.quantity.units(),
                unit_price_cents: line.unit_price_cents.unwrap_or_default(),
            })
            .collect()
    }
}

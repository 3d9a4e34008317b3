//! Stock reservations: what an order holds until it is paid (committed) or cancelled (released).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ProductId;

/// The order a reservation belongs to (one reservation per order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl From<Uuid> for OrderId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl OrderId {
    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Units of one product in an order: 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(i64);

impl Quantity {
    /// Parses a quantity.
    pub fn new(units: i64) -> Result<Self, String> {
        match units {
            1..=1000 => Ok(Self(units)),
            n if n < 1 => Err("must be at least 1".into()),
            _ => Err("must be at most 1000".into()),
        }
    }

    /// Units.
    pub fn units(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = String;
    fn try_from(units: i64) -> Result<Self, Self::Error> {
        Self::new(units)
    }
}

impl From<Quantity> for i64 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Stock is held for the order.
    Reserved,
    /// The order was paid: the stock is sold.
    Committed,
    /// The order was cancelled: the stock went back.
    Released,
}

/// One product of a reservation, with the price it was reserved at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationLine {
    /// The product.
    pub product_id: ProductId,
    /// Its name at reservation time.
    pub name: String,
    /// Units held.
    pub quantity: Quantity,
    /// Price per unit at reservation time, in cents.
    pub unit_price_cents: i64,
    /// Currency of the price.
    pub currency: String,
}

/// A reservation as stored (`reservation:<order id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The order.
    pub order_id: OrderId,
    /// The lines.
    pub lines: Vec<ReservationLine>,
    /// Status.
    pub status: ReservationStatus,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Reservation {
    /// Whether this reservation asks for the same products and quantities.
    pub fn same_request(&self, request: &[(ProductId, Quantity)]) -> bool {
        let mine: Vec<(ProductId, i64)> = self
            .lines
            .iter()
            .map(|l| (l.product_id, l.quantity.units()))
            .collect();
        let theirs: Vec<(ProductId, i64)> = request.iter().map(|(p, q)| (*p, q.units())).collect();
        mine == theirs
    }
}

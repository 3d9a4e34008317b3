//! What a customer asks for: products and quantities, and the key that makes a retry safe.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An order id (UUIDv7, so ids sort by creation); also the id of the order's workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    /// A new id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses an id from a path or cursor.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(Self)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for OrderId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A product id, as the inventory app knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductId(Uuid);

impl ProductId {
    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for ProductId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl std::fmt::Display for ProductId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Units of one product: 1 to 1000 (what the inventory accepts).
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

/// One line as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The product.
    pub product_id: ProductId,
    /// How many.
    pub quantity: Quantity,
}

/// The lines of an order: at least one, each product once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Items(Vec<Item>);

/// Why a list of lines is not an order, and which field says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidItems {
    /// The field (`items`, `items[2].quantity`).
    pub field: String,
    /// Why.
    pub message: String,
}

impl Items {
    /// Parses `(product, units)` lines, at most `max_lines` of them.
    pub fn parse(lines: &[(Uuid, i64)], max_lines: usize) -> Result<Self, InvalidItems> {
        let invalid = |field: String, message: String| InvalidItems { field, message };
        if lines.is_empty() {
            return Err(invalid("items".into(), "must not be empty".into()));
        }
        if lines.len() > max_lines {
            return Err(invalid(
                "items".into(),
                format!("must have at most {max_lines} lines"),
            ));
        }
        let mut items: Vec<Item> = Vec::with_capacity(lines.len());
        for (index, (product, units)) in lines.iter().enumerate() {
            let product_id = ProductId::from(*product);
            if items.iter().any(|item| item.product_id == product_id) {
                return Err(invalid(
                    format!("items[{index}].product_id"),
                    "appears more than once".into(),
                ));
            }
            let quantity = Quantity::new(*units)
                .map_err(|message| invalid(format!("items[{index}].quantity"), message))?;
            items.push(Item {
                product_id,
                quantity,
            });
        }
        Ok(Self(items))
    }

    /// The lines, in the order asked.
    pub fn as_slice(&self) -> &[Item] {
        &self.0
    }
}

/// An `Idempotency-Key`: 1 to 200 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a header value.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.len() > 200 {
            return Err("must be at most 200 characters".into());
        }
        // Dapr refuses state keys containing `||` (its key prefix separator).
        if !text.bytes().all(|b| b.is_ascii_graphic()) || text.contains("||") {
            return Err("may only contain visible ASCII characters, and not `||`".into());
        }
        Ok(Self(text.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_name_the_offending_line() {
        let product = Uuid::now_v7();
        let other = Uuid::now_v7();
        assert_eq!(
            Items::parse(&[], 5).expect_err("empty").field,
            "items".to_owned()
        );
        assert_eq!(
            Items::parse(&[(product, 1), (other, 0)], 5)
                .expect_err("zero")
                .field,
            "items[1].quantity"
        );
        assert_eq!(
            Items::parse(&[(product, 1), (product, 2)], 5)
                .expect_err("twice")
                .field,
            "items[1].product_id"
        );
        assert_eq!(
            Items::parse(&[(product, 1), (other, 1)], 1)
                .expect_err("too many")
                .field,
            "items"
        );
        let items = Items::parse(&[(product, 3)], 5).expect("valid");
        assert_eq!(items.as_slice()[0].quantity.units(), 3);
    }

    #[test]
    fn idempotency_keys_are_short_visible_text() {
        assert!(IdempotencyKey::parse("9b2f-4c1e").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("a||b").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(201)).is_err());
    }
}

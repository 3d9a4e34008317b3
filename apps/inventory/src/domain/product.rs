//! Products and their fields, each parsed once at the edge.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A product id (UUIDv7, so ids sort by creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductId(Uuid);

impl ProductId {
    /// A new id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

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

/// Trims `text` and checks its length and characters.
fn checked_text(text: &str, min: usize, max: usize) -> Result<String, String> {
    let trimmed = text.trim();
    let length = trimmed.chars().count();
    if length < min {
        return Err(if min == 1 {
            "must not be empty".into()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if length > max {
        return Err(format!("must be at most {max} characters"));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n') {
        return Err("must not contain control characters".into());
    }
    Ok(trimmed.to_owned())
}

macro_rules! text_field {
    ($name:ident, $min:expr, $max:expr, $what:literal) => {
        #[doc = $what]
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses, trimming surrounding whitespace.
            pub fn parse(text: &str) -> Result<Self, String> {
                checked_text(text, $min, $max).map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

text_field!(ProductName, 1, 200, "A product name: 1 to 200 characters.");
text_field!(
    Description,
    0,
    5000,
    "A description: up to 5000 characters."
);

/// A category: lower-case letters, digits and dashes (`garden-tools`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Category(String);

impl Category {
    /// Parses a category (case is folded).
    pub fn parse(text: &str) -> Result<Self, String> {
        let category = text.trim().to_lowercase();
        if category.is_empty() || category.len() > 50 {
            return Err("must be 1 to 50 characters".into());
        }
        if !category
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err("may only contain letters, digits and dashes".into());
        }
        Ok(Self(category))
    }

    /// The category.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Category {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Category> for String {
    fn from(value: Category) -> Self {
        value.0
    }
}

/// An ISO 4217 currency code (three upper-case letters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Parses a code (case is folded).
    pub fn parse(text: &str) -> Result<Self, String> {
        let code = text.trim().to_ascii_uppercase();
        if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(code))
        } else {
            Err("must be a three-letter ISO 4217 code such as EUR".into())
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

/// A price: minor units (cents) of a currency, never negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    cents: i64,
    currency: Currency,
}

impl Money {
    /// The largest price accepted (a billion units).
    pub const MAX_CENTS: i64 = 100_000_000_000;

    /// A price.
    pub fn new(cents: i64, currency: Currency) -> Result<Self, String> {
        if cents < 0 {
            return Err("must not be negative".into());
        }
        if cents > Self::MAX_CENTS {
            return Err("is too large".into());
        }
        Ok(Self { cents, currency })
    }

    /// Minor units.
    pub fn cents(&self) -> i64 {
        self.cents
    }

    /// The currency.
    pub fn currency(&self) -> &Currency {
        &self.currency
    }
}

/// Units in stock, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Stock(i64);

impl Stock {
    /// Parses a stock level.
    pub fn new(units: i64) -> Result<Self, String> {
        match units {
            0..=1_000_000_000 => Ok(Self(units)),
            n if n < 0 => Err("must not be negative".into()),
            _ => Err("is too large".into()),
        }
    }

    /// Units.
    pub fn units(self) -> i64 {
        self.0
    }

    /// Stock after taking `units`, if there is enough.
    pub fn take(self, units: i64) -> Option<Self> {
        self.0
            .checked_sub(units)
            .filter(|left| *left >= 0)
            .map(Self)
    }

    /// Stock after giving `units` back.
    pub fn give_back(self, units: i64) -> Self {
        Self(self.0.saturating_add(units))
    }
}

impl TryFrom<i64> for Stock {
    type Error = String;
    fn try_from(units: i64) -> Result<Self, Self::Error> {
        Self::new(units)
    }
}

impl From<Stock> for i64 {
    fn from(stock: Stock) -> Self {
        stock.0
    }
}

/// A product as stored (`product:<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProduct {
    /// Id.
    pub id: ProductId,
    /// Name.
    pub name: ProductName,
    /// Description.
    pub description: Description,
    /// Price.
    pub price: Money,
    /// Category.
    pub category: Category,
    /// Units available.
    pub stock: Stock,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl StoredProduct {
    /// The product as events carry it.
    pub fn snapshot(&self) -> contracts::ProductSnapshot {
        contracts::ProductSnapshot {
            id: self.id.as_uuid(),
            name: self.name.as_str().to_owned(),
            description: self.description.as_str().to_owned(),
            price_cents: self.price.cents(),
            currency: self.price.currency().as_str().to_owned(),
            category: self.category.as_str().to_owned(),
            stock: self.stock.units(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_stock_are_never_negative() {
        let eur = Currency::parse("eur").expect("valid");
        assert_eq!(eur.as_str(), "EUR");
        assert!(Money::new(-1, eur.clone()).is_err());
        assert!(Money::new(1999, eur).is_ok());
        assert!(Stock::new(-5).is_err());
        assert_eq!(Stock::new(3).expect("valid").take(4), None);
        assert_eq!(
            Stock::new(3).expect("valid").take(3).map(Stock::units),
            Some(0)
        );
    }

    #[test]
    fn fields_are_checked() {
        assert!(Currency::parse("EURO").is_err());
        assert!(Category::parse("Garden Tools").is_err());
        assert_eq!(
            Category::parse(" Garden-Tools ").map(|c| c.0),
            Ok("garden-tools".into())
        );
        assert!(ProductName::parse("  ").is_err());
        assert!(ProductName::parse(&"x".repeat(201)).is_err());
    }
}

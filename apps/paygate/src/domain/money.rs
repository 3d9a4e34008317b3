//! Amounts and currencies.

use serde::{Deserialize, Serialize};

/// A positive amount in the currency's minor unit (cents), at most 999,999.99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(i64);

/// The largest amount one charge may take, in cents (as card processors cap test charges).
pub const MAX_AMOUNT_CENTS: i64 = 99_999_999;

impl Amount {
    /// Parses cents: at least 1, at most [`MAX_AMOUNT_CENTS`].
    pub fn new(cents: i64) -> Result<Self, String> {
        if cents < 1 {
            return Err("must be at least 1".into());
        }
        if cents > MAX_AMOUNT_CENTS {
            return Err(format!("must be at most {MAX_AMOUNT_CENTS}"));
        }
        Ok(Self(cents))
    }

    /// The amount in cents.
    pub fn cents(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 code, upper case (`EUR`); lower case is accepted on input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// Parses three ASCII letters.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 3 && text.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(text.to_ascii_uppercase()))
        } else {
            Err("must be a three-letter ISO 4217 code such as EUR".into())
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

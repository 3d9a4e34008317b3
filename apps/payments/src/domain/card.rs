//! A card, parsed once at the edge. It lives only as long as the request: the number and CVC
//! are sent to the provider and dropped; only the last four digits are kept or logged.

use secrecy::{ExposeSecret as _, SecretString};

/// Which field of a card is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardError {
    /// `card.number`, `card.exp_month`, `card.exp_year` or `card.cvc`.
    pub field: &'static str,
    /// Why.
    pub message: String,
}

/// A card to charge.
pub struct Card {
    number: SecretString,
    cvc: SecretString,
    exp_month: i64,
    exp_year: i64,
    last4: String,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("last4", &self.last4)
            .finish_non_exhaustive()
    }
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (index, digit) in digits
        .bytes()
        .rev()
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        sum += if index % 2 == 1 {
            let doubled = digit * 2;
            if doubled > 9 { doubled - 9 } else { doubled }
        } else {
            digit
        };
    }
    sum % 10 == 0
}

impl Card {
    /// Parses a card (spaces in the number are ignored).
    pub fn parse(
        number: &str,
        exp_month: i64,
        exp_year: i64,
        cvc: &str,
    ) -> Result<Self, CardError> {
        let invalid = |field, message: &str| CardError {
            field,
            message: message.to_owned(),
        };
        let digits: String = number.chars().filter(|c| *c != ' ').collect();
        if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("card.number", "must be 12 to 19 digits"));
        }
        if !luhn(&digits) {
            return Err(invalid("card.number", "is not a valid card number"));
        }
        if !(1..=12).contains(&exp_month) {
            return Err(invalid("card.exp_month", "must be between 1 and 12"));
        }
        if !(2000..=2100).contains(&exp_year) {
            return Err(invalid("card.exp_year", "must be a four-digit year"));
        }
        if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("card.cvc", "must be 3 or 4 digits"));
        }
        let last4 = digits[digits.len() - 4..].to_owned();
        Ok(Self {
            number: SecretString::from(digits),
            cvc: SecretString::from(cvc.to_owned()),
            exp_month,
            exp_year,
            last4,
        })
    }

    /// The last four digits, the only part kept.
    pub fn last4(&self) -> &str {
        &self.last4
    }

    /// The card as the provider takes it.
    pub fn to_provider_json(&self) -> serde_json::Value {
        serde_json::json!({
            "number": self.number.expose_secret(),
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
            "cvc": self.cvc.expose_secret(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_are_checked_and_only_the_last_four_digits_show() {
        let card = Card::parse("4242 4242 4242 4242", 12, 2030, "123").expect("valid");
        assert_eq!(card.last4(), "4242");
        assert!(!format!("{card:?}").contains("42424242"));
        assert_eq!(
            Card::parse("4242424242424241", 12, 2030, "123")
                .expect_err("luhn")
                .field,
            "card.number"
        );
        assert_eq!(
            Card::parse("4242424242424242", 13, 2030, "123")
                .expect_err("month")
                .field,
            "card.exp_month"
        );
        assert_eq!(
            Card::parse("4242424242424242", 12, 2030, "12a")
                .expect_err("cvc")
                .field,
            "card.cvc"
        );
    }
}

//! Cards as the provider receives them. A card number is never shown in full: its `Debug` and
//! `Display` print only the last four digits, so it cannot end up in a log by accident.

use std::fmt;

use chrono::Datelike as _;

/// A card number: 12 to 19 digits that pass the Luhn check.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    /// Parses digits, allowing spaces between groups (`4242 4242 4242 4242`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits: String = text.chars().filter(|c| *c != ' ').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err("must be digits only".into());
        }
        if !(12..=19).contains(&digits.len()) {
            return Err("must be 12 to 19 digits".into());
        }
        if !luhn(&digits) {
            return Err("is not a valid card number (Luhn check)".into());
        }
        Ok(Self(digits))
    }

    /// The last four digits, the only part ever shown or stored.
    pub fn last4(&self) -> String {
        self.0[self.0.len().saturating_sub(4)..].to_owned()
    }

    /// What the provider does with this number: the test numbers decide the outcome.
    pub fn behaviour(&self) -> TestBehaviour {
        match self.0.as_str() {
            "4000000000000002" => TestBehaviour::Decline,
            "4000000000009995" => TestBehaviour::InsufficientFunds,
            "4000000000000069" => TestBehaviour::Expired,
            "4000000000000119" => TestBehaviour::ProcessingError,
            _ => TestBehaviour::Succeed,
        }
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber(**** {})", self.last4())
    }
}

impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "**** {}", self.last4())
    }
}

/// The Luhn checksum every card number carries in its last digit.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The outcome a card number asks for (see the README's table of test cards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBehaviour {
    /// Any other valid number: the charge succeeds.
    Succeed,
    /// `4000000000000002`: declined.
    Decline,
    /// `4000000000009995`: insufficient funds.
    InsufficientFunds,
    /// `4000000000000069`: expired, whatever the date says.
    Expired,
    /// `4000000000000119`: the provider fails to process it.
    ProcessingError,
}

/// An expiry date: a month of a four-digit year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    month: u32,
    year: i32,
}

/// Which part of an expiry date is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryError {
    /// The month.
    Month(String),
    /// The year.
    Year(String),
}

impl Expiry {
    /// A month (1 to 12) of a year (2000 to 2099).
    pub fn new(month: i64, year: i64) -> Result<Self, ExpiryError> {
        let month = u32::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| ExpiryError::Month("must be between 1 and 12".into()))?;
        let year = i32::try_from(year)
            .ok()
            .filter(|y| (2000..=2099).contains(y))
            .ok_or_else(|| ExpiryError::Year("must be a four-digit year (2000 to 2099)".into()))?;
        Ok(Self { month, year })
    }

    /// Whether the card no longer works on `today` (it works to the end of its month).
    pub fn is_past(&self, today: chrono::NaiveDate) -> bool {
        (self.year, self.month) < (today.year(), today.month())
    }
}

/// A card verification code: 3 or 4 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Cvc(String);

impl Cvc {
    /// Parses 3 or 4 digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        if (3..=4).contains(&text.len()) && text.chars().all(|c| c.is_ascii_digit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be 3 or 4 digits".into())
        }
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc(***)")
    }
}

/// A card, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// Its number.
    pub number: CardNumber,
    /// Its expiry date.
    pub expiry: Expiry,
    /// Its verification code (checked for shape only, as test mode does).
    pub cvc: Cvc,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_must_pass_the_luhn_check() {
        for valid in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4000000000000002",
            "4000000000009995",
            "4000000000000069",
            "4000000000000119",
            "5555555555554444",
        ] {
            assert!(CardNumber::parse(valid).is_ok(), "{valid}");
        }
        for invalid in [
            "4242424242424241",
            "1234",
            "4242-4242-4242-4242",
            "",
            "abcd",
        ] {
            assert!(CardNumber::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn a_card_number_never_shows_more_than_its_last_four_digits() {
        let number = CardNumber::parse("4242424242424242").expect("valid");
        for shown in [format!("{number:?}"), number.to_string()] {
            assert!(!shown.contains("424242424242"), "{shown}");
            assert!(
                shown.ends_with("4242)") || shown.ends_with("4242"),
                "{shown}"
            );
        }
        let card = Card {
            number,
            expiry: Expiry::new(12, 2099).expect("valid"),
            cvc: Cvc::parse("123").expect("valid"),
        };
        let shown = format!("{card:?}");
        assert!(!shown.contains("424242424242"), "{shown}");
        assert!(!shown.contains("123"), "{shown}");
    }

    #[test]
    fn a_card_works_until_the_end_of_its_expiry_month() {
        let expiry = Expiry::new(3, 2030).expect("valid");
        let day = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date");
        assert!(!expiry.is_past(day(2030, 3, 31)));
        assert!(expiry.is_past(day(2030, 4, 1)));
        assert!(!expiry.is_past(day(2029, 12, 1)));
        assert!(matches!(Expiry::new(13, 2030), Err(ExpiryError::Month(_))));
        assert!(matches!(Expiry::new(1, 30), Err(ExpiryError::Year(_))));
    }

    #[test]
    fn test_numbers_choose_the_outcome() {
        let behaviour = |n: &str| CardNumber::parse(n).expect("valid").behaviour();
        assert_eq!(behaviour("4242424242424242"), TestBehaviour::Succeed);
        assert_eq!(behaviour("4000000000000002"), TestBehaviour::Decline);
        assert_eq!(
            behaviour("4000000000009995"),
            TestBehaviour::InsufficientFunds
        );
        assert_eq!(behaviour("4000000000000069"), TestBehaviour::Expired);
        assert_eq!(
            behaviour("4000000000000119"),
            TestBehaviour::ProcessingError
        );
    }
}

//! The simulated provider's domain: cards (and the test numbers that decide outcomes), amounts,
//! charges and refunds.

mod card;
mod charge;
mod money;

pub use card::{Card, CardNumber, Cvc, Expiry, ExpiryError, TestBehaviour};
pub use charge::{
    Charge, ChargeId, ChargeRequest, ChargeStatus, FailureCode, Refund, RefundError, RefundId,
};
pub use money::{Amount, Currency, MAX_AMOUNT_CENTS};

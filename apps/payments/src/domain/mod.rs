//! The payments domain: the card as a customer gives it (never stored), and the payment as
//! stored.

mod card;
mod payment;

pub use card::{Card, CardError};
pub use payment::{PaymentStatus, StoredPayment};

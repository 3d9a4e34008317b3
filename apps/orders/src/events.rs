//! What the orders app publishes and consumes.
//!
//! Published by the workflow's activities: `ORDER_CREATED`, `ORDER_CONFIRMED` and
//! `ORDER_CANCELLED` (topic `orders`), each with a CloudEvent id derived from the order
//! (`<order id>.created`, ...), so that a repeated publish is recognisably the same event.
//! Consumed: `PAYMENT_SUCCESSFUL` and `PAYMENT_FAILED` (topic `payments`), raised on the
//! order's workflow as its decision event.

use contracts::{PaymentFailed, PaymentSuccessful};
use kit::events::Subscription;

/// Where each event is delivered.
pub mod paths {
    /// `PAYMENT_SUCCESSFUL`.
    pub const PAYMENT_SUCCESSFUL: &str = "/events/payment-successful";
    /// `PAYMENT_FAILED`.
    pub const PAYMENT_FAILED: &str = "/events/payment-failed";
}

/// The app's subscriptions on `pubsub`, routed by CloudEvent type.
pub fn subscriptions(pubsub: &str) -> Vec<Subscription> {
    vec![
        Subscription::new(pubsub, contracts::PAYMENTS)
            .route::<PaymentSuccessful>(paths::PAYMENT_SUCCESSFUL)
            .route::<PaymentFailed>(paths::PAYMENT_FAILED),
    ]
}

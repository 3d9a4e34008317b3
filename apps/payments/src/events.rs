//! What the payments app publishes and consumes.
//!
//! Published through the outbox ([`crate::store`]): `PAYMENT_SUCCESSFUL` and `PAYMENT_FAILED`
//! (topic `payments`). Consumed: `ORDER_CANCELLED` (topic `orders`): a charge taken for an
//! order that was cancelled meanwhile (its payment came after the deadline, say) is refunded.

use contracts::OrderCancelled;
use kit::events::Subscription;

/// Where each event is delivered.
pub mod paths {
    /// `ORDER_CANCELLED`.
    pub const ORDER_CANCELLED: &str = "/events/order-cancelled";
}

/// The app's subscriptions on `pubsub`, routed by CloudEvent type.
pub fn subscriptions(pubsub: &str) -> Vec<Subscription> {
    vec![
        Subscription::new(pubsub, contracts::ORDERS)
            .route::<OrderCancelled>(paths::ORDER_CANCELLED),
    ]
}

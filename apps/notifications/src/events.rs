//! What the notifications app consumes: `USER_REGISTERED` (topic `users`), `ORDER_CREATED`,
//! `ORDER_CONFIRMED`, `ORDER_CANCELLED` (`orders`), `PAYMENT_SUCCESSFUL` and `PAYMENT_FAILED`
//! (`payments`); and what each one tells the user. It publishes nothing.

use chrono::{DateTime, Utc};
use contracts::{
    CancellationReason, DeclineReason, Event, OrderCancelled, OrderConfirmed, OrderCreated,
    PaymentFailed, PaymentSuccessful, UserRegistered,
};
use kit::events::Subscription;
use uuid::Uuid;

use crate::domain::{Contact, Draft, Kind, Message};

/// Where each event is delivered.
pub mod paths {
    /// `USER_REGISTERED`.
    pub const USER_REGISTERED: &str = "/events/user-registered";
    /// `ORDER_CREATED`.
    pub const ORDER_CREATED: &str = "/events/order-created";
    /// `ORDER_CONFIRMED`.
    pub const ORDER_CONFIRMED: &str = "/events/order-confirmed";
    /// `ORDER_CANCELLED`.
    pub const ORDER_CANCELLED: &str = "/events/order-cancelled";
    /// `PAYMENT_SUCCESSFUL`.
    pub const PAYMENT_SUCCESSFUL: &str = "/events/payment-successful";
    /// `PAYMENT_FAILED`.
    pub const PAYMENT_FAILED: &str = "/events/payment-failed";
}

/// The app's subscriptions on `pubsub`, routed by CloudEvent type.
pub fn subscriptions(pubsub: &str) -> Vec<Subscription> {
    vec![
        Subscription::new(pubsub, contracts::USERS).route::<UserRegistered>(paths::USER_REGISTERED),
        Subscription::new(pubsub, contracts::ORDERS)
            .route::<OrderCreated>(paths::ORDER_CREATED)
            .route::<OrderConfirmed>(paths::ORDER_CONFIRMED)
            .route::<OrderCancelled>(paths::ORDER_CANCELLED),
        Subscription::new(pubsub, contracts::PAYMENTS)
            .route::<PaymentSuccessful>(paths::PAYMENT_SUCCESSFUL)
            .route::<PaymentFailed>(paths::PAYMENT_FAILED),
    ]
}

/// An event a user is told about.
pub trait Notify: Event + Send + Sync + 'static {
    /// The user concerned.
    fn user_id(&self) -> Uuid;

    /// What the event teaches about the user (only `USER_REGISTERED` does).
    fn contact(&self) -> Option<Contact> {
        None
    }

    /// The notification, for a user the app may already know.
    fn draft(&self, known: Option<&Contact>) -> Draft;
}

fn name(known: Option<&Contact>) -> &str {
    known.map_or("there", |contact| contact.name.as_str())
}

/// An order id as people quote it: its last 8 hex digits. Order ids are UUIDv7, whose first
/// digits are a timestamp that stays the same for a minute, so the first 8 would name every
/// order of that minute alike; the last ones are random.
fn short(order: Uuid) -> String {
    let simple = order.simple().to_string();
    simple[simple.len() - 8..].to_owned()
}

/// `1250, "EUR"` → `12.50 EUR`.
fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", cents / 100, cents % 100)
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl Notify for UserRegistered {
    fn user_id(&self) -> Uuid {
        self.user_id
    }

    fn contact(&self) -> Option<Contact> {
        Some(Contact {
            email: self.email.clone(),
            name: self.name.clone(),
        })
    }

    fn draft(&self, _known: Option<&Contact>) -> Draft {
        Draft {
            user_id: self.user_id,
            recipient: self.email.clone(),
            kind: Kind::Welcome,
            order_id: None,
            message: Message {
                title: format!("Welcome to the shop, {}!", self.name),
                body: format!(
                    "Hi {},\n\nyour account {} is ready. Browse the products and place your first order whenever you like.",
                    self.name, self.email
                ),
            },
        }
    }
}

impl Notify for OrderCreated {
    fn user_id(&self) -> Uuid {
        self.user_id
    }

    fn draft(&self, known: Option<&Contact>) -> Draft {
        let items = self
            .items
            .iter()
            .map(|line| format!("{} × {}", line.quantity, line.name))
            .collect::<Vec<_>>()
            .join(", ");
        Draft {
            user_id: self.user_id,
            recipient: self.user_email.clone(),
            kind: Kind::OrderCreated,
            order_id: Some(self.order_id),
            message: Message {
                title: format!("Order {} received", short(self.order_id)),
                body: format!(
                    "Hi {},\n\nwe have reserved {items} for you, {} in all. Please pay by {}, or the order will be cancelled.",
                    name(known),
                    money(self.total_cents, &self.currency),
                    when(self.payment_due_at),
                ),
            },
        }
    }
}

impl Notify for OrderConfirmed {
    fn user_id(&self) -> Uuid {
        self.user_id
    }

    fn draft(&self, known: Option<&Contact>) -> Draft {
        Draft {
            user_id: self.user_id,
            recipient: self.user_email.clone(),
            kind: Kind::OrderConfirmed,
            order_id: Some(self.order_id),
            message: Message {
                title: format!("Order {} confirmed", short(self.order_id)),
                body: format!(
                    "Hi {},\n\nyour payment of {} arrived and your order is confirmed. Thank you!",
                    name(known),
                    money(self.total_cents, &self.currency),
                ),
            },
        }
    }
}

impl Notify for OrderCancelled {
    fn user_id(&self) -> Uuid {
        self.user_id
    }

    fn draft(&self, known: Option<&Contact>) -> Draft {
        let why = match self.reason {
            CancellationReason::PaymentFailed => "because the payment did not go through",
            CancellationReason::PaymentTimeout => "because no payment arrived in time",
            CancellationReason::CancelledByCustomer => "as you asked",
        };
        Draft {
            user_id: self.user_id,
            recipient: self.user_email.clone(),
            kind: Kind::OrderCancelled,
            order_id: Some(self.order_id),
            message: Message {
                title: format!("Order {} cancelled", short(self.order_id)),
                body: format!(
                    "Hi {},\n\nyour order was cancelled {why}. Nothing is charged, and the items are back in stock.",
                    name(known)
                ),
            },
        }
    }
}

impl Notify for PaymentSuccessful {
    fn user_id(&self) -> Uuid {
        self.user_id
    }

    fn draft(&self, known: Option<&Contact>) -> Draft {
        Draft {
            user_id: self.user_id,
            recipient: self.user_email.clone(),
            kind: Kind::PaymentSucceeded,
            order_id: Some(self.order_id),
            message: Message {
                title: format!("Payment received for order {}", short(self.order_id)),
                body: format!(
                    "Hi {},\n\nwe charged {} to your card ending in {}.",
                    name(known),
                    money(self.amount_cents, &self.currency),
                    self.card_last4
                ),
            },
        }
    }
}

impl Notify for PaymentFailed {
    fn user_id(&self) -> Uuid {
        self.user_id
    }

    fn draft(&self, known: Option<&Contact>) -> Draft {
        let why = match self.reason {
            DeclineReason::CardDeclined => "your card was declined",
            DeclineReason::InsufficientFunds => "your card has insufficient funds",
            DeclineReason::ExpiredCard => "your card has expired",
            DeclineReason::ProcessingError => "the payment provider could not process it",
        };
        Draft {
            user_id: self.user_id,
            recipient: self.user_email.clone(),
            kind: Kind::PaymentFailed,
            order_id: Some(self.order_id),
            message: Message {
                title: format!("Payment failed for order {}", short(self.order_id)),
                body: format!(
                    "Hi {},\n\nthe payment of {} did not go through: {why}.",
                    name(known),
                    money(self.amount_cents, &self.currency),
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_placed_in_the_same_minute_are_quoted_apart() {
        let first = Uuid::now_v7();
        let second = Uuid::now_v7();
        assert_ne!(short(first), short(second));
        assert_eq!(short(first).len(), 8);
        assert!(first.simple().to_string().ends_with(&short(first)));
    }

    #[test]
    fn amounts_read_as_money() {
        assert_eq!(money(1250, "EUR"), "12.50 EUR");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-100, "USD"), "-1.00 USD");
    }

    #[test]
    fn a_known_user_is_greeted_by_name() {
        let event = OrderConfirmed {
            order_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            user_email: "ada@example.com".into(),
            total_cents: 990,
            currency: "EUR".into(),
            confirmed_at: Utc::now(),
        };
        let ada = Contact {
            email: "ada@example.com".into(),
            name: "Ada".into(),
        };
        assert!(event.draft(Some(&ada)).message.body.starts_with("Hi Ada,"));
        assert!(event.draft(None).message.body.starts_with("Hi there,"));
        assert!(event.draft(None).message.body.contains("9.90 EUR"));
    }
}

//! The events the shop's apps exchange, as versioned contracts.
//!
//! Each event is a payload type with its topic, its CloudEvent `type` (which carries the
//! version, e.g. `shop.order.created.v1`) and a JSON Schema generated from the type and checked
//! in under `docs/events/`. Events of one aggregate share a topic (`users`, `products`,
//! `orders`, `payments`); subscribers route them by CloudEvent type.
//!
//! A breaking change gets a new type (`...v2`) published next to the old one until every
//! consumer has moved; additive changes (a new optional field) keep the version.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What every event contract declares.
pub trait Event: Serialize + DeserializeOwned + JsonSchema {
    /// The event's name in the shop's vocabulary (`ORDER_CREATED`).
    const NAME: &'static str;
    /// The pub/sub topic it is published to.
    const TOPIC: &'static str;
    /// The CloudEvent `type`, including the version.
    const TYPE: &'static str;
    /// The contract version.
    const VERSION: u32;
}

/// Topic of user events.
pub const USERS: &str = "users";
/// Topic of product events.
pub const PRODUCTS: &str = "products";
/// Topic of order events.
pub const ORDERS: &str = "orders";
/// Topic of payment events.
pub const PAYMENTS: &str = "payments";

macro_rules! event {
    ($type:ty, $name:literal, $topic:expr, $cloud_type:literal, $version:literal) => {
        impl Event for $type {
            const NAME: &'static str = $name;
            const TOPIC: &'static str = $topic;
            const TYPE: &'static str = $cloud_type;
            const VERSION: u32 = $version;
        }
    };
}

/// A user registered (`USER_REGISTERED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRegistered {
    /// The new user's id.
    pub user_id: Uuid,
    /// Normalised (lower-case) email address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// When the account was created.
    pub registered_at: DateTime<Utc>,
}
event!(
    UserRegistered,
    "USER_REGISTERED",
    USERS,
    "shop.user.registered.v1",
    1
);

/// A product as product events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductSnapshot {
    /// Product id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price in the currency's minor unit (cents).
    pub price_cents: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Category.
    pub category: String,
    /// Units in stock.
    pub stock: i64,
}

/// An admin added a product (`PRODUCT_ADDED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductAdded {
    /// The product as added.
    pub product: ProductSnapshot,
}
event!(
    ProductAdded,
    "PRODUCT_ADDED",
    PRODUCTS,
    "shop.product.added.v1",
    1
);

/// An admin changed a product (`PRODUCT_UPDATED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdated {
    /// The product after the change.
    pub product: ProductSnapshot,
}
event!(
    ProductUpdated,
    "PRODUCT_UPDATED",
    PRODUCTS,
    "shop.product.updated.v1",
    1
);

/// An admin deleted a product (`PRODUCT_DELETED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductDeleted {
    /// The deleted product's id.
    pub product_id: Uuid,
}
event!(
    ProductDeleted,
    "PRODUCT_DELETED",
    PRODUCTS,
    "shop.product.deleted.v1",
    1
);

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// The product.
    pub product_id: Uuid,
    /// Product name at order time.
    pub name: String,
    /// Units ordered.
    pub quantity: i64,
    /// Price per unit at order time, in cents.
    pub unit_price_cents: i64,
}

/// An order was placed and its stock reserved (`ORDER_CREATED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCreated {
    /// Order id.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email, for notifications.
    pub user_email: String,
    /// The lines.
    pub items: Vec<OrderLine>,
    /// Total in cents.
    pub total_cents: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// When payment stops being accepted.
    pub payment_due_at: DateTime<Utc>,
    /// When the order was created.
    pub created_at: DateTime<Utc>,
}
event!(
    OrderCreated,
    "ORDER_CREATED",
    ORDERS,
    "shop.order.created.v1",
    1
);

/// Payment arrived and the stock is committed (`ORDER_CONFIRMED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderConfirmed {
    /// Order id.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email, for notifications.
    pub user_email: String,
    /// Total in cents.
    pub total_cents: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// When the order was confirmed.
    pub confirmed_at: DateTime<Utc>,
}
event!(
    OrderConfirmed,
    "ORDER_CONFIRMED",
    ORDERS,
    "shop.order.confirmed.v1",
    1
);

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    /// The payment provider declined the payment.
    PaymentFailed,
    /// No payment arrived in time.
    PaymentTimeout,
    /// The customer cancelled.
    CancelledByCustomer,
}

/// The order was cancelled and its stock released (`ORDER_CANCELLED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    /// Order id.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email, for notifications.
    pub user_email: String,
    /// Why.
    pub reason: CancellationReason,
    /// When the order was cancelled.
    pub cancelled_at: DateTime<Utc>,
}
event!(
    OrderCancelled,
    "ORDER_CANCELLED",
    ORDERS,
    "shop.order.cancelled.v1",
    1
);

/// The provider charged the card (`PAYMENT_SUCCESSFUL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentSuccessful {
    /// Payment id.
    pub payment_id: Uuid,
    /// The order paid for.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email, for notifications.
    pub user_email: String,
    /// Amount charged, in cents.
    pub amount_cents: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Last four digits of the card.
    pub card_last4: String,
    /// When the provider confirmed the charge.
    pub paid_at: DateTime<Utc>,
}
event!(
    PaymentSuccessful,
    "PAYMENT_SUCCESSFUL",
    PAYMENTS,
    "shop.payment.successful.v1",
    1
);

/// Why a payment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// The issuer declined the card.
    CardDeclined,
    /// Not enough funds.
    InsufficientFunds,
    /// The card has expired.
    ExpiredCard,
    /// The provider could not process the payment.
    ProcessingError,
}

/// The payment failed (`PAYMENT_FAILED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentFailed {
    /// Payment id.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The customer.
    pub user_id: Uuid,
    /// The customer's email, for notifications.
    pub user_email: String,
    /// Amount attempted, in cents.
    pub amount_cents: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Why the provider refused.
    pub reason: DeclineReason,
    /// When the provider answered.
    pub failed_at: DateTime<Utc>,
}
event!(
    PaymentFailed,
    "PAYMENT_FAILED",
    PAYMENTS,
    "shop.payment.failed.v1",
    1
);

/// One entry of the event catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// `ORDER_CREATED`.
    pub name: &'static str,
    /// The topic.
    pub topic: &'static str,
    /// The CloudEvent type.
    pub cloud_event_type: &'static str,
    /// The contract version.
    pub version: u32,
    /// The schema file under `docs/events/`.
    pub schema_file: String,
    /// The JSON Schema.
    pub schema: serde_json::Value,
}

fn entry<E: Event>() -> CatalogEntry {
    let schema = serde_json::to_value(schemars::schema_for!(E)).unwrap_or_default();
    CatalogEntry {
        name: E::NAME,
        topic: E::TOPIC,
        cloud_event_type: E::TYPE,
        version: E::VERSION,
        schema_file: format!("{}.json", E::TYPE),
        schema,
    }
}

/// Every event, in the order of the mission's story.
pub fn catalog() -> Vec<CatalogEntry> {
    vec![
        entry::<UserRegistered>(),
        entry::<ProductAdded>(),
        entry::<ProductUpdated>(),
        entry::<ProductDeleted>(),
        entry::<OrderCreated>(),
        entry::<OrderConfirmed>(),
        entry::<OrderCancelled>(),
        entry::<PaymentSuccessful>(),
        entry::<PaymentFailed>(),
    ]
}

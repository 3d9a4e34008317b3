//! The orders domain: what an order is made of, parsed once at the edge, and the order as
//! stored.

mod order;
mod request;

pub use order::{Line, OrderStatus, Rejection, StoredOrder};
pub use request::{IdempotencyKey, Item, Items, OrderId, ProductId, Quantity};

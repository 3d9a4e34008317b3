//! What the inventory app publishes: `PRODUCT_ADDED`, `PRODUCT_UPDATED` and `PRODUCT_DELETED`,
//! staged in the outbox by [`crate::store`] with each change. It consumes nothing.

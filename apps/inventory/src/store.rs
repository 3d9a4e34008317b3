//! Products and reservations in the state store.
//!
//! `product:<id>` holds a product and `catalog` lists every product id with its category, in
//! creation order: the state API cannot list keys on every store, so the catalog is what makes
//! listings (with cursors and a category filter) work on all of them. `reservation:<order id>`
//! holds an order's reservation. Every change is one transaction guarded by ETags, retried on
//! conflict, so concurrent reservations can never take more stock than there is.

use kit::dapr::{Dapr, DaprError, StateOperation, Versioned, Write, back_off};
use kit::outbox::Outbox;
use serde::{Deserialize, Serialize};

use crate::domain::{
    Category, OrderId, ProductId, Quantity, Reservation, ReservationLine, ReservationStatus,
    StoredProduct,
};
use crate::error::ApiError;

/// How often a conflicting write is tried again before giving up with 503.
const ATTEMPTS: u32 = 60;
const CATALOG: &str = "catalog";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CatalogEntry {
    id: ProductId,
    category: Category,
}

fn product_key(id: &ProductId) -> String {
    format!("product:{id}")
}

fn reservation_key(id: &OrderId) -> String {
    format!("reservation:{id}")
}

/// A page of products.
#[derive(Debug)]
pub struct Page {
    /// The products, oldest first.
    pub products: Vec<StoredProduct>,
    /// The cursor for the next page, if there is one.
    pub next: Option<ProductId>,
}

/// The shop's inventory.
#[derive(Clone)]
pub struct Inventory {
    dapr: Dapr,
    store: String,
    outbox: Outbox,
}

impl Inventory {
    /// The inventory in `store`, announcing product changes through `outbox`.
    pub fn new(dapr: Dapr, store: impl Into<String>, outbox: Outbox) -> Self {
        Self {
            dapr,
            store: store.into(),
            outbox,
        }
    }

    async fn catalog(&self) -> Result<(Vec<CatalogEntry>, Write), DaprError> {
        Ok(
            match self
                .dapr
                .get_state::<Vec<CatalogEntry>>(&self.store, CATALOG)
                .await?
            {
                Some(Versioned { value, etag }) => (value, Write::if_match(etag)),
                None => (Vec::new(), Write::create_only()),
            },
        )
    }

    /// Products after `after`, optionally of one category.
    #[tracing::instrument(skip(self))]
    pub async fn list(
        &self,
        category: Option<&Category>,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Page, ApiError> {
        let (catalog, _) = self.catalog().await?;
        let mut matching = catalog
            .into_iter()
            .filter(|entry| after.is_none_or(|after| entry.id > after))
            .filter(|entry| category.is_none_or(|category| &entry.category == category));
        let page: Vec<ProductId> = matching
            .by_ref()
            .take(limit)
            .map(|entry| entry.id)
            .collect();
        let more = matching.next().is_some();
        let keys: Vec<String> = page.iter().map(product_key).collect();
        let products: Vec<StoredProduct> = self
            .dapr
            .get_bulk_state::<StoredProduct>(&self.store, &keys)
            .await?
            .into_iter()
            .flatten()
            .map(|product| product.value)
            .collect();
        Ok(Page {
            next: if more { page.last().copied() } else { None },
            products,
        })
    }

    /// One product, with its ETag.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, id: ProductId) -> Result<Option<Versioned<StoredProduct>>, DaprError> {
        self.dapr.get_state(&self.store, &product_key(&id)).await
    }

    /// Adds a product (and announces it).
    #[tracing::instrument(skip(self, product), fields(product_id = %product.id))]
    pub async fn add(&self, product: &StoredProduct) -> Result<(), ApiError> {
        let event = contracts::ProductAdded {
            product: product.snapshot(),
        };
        for attempt in 0..ATTEMPTS {
            let (mut catalog, catalog_write) = self.catalog().await?;
            catalog.push(CatalogEntry {
                id: product.id,
                category: product.category.clone(),
            });
            let mut operations = vec![
                StateOperation::upsert(product_key(&product.id), product, Write::create_only())?,
                StateOperation::upsert(CATALOG, &catalog, catalog_write)?,
            ];
            let mut staged = self.outbox.stage(&product_key(&product.id), &event).await?;
            operations.extend(staged.take_operations());
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => {
                    self.outbox.relay_soon(staged);
                    return Ok(());
                }
                Err(DaprError::Conflict(_)) => {
                    // Our turn at the outbox shard is not needed while waiting.
                    drop(staged);
                    back_off(attempt).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// Replaces a product with what `change` makes of it (and announces it).
    #[tracing::instrument(skip(self, change))]
    pub async fn update(
        &self,
        id: ProductId,
        change: impl Fn(&StoredProduct) -> StoredProduct,
    ) -> Result<StoredProduct, ApiError> {
        for attempt in 0..ATTEMPTS {
            let current = self.get(id).await?.ok_or(ApiError::ProductNotFound)?;
            let updated = change(&current.value);
            let mut operations = vec![StateOperation::upsert(
                product_key(&id),
                &updated,
                Write::if_match(current.etag),
            )?];
            if updated.category != current.value.category {
                let (mut catalog, catalog_write) = self.catalog().await?;
                for entry in catalog.iter_mut().filter(|e| e.id == id) {
                    entry.category = updated.category.clone();
                }
                operations.push(StateOperation::upsert(CATALOG, &catalog, catalog_write)?);
            }
            let event = contracts::ProductUpdated {
                product: updated.snapshot(),
            };
            let mut staged = self.outbox.stage(&product_key(&id), &event).await?;
            operations.extend(staged.take_operations());
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => {
                    self.outbox.relay_soon(staged);
                    return Ok(updated);
                }
                Err(DaprError::Conflict(_)) => {
                    // Our turn at the outbox shard is not needed while waiting.
                    drop(staged);
                    back_off(attempt).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// Deletes a product (and announces it).
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, id: ProductId) -> Result<(), ApiError> {
        for attempt in 0..ATTEMPTS {
            let current = self.get(id).await?.ok_or(ApiError::ProductNotFound)?;
            let (mut catalog, catalog_write) = self.catalog().await?;
            catalog.retain(|entry| entry.id != id);
            let mut operations = vec![
                StateOperation::Delete {
                    key: product_key(&id),
                    etag: Some(current.etag),
                },
                StateOperation::upsert(CATALOG, &catalog, catalog_write)?,
            ];
            let mut staged = self
                .outbox
                .stage(
                    &product_key(&id),
                    &contracts::ProductDeleted {
                        product_id: id.as_uuid(),
                    },
                )
                .await?;
            operations.extend(staged.take_operations());
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => {
                    self.outbox.relay_soon(staged);
                    return Ok(());
                }
                Err(DaprError::Conflict(_)) => {
                    // Our turn at the outbox shard is not needed while waiting.
                    drop(staged);
                    back_off(attempt).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// An order's reservation.
    #[tracing::instrument(skip(self))]
    pub async fn reservation(
        &self,
        order: OrderId,
    ) -> Result<Option<Versioned<Reservation>>, DaprError> {
        self.dapr
            .get_state(&self.store, &reservation_key(&order))
            .await
    }

    /// Reserves every line for `order`, or nothing. Asking again for the same order returns the
    /// existing reservation (`false`: not newly created).
    #[tracing::instrument(skip(self, request))]
    pub async fn reserve(
        &self,
        order: OrderId,
        request: &[(ProductId, Quantity)],
    ) -> Result<(Reservation, bool), ApiError> {
        let key = reservation_key(&order);
        let mut keys = Vec::with_capacity(request.len() + 1);
        keys.push(key.clone());
        keys.extend(request.iter().map(|(id, _)| product_key(id)));
        for attempt in 0..ATTEMPTS {
            // The reservation, if this order asked before, and the products: one read.
            let mut found = self
                .dapr
                .get_bulk_state::<serde_json::Value>(&self.store, &keys)
                .await?
                .into_iter();
            if let Some(existing) = found.next().flatten() {
                let existing = existing.decode::<Reservation>(&key)?;
                return if existing.value.same_request(request) {
                    Ok((existing.value, false))
                } else {
                    Err(ApiError::ReservationMismatch)
                };
            }
            let products = found
                .zip(&keys[1..])
                .map(|(product, key)| product.map(|p| p.decode::<StoredProduct>(key)).transpose())
                .collect::<Result<Vec<_>, DaprError>>()?;
            let now = chrono::Utc::now();
            let mut operations = Vec::with_capacity(request.len() + 1);
            let mut lines = Vec::with_capacity(request.len());
            for (index, ((id, quantity), product)) in request.iter().zip(products).enumerate() {
                let product = product.ok_or(ApiError::UnknownProduct { index, id: *id })?;
                let stock =
                    product
                        .value
                        .stock
                        .take(quantity.units())
                        .ok_or(ApiError::OutOfStock {
                            index,
                            id: *id,
                            available: product.value.stock.units(),
                        })?;
                lines.push(ReservationLine {
                    product_id: *id,
                    name: product.value.name.as_str().to_owned(),
                    quantity: *quantity,
                    unit_price_cents: product.value.price.cents(),
                    currency: product.value.price.currency().as_str().to_owned(),
                });
                let taken = StoredProduct {
                    stock,
                    ..product.value
                };
                operations.push(StateOperation::upsert(
                    product_key(id),
                    &taken,
                    Write::if_match(product.etag),
                )?);
            }
            let reservation = Reservation {
                order_id: order,
                lines,
                status: ReservationStatus::Reserved,
                created_at: now,
                updated_at: now,
            };
            operations.push(StateOperation::upsert(
                key.as_str(),
                &reservation,
                Write::create_only(),
            )?);
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => return Ok((reservation, true)),
                Err(DaprError::Conflict(_)) => back_off(attempt).await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// Gives a reservation's stock back. Releasing twice is fine; releasing a committed
    /// reservation is not.
    #[tracing::instrument(skip(self))]
    pub async fn release(&self, order: OrderId) -> Result<Reservation, ApiError> {
        for attempt in 0..ATTEMPTS {
            let current = self
                .reservation(order)
                .await?
                .ok_or(ApiError::ReservationNotFound)?;
            match current.value.status {
                ReservationStatus::Released => return Ok(current.value),
                ReservationStatus::Committed => {
                    return Err(ApiError::ReservationClosed(ReservationStatus::Committed));
                }
                ReservationStatus::Reserved => {}
            }
            let keys: Vec<String> = current
                .value
                .lines
                .iter()
                .map(|l| product_key(&l.product_id))
                .collect();
            let products = self
                .dapr
                .get_bulk_state::<StoredProduct>(&self.store, &keys)
                .await?;
            let mut operations = Vec::new();
            for (line, product) in current.value.lines.iter().zip(products) {
                // A product deleted meanwhile has no stock to give back to.
                let Some(product) = product else { continue };
                let restored = StoredProduct {
                    stock: product.value.stock.give_back(line.quantity.units()),
                    ..product.value
                };
                operations.push(StateOperation::upsert(
                    product_key(&line.product_id),
                    &restored,
                    Write::if_match(product.etag),
                )?);
            }
            let released = Reservation {
                status: ReservationStatus::Released,
                updated_at: chrono::Utc::now(),
                ..current.value
            };
            operations.push(StateOperation::upsert(
                reservation_key(&order),
                &released,
                Write::if_match(current.etag),
            )?);
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => return Ok(released),
                Err(DaprError::Conflict(_)) => back_off(attempt).await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// Marks a reservation's stock as sold. Committing twice is fine; committing a released
    /// reservation is not.
    #[tracing::instrument(skip(self))]
    pub async fn commit(&self, order: OrderId) -> Result<Reservation, ApiError> {
        for attempt in 0..ATTEMPTS {
            let current = self
                .reservation(order)
                .await?
                .ok_or(ApiError::ReservationNotFound)?;
            match current.value.status {
                ReservationStatus::Committed => return Ok(current.value),
                ReservationStatus::Released => {
                    return Err(ApiError::ReservationClosed(ReservationStatus::Released));
                }
                ReservationStatus::Reserved => {}
            }
            let committed = Reservation {
                status: ReservationStatus::Committed,
                updated_at: chrono::Utc::now(),
                ..current.value
            };
            match self
                .dapr
                .save_state(
                    &self.store,
                    &reservation_key(&order),
                    &committed,
                    Write::if_match(current.etag),
                )
                .await
            {
                Ok(()) => return Ok(committed),
                Err(DaprError::Conflict(_)) => back_off(attempt).await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }
}

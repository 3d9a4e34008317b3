//! Products: anyone lists and reads them, admins change them.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use kit::extract::AdminUser;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{
    Category, Currency, Description, Money, ProductId, ProductName, Stock, StoredProduct,
};
use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/products", get(list).post(create))
        .route("/products/{id}", get(get_one).put(replace).delete(delete))
}

/// A product as admins send it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProductInput {
    name: String,
    #[serde(default)]
    description: String,
    /// Price in cents, not negative.
    price_cents: i64,
    /// ISO 4217 code, e.g. EUR.
    currency: String,
    /// Lower-case letters, digits and dashes.
    category: String,
    /// Units in stock, not negative.
    stock: i64,
}

/// A product as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProductView {
    id: Uuid,
    name: String,
    description: String,
    price_cents: i64,
    currency: String,
    category: String,
    stock: i64,
}

impl From<&StoredProduct> for ProductView {
    fn from(product: &StoredProduct) -> Self {
        Self {
            id: product.id.as_uuid(),
            name: product.name.as_str().to_owned(),
            description: product.description.as_str().to_owned(),
            price_cents: product.price.cents(),
            currency: product.price.currency().as_str().to_owned(),
            category: product.category.as_str().to_owned(),
            stock: product.stock.units(),
        }
    }
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PageView {
    items: Vec<ProductView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The fields of a valid product.
struct ValidProduct {
    name: ProductName,
    description: Description,
    price: Money,
    category: Category,
    stock: Stock,
}

fn validate(input: ProductInput) -> Result<ValidProduct, ApiError> {
    let currency = Currency::parse(&input.currency).map_err(ApiError::invalid("currency"))?;
    Ok(ValidProduct {
        name: ProductName::parse(&input.name).map_err(ApiError::invalid("name"))?,
        description: Description::parse(&input.description)
            .map_err(ApiError::invalid("description"))?,
        price: Money::new(input.price_cents, currency).map_err(ApiError::invalid("price_cents"))?,
        category: Category::parse(&input.category).map_err(ApiError::invalid("category"))?,
        stock: Stock::new(input.stock).map_err(ApiError::invalid("stock"))?,
    })
}

fn parse_id(text: &str) -> Result<ProductId, ApiError> {
    Uuid::parse_str(text)
        .map(ProductId::from)
        .map_err(|_| ApiError::ProductNotFound)
}

/// Lists products, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/products",
    params(
        ("category" = Option<String>, Query, description = "Only this category"),
        ("cursor" = Option<String>, Query, description = "From the previous page's next_cursor"),
        ("limit" = Option<usize>, Query, description = "Page size (default 20)"),
    ),
    responses((status = 200, body = PageView), (status = 422, description = "A parameter is not valid"))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<PageView>, ApiError> {
    let category = query
        .get("category")
        .map(|c| Category::parse(c).map_err(ApiError::invalid("category")))
        .transpose()?;
    let cursor = query
        .get("cursor")
        .map(|c| {
            Uuid::parse_str(c).map(ProductId::from).map_err(|_| {
                ApiError::invalid("cursor")("is not a cursor from a previous page".into())
            })
        })
        .transpose()?;
    let limit = match query.get("limit") {
        None => 20,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=state.settings.max_page_size).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("limit")(format!(
                    "must be between 1 and {}",
                    state.settings.max_page_size
                ))
            })?,
    };
    let page = state
        .inventory
        .list(category.as_ref(), cursor, limit)
        .await?;
    Ok(Json(PageView {
        items: page.products.iter().map(ProductView::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// One product.
#[utoipa::path(
    get,
    path = "/products/{id}",
    params(("id" = Uuid, Path, description = "Product id")),
    responses((status = 200, body = ProductView), (status = 404, description = "No such product"))
)]
pub(super) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ProductView>, ApiError> {
    let product = state
        .inventory
        .get(parse_id(&id)?)
        .await?
        .ok_or(ApiError::ProductNotFound)?;
    Ok(Json(ProductView::from(&product.value)))
}

/// Adds a product (admins).
#[utoipa::path(
    post,
    path = "/products",
    request_body = ProductInput,
    responses(
        (status = 201, body = ProductView),
        (status = 403, description = "Not an admin"),
        (status = 422, description = "A field is not valid"),
    )
)]
pub(super) async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    kit::extract::Json(input): kit::extract::Json<ProductInput>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let valid = validate(input)?;
    let now = Utc::now();
    let product = StoredProduct {
        id: ProductId::generate(),
        name: valid.name,
        description: valid.description,
        price: valid.price,
        category: valid.category,
        stock: valid.stock,
        created_at: now,
        updated_at: now,
    };
    state.inventory.add(&product).await?;
    tracing::info!(product_id = %product.id, admin = %admin.id, "product added");
    Ok((StatusCode::CREATED, Json(ProductView::from(&product))))
}

/// Replaces a product (admins).
#[utoipa::path(
    put,
    path = "/products/{id}",
    params(("id" = Uuid, Path, description = "Product id")),
    request_body = ProductInput,
    responses((status = 200, body = ProductView), (status = 404, description = "No such product"))
)]
pub(super) async fn replace(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    kit::extract::Json(input): kit::extract::Json<ProductInput>,
) -> Result<Json<ProductView>, ApiError> {
    let id = parse_id(&id)?;
    let valid = validate(input)?;
    let updated = state
        .inventory
        .update(id, |current| StoredProduct {
            name: valid.name.clone(),
            description: valid.description.clone(),
            price: valid.price.clone(),
            category: valid.category.clone(),
            stock: valid.stock,
            updated_at: Utc::now(),
            ..current.clone()
        })
        .await?;
    tracing::info!(product_id = %id, admin = %admin.id, "product updated");
    Ok(Json(ProductView::from(&updated)))
}

/// Deletes a product (admins).
#[utoipa::path(
    delete,
    path = "/products/{id}",
    params(("id" = Uuid, Path, description = "Product id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such product"))
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    state.inventory.delete(id).await?;
    tracing::info!(product_id = %id, admin = %admin.id, "product deleted");
    Ok(StatusCode::NO_CONTENT)
}

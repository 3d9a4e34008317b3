//! Orders: customers place, list, read and cancel their own; admins read any.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kit::extract::AuthUser;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::commands;
use crate::domain::{IdempotencyKey, Items, OrderId, OrderStatus, Rejection, StoredOrder};
use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/orders", post(place).get(list))
        .route("/orders/{id}", get(get_one))
        .route("/orders/{id}/cancel", post(cancel))
}

/// An order as customers send it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PlaceRequest {
    /// The lines: each product once.
    items: Vec<ItemRequest>,
}

/// One line of an order request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ItemRequest {
    product_id: Uuid,
    /// 1 to 1000.
    quantity: i64,
}

/// An order as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct OrderView {
    id: Uuid,
    /// `PENDING_PAYMENT`, `CONFIRMED`, `CANCELLED` or `REJECTED`.
    status: String,
    items: Vec<LineView>,
    /// Taken from the inventory when the stock was reserved (0 when rejected).
    total_cents: i64,
    /// ISO 4217 code (absent when rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    created_at: DateTime<Utc>,
    /// When an unpaid order is cancelled.
    payment_due_at: DateTime<Utc>,
    /// Why a `REJECTED` order was rejected: `out_of_stock`, `unknown_product`,
    /// `mixed_currencies`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection: Option<RejectionView>,
    /// Why a `CANCELLED` order was cancelled: `payment_failed`, `payment_timeout`,
    /// `cancelled_by_customer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    cancellation_reason: Option<contracts::CancellationReason>,
}

/// Why an order was rejected.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RejectionView {
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<Uuid>,
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LineView {
    product_id: Uuid,
    quantity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price_cents: Option<i64>,
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PageView {
    items: Vec<OrderView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn status_name(status: OrderStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl From<&StoredOrder> for OrderView {
    fn from(order: &StoredOrder) -> Self {
        Self {
            id: order.id.as_uuid(),
            status: status_name(order.status),
            items: order
                .lines
                .iter()
                .map(|line| LineView {
                    product_id: line.product_id.as_uuid(),
                    quantity: line.quantity.units(),
                    name: line.name.clone(),
                    unit_price_cents: line.unit_price_cents,
                })
                .collect(),
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            created_at: order.placed_at,
            payment_due_at: order.payment_due_at,
            rejection: order.rejection.map(|rejection| match rejection {
                Rejection::OutOfStock { product_id } => RejectionView {
                    reason: "out_of_stock".into(),
                    product_id: Some(product_id.as_uuid()),
                },
                Rejection::UnknownProduct { product_id } => RejectionView {
                    reason: "unknown_product".into(),
                    product_id: Some(product_id.as_uuid()),
                },
                Rejection::MixedCurrencies => RejectionView {
                    reason: "mixed_currencies".into(),
                    product_id: None,
                },
            }),
            cancellation_reason: order.cancellation,
        }
    }
}

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

fn parse_id(text: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(text).ok_or(ApiError::NotFound)
}

/// Places an order. A retry with the same `Idempotency-Key` returns the same order (with
/// `Idempotent-Replayed: true`); the same key with other lines is 422.
#[utoipa::path(
    post,
    path = "/orders",
    params(("Idempotency-Key" = String, Header, description = "Unique per order; repeat it to retry safely")),
    request_body = PlaceRequest,
    responses(
        (status = 201, body = OrderView, description = "Placed: PENDING_PAYMENT, or REJECTED with the reason"),
        (status = 422, description = "A field or the Idempotency-Key is not valid"),
        (status = 503, description = "Still being placed; retry with the same key"),
    )
)]
pub(super) async fn place(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    kit::extract::Json(request): kit::extract::Json<PlaceRequest>,
) -> Result<Response, ApiError> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| ApiError::invalid(IDEMPOTENCY_KEY)("is required".into()))?
        .to_str()
        .map_err(|_| ApiError::invalid(IDEMPOTENCY_KEY)("must be visible ASCII".into()))
        .and_then(|text| IdempotencyKey::parse(text).map_err(ApiError::invalid(IDEMPOTENCY_KEY)))?;
    let lines: Vec<(Uuid, i64)> = request
        .items
        .iter()
        .map(|item| (item.product_id, item.quantity))
        .collect();
    let items =
        Items::parse(&lines, state.settings.max_lines).map_err(|invalid| ApiError::Invalid {
            field: invalid.field,
            message: invalid.message,
        })?;
    let (order, replayed) = commands::place(
        &state.orders,
        &state.workflows,
        &state.settings,
        &user,
        &key,
        items,
    )
    .await?;
    if !replayed {
        tracing::info!(order_id = %order.id, status = ?order.status, "order placed");
    }
    let mut response = (StatusCode::CREATED, Json(OrderView::from(&order))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// My orders, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/orders",
    params(
        ("cursor" = Option<String>, Query, description = "From the previous page's next_cursor"),
        ("limit" = Option<usize>, Query, description = "Page size (default 20)"),
    ),
    responses((status = 200, body = PageView), (status = 422, description = "A parameter is not valid"))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<PageView>, ApiError> {
    let cursor = query
        .get("cursor")
        .map(|c| {
            OrderId::parse(c).ok_or_else(|| {
                ApiError::invalid("cursor")("is not a cursor from a previous page".into())
            })
        })
        .transpose()?;
    let max = state.settings.max_page_size;
    let limit = match query.get("limit") {
        None => 20.min(max),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid("limit")(format!("must be between 1 and {max}")))?,
    };
    let page = state.orders.list(user.id, cursor, limit).await?;
    Ok(Json(PageView {
        items: page.orders.iter().map(OrderView::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// One order (its owner, or an admin).
#[utoipa::path(
    get,
    path = "/orders/{id}",
    params(("id" = Uuid, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, description = "No such order of yours"))
)]
pub(super) async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order = commands::visible(&state.orders, &user, parse_id(&id)?).await?;
    Ok(Json(OrderView::from(&order)))
}

/// Cancels an order that waits for its payment (its owner, or an admin): 200 once cancelled,
/// 202 while the cancellation is still on its way.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, body = OrderView, description = "Cancelled; the stock is back"),
        (status = 202, body = OrderView, description = "Cancellation requested"),
        (status = 404, description = "No such order of yours"),
        (status = 409, description = "Not pending payment (confirmed, cancelled or rejected)"),
    )
)]
pub(super) async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let order = commands::cancel(
        &state.orders,
        &state.workflows,
        &state.settings,
        &user,
        parse_id(&id)?,
    )
    .await?;
    tracing::info!(order_id = %order.id, status = ?order.status, "cancellation asked");
    let status = if order.status == OrderStatus::Cancelled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(OrderView::from(&order))))
}

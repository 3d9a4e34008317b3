//! Reservations, for the orders app only: reserve an order's stock, then commit or release it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::extract::headers::CALLER_APP_ID;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{OrderId, ProductId, Quantity, Reservation};
use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/reservations", post(reserve))
        .route("/reservations/{order_id}", get(get_one))
        .route("/reservations/{order_id}/release", post(release))
        .route("/reservations/{order_id}/commit", post(commit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    order_id: Uuid,
    items: Vec<ReserveItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveItem {
    product_id: Uuid,
    quantity: i64,
}

#[derive(Debug, Serialize)]
struct ReservationView {
    order_id: Uuid,
    status: crate::domain::ReservationStatus,
    items: Vec<LineView>,
    total_cents: i64,
    currency: Option<String>,
}

#[derive(Debug, Serialize)]
struct LineView {
    product_id: Uuid,
    name: String,
    quantity: i64,
    unit_price_cents: i64,
    currency: String,
}

impl From<&Reservation> for ReservationView {
    fn from(reservation: &Reservation) -> Self {
        Self {
            order_id: reservation.order_id.as_uuid(),
            status: reservation.status,
            total_cents: reservation
                .lines
                .iter()
                .map(|l| l.unit_price_cents.saturating_mul(l.quantity.units()))
                .sum(),
            currency: reservation.lines.first().map(|l| l.currency.clone()),
            items: reservation
                .lines
                .iter()
                .map(|l| LineView {
                    product_id: l.product_id.as_uuid(),
                    name: l.name.clone(),
                    quantity: l.quantity.units(),
                    unit_price_cents: l.unit_price_cents,
                    currency: l.currency.clone(),
                })
                .collect(),
        }
    }
}

/// Only the apps in `reservation_callers` (the orders app) may touch reservations; the sidecar
/// sets the caller's app id.
fn check_caller(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let caller = headers
        .get(CALLER_APP_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if state
        .settings
        .reservation_callers
        .iter()
        .any(|allowed| allowed == caller)
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "reservations are managed by the orders app",
        ))
    }
}

fn parse_items(items: Vec<ReserveItem>) -> Result<Vec<(ProductId, Quantity)>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::invalid("items")("must not be empty".into()));
    }
    let mut parsed: Vec<(ProductId, Quantity)> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let product = ProductId::from(item.product_id);
        if parsed.iter().any(|(p, _)| *p == product) {
            return Err(ApiError::invalid(format!("items[{index}].product_id"))(
                "appears more than once".into(),
            ));
        }
        let quantity = Quantity::new(item.quantity)
            .map_err(ApiError::invalid(format!("items[{index}].quantity")))?;
        parsed.push((product, quantity));
    }
    Ok(parsed)
}

async fn reserve(
    State(state): State<AppState>,
    headers: HeaderMap,
    kit::extract::Json(request): kit::extract::Json<ReserveRequest>,
) -> Result<(StatusCode, Json<ReservationView>), ApiError> {
    check_caller(&state, &headers)?;
    let items = parse_items(request.items)?;
    let order = OrderId::from(request.order_id);
    let (reservation, created) = state.inventory.reserve(order, &items).await?;
    if created {
        tracing::info!(order_id = %order, lines = items.len(), "stock reserved");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ReservationView::from(&reservation))))
}

async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(order_id): Path<Uuid>,
) -> Result<Json<ReservationView>, ApiError> {
    check_caller(&state, &headers)?;
    let reservation = state
        .inventory
        .reservation(OrderId::from(order_id))
        .await?
        .ok_or(ApiError::ReservationNotFound)?;
    Ok(Json(ReservationView::from(&reservation.value)))
}

async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(order_id): Path<Uuid>,
) -> Result<Json<ReservationView>, ApiError> {
    check_caller(&state, &headers)?;
    let reservation = state.inventory.release(OrderId::from(order_id)).await?;
    tracing::info!(%order_id, "reservation released");
    Ok(Json(ReservationView::from(&reservation)))
}

async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(order_id): Path<Uuid>,
) -> Result<Json<ReservationView>, ApiError> {
    check_caller(&state, &headers)?;
    let reservation = state.inventory.commit(OrderId::from(order_id)).await?;
    tracing::info!(%order_id, "reservation committed");
    Ok(Json(ReservationView::from(&reservation)))
}

//! What the API and the payment events ask of orders: place one, cancel one, settle one with a
//! payment outcome. Each starts the order's workflow or raises its decision event, then reads
//! the order's view.

use std::sync::{Arc, OnceLock};

use chrono::Utc;
use dapr::workflow::{EventOptions, ScheduleOptions, WorkflowSchedulingClient};
use dapr_durabletask::api::DurableTaskError;
use kit::extract::{AuthUser, Role};

use crate::domain::{IdempotencyKey, Items, OrderId, OrderStatus, StoredOrder};
use crate::error::ApiError;
use crate::settings::OrdersSettings;
use crate::store::{Claim, Orders};
use crate::workflow::{DECISION_EVENT, Decision, NAME, PlaceOrder};

/// The workflow client, connected once the sidecar is up.
#[derive(Clone, Default)]
pub struct Workflows {
    client: Arc<OnceLock<WorkflowSchedulingClient>>,
}

/// Whether an error from the workflow engine means the instance does not exist.
fn is_not_found(error: &DurableTaskError) -> bool {
    match error {
        DurableTaskError::GrpcError(status) => status.code() == tonic::Code::NotFound,
        DurableTaskError::InstanceNotFound { .. } => true,
        _ => false,
    }
}

impl Workflows {
    /// Sets the client (once, at start-up).
    pub fn connect(&self, client: WorkflowSchedulingClient) {
        let _ = self.client.set(client);
    }

    fn client(&self) -> Result<WorkflowSchedulingClient, ApiError> {
        self.client.get().cloned().ok_or(ApiError::NotReady)
    }

    /// Starts the workflow of `order`; an instance already running is left alone.
    #[tracing::instrument(skip(self, order), fields(order_id = %order.order_id))]
    pub async fn start(&self, order: &PlaceOrder) -> Result<(), ApiError> {
        let options = ScheduleOptions::new()
            .with_instance_id(order.order_id.to_string())
            .try_with_input(order)
            .map_err(|e| ApiError::Workflow(e.to_string()))?;
        match self.client()?.schedule_workflow(NAME, options).await {
            Ok(_) => Ok(()),
            Err(DurableTaskError::GrpcError(status))
                if status.code() == tonic::Code::AlreadyExists =>
            {
                Ok(())
            }
            Err(error) => Err(ApiError::Workflow(error.to_string())),
        }
    }

    /// Raises `decision` on the order's workflow. `Ok(false)` when there is no such workflow.
    #[tracing::instrument(skip(self))]
    pub async fn decide(&self, order: OrderId, decision: Decision) -> Result<bool, ApiError> {
        let options = EventOptions::new()
            .try_with_payload(decision)
            .map_err(|e| ApiError::Workflow(e.to_string()))?;
        match self
            .client()?
            .raise_event(&order.to_string(), DECISION_EVENT, options)
            .await
        {
            Ok(()) => Ok(true),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(ApiError::Workflow(error.to_string())),
        }
    }
}

/// Places an order for `user` (or finds the one `key` placed before), and waits until its
/// stock is checked. `true` when the key had placed it before.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn place(
    orders: &Orders,
    workflows: &Workflows,
    settings: &OrdersSettings,
    user: &AuthUser,
    key: &IdempotencyKey,
    items: Items,
) -> Result<(StoredOrder, bool), ApiError> {
    let claim = orders
        .claim(user.id, key, OrderId::generate(), &items)
        .await?;
    let (id, replayed) = match claim {
        Claim::New(id) => (id, false),
        Claim::Existing(id) => (id, true),
    };
    if replayed && let Some(order) = orders.get(id).await? {
        return Ok((order.value, true));
    }
    let placed_at = Utc::now();
    let payment_due_at = placed_at
        + chrono::Duration::from_std(settings.payment_timeout())
            .map_err(|e| ApiError::Workflow(e.to_string()))?;
    // A retry whose first attempt died before starting the workflow starts it now; a running
    // workflow is left alone (and its activities would find the view if it were started again).
    workflows
        .start(&PlaceOrder {
            order_id: id,
            user_id: user.id,
            user_email: user.email.clone(),
            items,
            placed_at,
            payment_due_at,
        })
        .await?;
    let order = orders
        .wait_for(
            id,
            std::time::Duration::from_secs(settings.placement_wait_seconds),
            |_| true,
        )
        .await?
        .ok_or(ApiError::StillPlacing)?;
    Ok((order, replayed))
}

/// The order `id` if `user` may see it: its owner, or an admin.
pub async fn visible(
    orders: &Orders,
    user: &AuthUser,
    id: OrderId,
) -> Result<StoredOrder, ApiError> {
    let order = orders.get(id).await?.ok_or(ApiError::NotFound)?.value;
    if order.user_id == user.id || user.role == Role::Admin {
        Ok(order)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Asks the workflow to cancel a pending order and waits (briefly) for the outcome. A payment
/// that arrived first wins: the answer is then 409 with the order confirmed.
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn cancel(
    orders: &Orders,
    workflows: &Workflows,
    settings: &OrdersSettings,
    user: &AuthUser,
    id: OrderId,
) -> Result<StoredOrder, ApiError> {
    let order = visible(orders, user, id).await?;
    if order.status != OrderStatus::PendingPayment {
        return Err(ApiError::NotPending(order.status));
    }
    if !workflows.decide(id, Decision::CancelRequested).await? {
        return Err(ApiError::Workflow(format!("order {id} has no workflow")));
    }
    let settled = orders
        .wait_for(
            id,
            std::time::Duration::from_secs(settings.placement_wait_seconds),
            |order| order.status.is_final(),
        )
        .await?;
    match settled {
        Some(order) if order.status == OrderStatus::Cancelled => Ok(order),
        Some(order) => Err(ApiError::NotPending(order.status)),
        // Not settled yet: the cancellation is on its way.
        None => Ok(order),
    }
}

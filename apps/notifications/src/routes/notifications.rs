//! A user's notifications: the history a page at a time, and a live stream of server-sent
//! events that resumes after `Last-Event-ID`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::Stream;
use kit::extract::AuthUser;
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Cursor, Kind, Notification, NotificationId, newest_first};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::Notifications;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/stream", get(stream))
}

/// A notification as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NotificationView {
    id: Uuid,
    kind: Kind,
    title: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl From<&Notification> for NotificationView {
    fn from(notification: &Notification) -> Self {
        Self {
            id: notification.id.as_uuid(),
            kind: notification.kind,
            title: notification.message.title.clone(),
            message: notification.message.body.clone(),
            order_id: notification.order_id,
            created_at: notification.created_at,
        }
    }
}

/// A page of notifications, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PageView {
    items: Vec<NotificationView>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// My notifications, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/notifications",
    params(
        ("cursor" = Option<String>, Query, description = "From the previous page's next_cursor"),
        ("limit" = Option<usize>, Query, description = "Page size (default 20)"),
    ),
    responses(
        (status = 200, body = PageView),
        (status = 401, description = "Not signed in"),
        (status = 422, description = "A parameter is not valid"),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<PageView>, ApiError> {
    let cursor = query
        .get("cursor")
        .map(|c| NotificationId::parse(c).map_err(ApiError::invalid("cursor")))
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
    let history = state.notifications.history(user.id).await?;
    let page = newest_first(&history, cursor, limit);
    Ok(Json(PageView {
        items: page.items.into_iter().map(NotificationView::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// The header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// My notifications as they happen (`text/event-stream`): each is an event `notification`
/// whose `id` is the notification's. Reconnecting with `Last-Event-ID` first replays what came
/// after that id; idle streams get keep-alive comments.
#[utoipa::path(
    get,
    path = "/notifications/stream",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this notification")),
    responses(
        (status = 200, description = "Server-sent events", content_type = "text/event-stream"),
        (status = 401, description = "Not signed in"),
        (status = 422, description = "Last-Event-ID is not a notification id"),
    )
)]
pub(super) async fn stream(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume = headers
        .get(LAST_EVENT_ID)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| "is not a notification id".to_owned())
                .and_then(NotificationId::parse)
                .map_err(ApiError::invalid("Last-Event-ID"))
        })
        .transpose()?;
    // Listen before reading, so that nothing stored in between is missed.
    let wake = state.notifications.hub().subscribe();
    let cursor = match resume {
        Some(id) => Cursor::After(id),
        None => Cursor::end_of(&state.notifications.history(user.id).await?),
    };
    tracing::info!(user_id = %user.id, resumed = resume.is_some(), "stream opened");
    let follow = Follow {
        notifications: state.notifications.clone(),
        user: user.id,
        cursor,
        pending: VecDeque::new(),
        read_now: resume.is_some(),
        wake,
        poll: Duration::from_secs(state.settings.stream_poll_seconds),
        stop: state.stop.clone(),
    };
    let keep_alive = KeepAlive::new()
        .interval(Duration::from_secs(state.settings.keep_alive_seconds))
        .text("keep-alive");
    let mut response = Sse::new(events(follow))
        .keep_alive(keep_alive)
        .into_response();
    // Proxies such as nginx would otherwise hold events back.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// One open stream.
struct Follow {
    notifications: Notifications,
    user: Uuid,
    cursor: Cursor,
    pending: VecDeque<Notification>,
    /// Read the history before waiting (a resumed stream replays at once).
    read_now: bool,
    wake: broadcast::Receiver<Uuid>,
    poll: Duration,
    stop: kit::server::Stop,
}

/// Waits until `user`'s history changes; `false` when no more wake-ups can come.
async fn woken(wake: &mut broadcast::Receiver<Uuid>, user: Uuid) -> bool {
    loop {
        match wake.recv().await {
            Ok(woken) if woken == user => return true,
            Ok(_) => {}
            // Missed some: the history tells what.
            Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}

fn events(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(notification) = follow.pending.pop_front() {
                follow.cursor = Cursor::After(notification.id);
                let event = Event::default()
                    .id(notification.id.to_string())
                    .event("notification")
                    .json_data(NotificationView::from(&notification));
                match event {
                    Ok(event) => return Some((Ok(event), follow)),
                    Err(error) => {
                        tracing::warn!(%error, "a notification could not be encoded; skipped");
                        continue;
                    }
                }
            }
            if !std::mem::take(&mut follow.read_now) {
                tokio::select! {
                    // Ends the stream on shutdown, so that draining does not wait for it.
                    () = follow.stop.cancelled() => return None,
                    open = woken(&mut follow.wake, follow.user) => if !open { return None },
                    // Picks up what other replicas stored.
                    () = tokio::time::sleep(follow.poll) => {}
                }
            }
            match follow.notifications.history(follow.user).await {
                Ok(history) => follow
                    .pending
                    .extend(follow.cursor.unseen(&history).iter().cloned()),
                Err(error) => {
                    tracing::warn!(%error, "reading the history for a stream failed; will retry");
                }
            }
        }
    })
}

//! Contacts, histories and handled events in the state store, and handling one event.
//!
//! `contact:<user>` holds what `USER_REGISTERED` said about a user; `history:<user>` their
//! notifications, oldest first, at most `history_limit`; `handled:<source>:<id>` each event
//! handled (kept `dedupe_ttl`), with the email still to send. A new notification is one state
//! transaction: the handled marker (create-only, so a redelivery or a concurrent replica
//! conflicts), the history (ETag-guarded) and, for a registration, the contact. The email goes
//! out after the commit and is crossed off the marker; a redelivery only finishes a pending
//! email, so nobody is told twice.
//!
//! Whoever sends an email holds it for [`SEND_LEASE`] (`sending_until` on the marker, taken
//! with its ETag): a delivery of the same event meanwhile is asked to come back later instead of
//! sending it too, and takes the send over if the holder died.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kit::dapr::{Dapr, DaprError, StateOperation, Versioned, Write, back_off};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Contact, Notification, NotificationId, OutgoingEmail};
use crate::error::HandleError;
use crate::events::Notify;
use crate::hub::Hub;
use crate::settings::NotificationsSettings;

/// How often a conflicting history write is tried again.
const ATTEMPTS: u32 = 30;

/// How long a sender holds an email before another delivery may take the send over: longer
/// than any SMTP exchange.
pub const SEND_LEASE: Duration = Duration::from_secs(60);

/// An event already handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Handled {
    notification_id: NotificationId,
    user_id: Uuid,
    /// Still to send; `None` once sent.
    email: Option<OutgoingEmail>,
    /// Someone is sending the email until then.
    #[serde(default)]
    sending_until: Option<DateTime<Utc>>,
}

fn lease_from(now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(SEND_LEASE)
        .ok()
        .map(|lease| now + lease)
}

/// What handling an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The user was notified.
    Notified(Notification),
    /// The event was handled before (a redelivery): nobody is notified again.
    Duplicate,
}

fn contact_key(user: Uuid) -> String {
    format!("contact:{user}")
}

fn history_key(user: Uuid) -> String {
    format!("history:{user}")
}

/// The marker of the event `id` from `source` (CloudEvent ids are unique per source). Other
/// characters than letters, digits, `-`, `_` and `.` are escaped, so that no key holds Dapr's
/// `||` separator.
fn handled_key(source: &str, id: &str) -> String {
    fn escape(text: &str) -> String {
        let mut escaped = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
                escaped.push(char::from(byte));
            } else {
                escaped.push_str(&format!("%{byte:02X}"));
            }
        }
        escaped
    }
    format!("handled:{}:{}", escape(source), escape(id))
}

/// The users' notifications.
#[derive(Clone)]
pub struct Notifications {
    dapr: Dapr,
    store: String,
    binding: String,
    history_limit: usize,
    dedupe_ttl: Duration,
    hub: Hub,
}

impl Notifications {
    /// Notifications kept as `settings` say, waking streams through `hub`.
    pub fn new(dapr: Dapr, settings: &NotificationsSettings, hub: Hub) -> Self {
        Self {
            dapr,
            store: settings.state_store.clone(),
            binding: settings.email_binding.clone(),
            history_limit: settings.history_limit,
            dedupe_ttl: Duration::from_secs(settings.dedupe_ttl_seconds),
            hub,
        }
    }

    /// The hub that wakes streams.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// A user's notifications, oldest first.
    #[tracing::instrument(skip(self))]
    pub async fn history(&self, user: Uuid) -> Result<Vec<Notification>, DaprError> {
        Ok(self
            .dapr
            .get_state::<Vec<Notification>>(&self.store, &history_key(user))
            .await?
            .map(|history| history.value)
            .unwrap_or_default())
    }

    #[tracing::instrument(skip(self))]
    async fn contact(&self, user: Uuid) -> Result<Option<Contact>, DaprError> {
        Ok(self
            .dapr
            .get_state::<Contact>(&self.store, &contact_key(user))
            .await?
            .map(|contact| contact.value))
    }

    #[tracing::instrument(skip(self))]
    async fn handled(&self, key: &str) -> Result<Option<Versioned<Handled>>, DaprError> {
        self.dapr.get_state::<Handled>(&self.store, key).await
    }

    /// Handles the event `id` from `source`: stores the notification, wakes the user's
    /// streams and sends the email; a redelivery only sends an email still pending.
    #[tracing::instrument(skip(self, event), fields(event = E::NAME, user_id = %event.user_id()))]
    pub async fn handle<E: Notify>(
        &self,
        source: &str,
        id: &str,
        event: &E,
    ) -> Result<Outcome, HandleError> {
        let key = handled_key(source, id);
        if let Some(handled) = self.handled(&key).await? {
            self.finish(&key, handled).await?;
            return Ok(Outcome::Duplicate);
        }
        let user = event.user_id();
        let introduced = event.contact();
        let known = match &introduced {
            Some(contact) => Some(contact.clone()),
            None => self.contact(user).await?,
        };
        let now = Utc::now();
        let (notification, email) = event.draft(known.as_ref()).into_notification(now);
        // Whoever commits the notification sends its email.
        let handled = Handled {
            notification_id: notification.id,
            user_id: user,
            email: Some(email),
            sending_until: lease_from(now),
        };
        for attempt in 0..ATTEMPTS {
            let (mut history, write) = match self
                .dapr
                .get_state::<Vec<Notification>>(&self.store, &history_key(user))
                .await?
            {
                Some(Versioned { value, etag }) => (value, Write::if_match(etag)),
                None => (Vec::new(), Write::create_only()),
            };
            history.push(notification.clone());
            let excess = history.len().saturating_sub(self.history_limit);
            history.drain(..excess);
            let mut operations = vec![
                StateOperation::upsert(
                    key.clone(),
                    &handled,
                    Write::create_only().with_ttl(self.dedupe_ttl),
                )?,
                StateOperation::upsert(history_key(user), &history, write)?,
            ];
            if let Some(contact) = &introduced {
                operations.push(StateOperation::upsert(
                    contact_key(user),
                    contact,
                    Write::always(),
                )?);
            }
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => {
                    tracing::info!(notification_id = %notification.id, kind = ?notification.kind, "notified");
                    self.hub.wake(user);
                    self.send_and_cross_off(&key, handled).await?;
                    return Ok(Outcome::Notified(notification));
                }
                Err(DaprError::Conflict(_)) => {
                    // Either the event was handled meanwhile (by a redelivery or another
                    // replica) or the history changed: only the second is worth a retry.
                    if let Some(handled) = self.handled(&key).await? {
                        self.finish(&key, handled).await?;
                        return Ok(Outcome::Duplicate);
                    }
                    back_off(attempt).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(HandleError::Busy)
    }

    /// Sends the email of a handled event if it is still pending and nobody else is sending
    /// it, then crosses it off.
    async fn finish(&self, key: &str, marker: Versioned<Handled>) -> Result<(), HandleError> {
        if marker.value.email.is_none() {
            return Ok(());
        }
        let now = Utc::now();
        if marker.value.sending_until.is_some_and(|until| until > now) {
            return Err(HandleError::Sending);
        }
        let claimed = Handled {
            sending_until: lease_from(now),
            ..marker.value
        };
        match self
            .dapr
            .save_state(
                &self.store,
                key,
                &claimed,
                Write::if_match(marker.etag).with_ttl(self.dedupe_ttl),
            )
            .await
        {
            Ok(()) => self.send_and_cross_off(key, claimed).await,
            // Another delivery took the send first.
            Err(DaprError::Conflict(_)) => Err(HandleError::Sending),
            Err(other) => Err(other.into()),
        }
    }

    /// Sends the email the caller holds, then crosses it off; a failed send is given back at
    /// once, so that the redelivery need not wait for the lease to run out.
    async fn send_and_cross_off(&self, key: &str, held: Handled) -> Result<(), HandleError> {
        let Some(email) = &held.email else {
            return Ok(());
        };
        if let Err(error) = self.send(email).await {
            let released = Handled {
                sending_until: None,
                ..held
            };
            if let Err(also) = self
                .dapr
                .save_state(
                    &self.store,
                    key,
                    &released,
                    Write::always().with_ttl(self.dedupe_ttl),
                )
                .await
            {
                tracing::warn!(error = %also, "giving the email back failed; it waits for the lease");
            }
            return Err(HandleError::Email(error));
        }
        let sent = Handled {
            email: None,
            sending_until: None,
            ..held
        };
        self.dapr
            .save_state(
                &self.store,
                key,
                &sent,
                Write::always().with_ttl(self.dedupe_ttl),
            )
            .await?;
        Ok(())
    }

    /// Sends an email through the output binding: `emailTo` and `subject` for
    /// `bindings.smtp`, `fileName` for `bindings.localstorage` (each ignores the others').
    #[tracing::instrument(skip(self, email), fields(binding = %self.binding))]
    async fn send(&self, email: &OutgoingEmail) -> Result<(), DaprError> {
        let metadata = HashMap::from([
            ("emailTo".to_owned(), email.to.clone()),
            ("subject".to_owned(), email.subject.clone()),
            ("fileName".to_owned(), email.file_name.clone()),
        ]);
        self.dapr
            .invoke_binding(
                &self.binding,
                "create",
                email.html.clone().into_bytes(),
                metadata,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_keys_never_hold_the_dapr_separator() {
        assert_eq!(handled_key("auth", "0190-ab"), "handled:auth:0190-ab");
        let key = handled_key("a||b", "x y/z");
        assert!(!key.contains("||"), "{key}");
        assert_eq!(key, "handled:a%7C%7Cb:x%20y%2Fz");
        assert_ne!(handled_key("a:b", "c"), handled_key("a", "b:c"));
    }
}

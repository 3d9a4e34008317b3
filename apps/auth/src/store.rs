//! Users in the state store: `user:<id>` holds the user, `email:<email>` points at it and makes
//! emails unique (both are created in one transaction, create-only, so two registrations with
//! one email cannot both succeed), and `login-failures:<email>` counts recent failed logins.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kit::dapr::{Dapr, DaprError, StateOperation, Write};
use kit::outbox::Outbox;
use serde::{Deserialize, Serialize};

use crate::domain::{Email, StoredUser, UserId};
use crate::error::ApiError;

/// The users of the shop.
#[derive(Clone)]
pub struct Users {
    dapr: Dapr,
    store: String,
    outbox: Outbox,
}

#[derive(Debug, Serialize, Deserialize)]
struct EmailIndex {
    user_id: UserId,
}

#[derive(Debug, Serialize, Deserialize)]
struct FailedLogins {
    count: u32,
    since: DateTime<Utc>,
}

fn user_key(id: &UserId) -> String {
    format!("user:{id}")
}

fn email_key(email: &Email) -> String {
    format!("email:{}", email.as_str())
}

fn failures_key(email: &Email) -> String {
    format!("login-failures:{}", email.as_str())
}

impl Users {
    /// Users in `store`, announcing registrations through `outbox`.
    pub fn new(dapr: Dapr, store: impl Into<String>, outbox: Outbox) -> Self {
        Self {
            dapr,
            store: store.into(),
            outbox,
        }
    }

    /// Stores a new user and stages its `USER_REGISTERED`; `EmailTaken` if the email is in use.
    #[tracing::instrument(skip(self, user), fields(user_id = %user.id))]
    pub async fn create(&self, user: &StoredUser) -> Result<(), ApiError> {
        for attempt in 0..20 {
            let mut operations = vec![
                StateOperation::upsert(
                    email_key(&user.email),
                    &EmailIndex { user_id: user.id },
                    Write::create_only(),
                )?,
                StateOperation::upsert(user_key(&user.id), user, Write::create_only())?,
            ];
            let mut staged = self
                .outbox
                .stage(&user_key(&user.id), &crate::events::user_registered(user))
                .await?;
            operations.extend(staged.take_operations());
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => {
                    self.outbox.relay_soon(staged);
                    return Ok(());
                }
                // Either the email is taken or the outbox moved on: look which.
                Err(DaprError::Conflict(_)) => {
                    drop(staged);
                    if self.by_email(&user.email).await?.is_some() {
                        return Err(ApiError::EmailTaken);
                    }
                    tokio::time::sleep(Duration::from_millis(5 * (attempt + 1))).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(anyhow::anyhow!("registering kept conflicting with other writes").into())
    }

    /// The user with this email.
    #[tracing::instrument(skip(self))]
    pub async fn by_email(&self, email: &Email) -> Result<Option<StoredUser>, DaprError> {
        let Some(index) = self
            .dapr
            .get_state::<EmailIndex>(&self.store, &email_key(email))
            .await?
        else {
            return Ok(None);
        };
        self.by_id(index.value.user_id).await
    }

    /// The user with this id.
    #[tracing::instrument(skip(self))]
    pub async fn by_id(&self, id: UserId) -> Result<Option<StoredUser>, DaprError> {
        Ok(self
            .dapr
            .get_state::<StoredUser>(&self.store, &user_key(&id))
            .await?
            .map(|user| user.value))
    }

    /// Failed logins for `email` within the window.
    #[tracing::instrument(skip(self))]
    pub async fn failed_logins(&self, email: &Email) -> Result<u32, DaprError> {
        Ok(self
            .dapr
            .get_state::<FailedLogins>(&self.store, &failures_key(email))
            .await?
            .map_or(0, |failures| failures.value.count))
    }

    /// Counts a failed login; the count expires `window` after the first failure.
    #[tracing::instrument(skip(self))]
    pub async fn record_failed_login(
        &self,
        email: &Email,
        window: Duration,
    ) -> Result<(), DaprError> {
        for _ in 0..20 {
            let current = self
                .dapr
                .get_state::<FailedLogins>(&self.store, &failures_key(email))
                .await?;
            let (failures, write) = match current {
                Some(current) => {
                    let elapsed = (Utc::now() - current.value.since)
                        .to_std()
                        .unwrap_or_default();
                    let remaining = window.saturating_sub(elapsed).max(Duration::from_secs(1));
                    let failures = FailedLogins {
                        count: current.value.count + 1,
                        since: current.value.since,
                    };
                    (failures, Write::if_match(current.etag).with_ttl(remaining))
                }
                None => (
                    FailedLogins {
                        count: 1,
                        since: Utc::now(),
                    },
                    Write::create_only().with_ttl(window),
                ),
            };
            match self
                .dapr
                .save_state(&self.store, &failures_key(email), &failures, write)
                .await
            {
                Err(DaprError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Ok(())
    }

    /// Forgets failed logins after a successful one.
    #[tracing::instrument(skip(self))]
    pub async fn clear_failed_logins(&self, email: &Email) -> Result<(), DaprError> {
        self.dapr
            .delete_state(&self.store, &failures_key(email), None)
            .await
    }
}

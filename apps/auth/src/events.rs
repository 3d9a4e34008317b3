//! What the auth app publishes: `USER_REGISTERED`, through the outbox. It consumes nothing.

use contracts::UserRegistered;

use crate::domain::StoredUser;

/// The event announcing `user`.
pub fn user_registered(user: &StoredUser) -> UserRegistered {
    UserRegistered {
        user_id: user.id.as_uuid(),
        email: user.email.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
        registered_at: user.created_at,
    }
}

//! What the app keeps about a user, learnt from `USER_REGISTERED`: enough to greet them.

use serde::{Deserialize, Serialize};

/// A user's address and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Email address.
    pub email: String,
    /// Display name.
    pub name: String,
}

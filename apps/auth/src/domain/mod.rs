//! The auth domain: who users are, how their passwords are kept, and how tokens are signed.

mod password;
mod tokens;
mod user;

pub use password::{Password, PasswordHash};
pub use tokens::{Claims, TokenSigner};
pub use user::{Email, Name, StoredUser, UserId};

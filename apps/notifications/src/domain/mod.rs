//! The notifications domain: what a user is told, how it reads in an email, and whom to address.

mod contact;
mod notification;

pub use contact::Contact;
pub use notification::{
    Cursor, Draft, Kind, Message, Notification, NotificationId, OutgoingEmail, Page, newest_first,
};

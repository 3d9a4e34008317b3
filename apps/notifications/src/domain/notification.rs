//! Notifications: what an event tells a user, kept in their history, pushed live and mailed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A notification id: time-ordered, and the `id` of its server-sent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NotificationId(Uuid);

impl NotificationId {
    /// A new id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses an id (a `Last-Event-ID` or a cursor).
    pub fn parse(text: &str) -> Result<Self, String> {
        Uuid::parse_str(text.trim())
            .map(Self)
            .map_err(|_| "is not a notification id".to_owned())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for NotificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The account was created.
    Welcome,
    /// An order was placed and awaits payment.
    OrderCreated,
    /// An order was paid and confirmed.
    OrderConfirmed,
    /// An order was cancelled.
    OrderCancelled,
    /// A payment went through.
    PaymentSucceeded,
    /// A payment was refused.
    PaymentFailed,
}

/// The words of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// One line: the email's subject.
    pub title: String,
    /// A few sentences.
    pub body: String,
}

/// A notification an event asks for, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Whom it is for.
    pub user_id: Uuid,
    /// Where the email goes.
    pub recipient: String,
    /// What happened.
    pub kind: Kind,
    /// The order concerned.
    pub order_id: Option<Uuid>,
    /// What it says.
    pub message: Message,
}

/// A notification in a user's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Its id.
    pub id: NotificationId,
    /// Whom it is for.
    pub user_id: Uuid,
    /// What happened.
    pub kind: Kind,
    /// The order concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// What it says.
    pub message: Message,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// An email ready for the output binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingEmail {
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The body, HTML (the SMTP binding sends HTML).
    pub html: String,
    /// A file name for bindings that store mail as files (`localstorage`).
    pub file_name: String,
}

impl Draft {
    /// The notification, made `now`.
    pub fn into_notification(self, now: DateTime<Utc>) -> (Notification, OutgoingEmail) {
        let notification = Notification {
            id: NotificationId::generate(),
            user_id: self.user_id,
            kind: self.kind,
            order_id: self.order_id,
            message: self.message,
            created_at: now,
        };
        let email = OutgoingEmail {
            to: self.recipient,
            subject: notification.message.title.clone(),
            html: html(&notification.message),
            file_name: format!("{}/{}.html", notification.user_id, notification.id),
        };
        (notification, email)
    }
}

/// A small HTML document; every text is escaped (names come from users).
fn html(message: &Message) -> String {
    let title = escape(&message.title);
    let paragraphs: String = message
        .body
        .split("\n\n")
        .map(|paragraph| format!("<p>{}</p>", escape(paragraph)))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1>{paragraphs}<p>The shop</p></body></html>\n"
    )
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_escapes_what_users_wrote() {
        let draft = Draft {
            user_id: Uuid::new_v4(),
            recipient: "ada@example.com".into(),
            kind: Kind::Welcome,
            order_id: None,
            message: Message {
                title: "Welcome, <b>Ada</b>".into(),
                body: "Hi <script>x</script>.\n\nBye & thanks.".into(),
            },
        };
        let (notification, email) = draft.into_notification(Utc::now());
        assert!(email.html.contains("Welcome, &lt;b&gt;Ada&lt;/b&gt;"));
        assert!(
            email
                .html
                .contains("<p>Hi &lt;script&gt;x&lt;/script&gt;.</p><p>Bye &amp; thanks.</p>")
        );
        assert!(!email.html.contains("<script>"));
        assert_eq!(
            email.subject, "Welcome, <b>Ada</b>",
            "subjects are plain text"
        );
        assert_eq!(
            email.file_name,
            format!("{}/{}.html", notification.user_id, notification.id)
        );
    }
}

/// Where a reader of a history is: before its first notification, or after one it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Nothing seen yet.
    Start,
    /// Everything up to this one seen.
    After(NotificationId),
}

impl Cursor {
    /// The notifications of `history` (oldest first) that come after the cursor. An id the
    /// history no longer holds (dropped as too old, or never there) gives the whole history:
    /// the reader has missed more than it keeps.
    pub fn unseen<'a>(&self, history: &'a [Notification]) -> &'a [Notification] {
        match self {
            Self::Start => history,
            Self::After(id) => match history.iter().position(|n| n.id == *id) {
                Some(seen) => &history[seen + 1..],
                None => history,
            },
        }
    }

    /// The cursor at the end of `history`.
    pub fn end_of(history: &[Notification]) -> Self {
        history.last().map_or(Self::Start, |n| Self::After(n.id))
    }
}

/// A page of a history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<'a> {
    /// The notifications.
    pub items: Vec<&'a Notification>,
    /// Where the next (older) page starts, if there is one.
    pub next: Option<NotificationId>,
}

/// Up to `limit` notifications of `history` (oldest first), newest first, older than `before`.
/// A `before` the history no longer holds (dropped as too old) leaves nothing older to show.
pub fn newest_first(
    history: &[Notification],
    before: Option<NotificationId>,
    limit: usize,
) -> Page<'_> {
    let mut older = history.iter().rev();
    if let Some(before) = before
        && !older.by_ref().any(|n| n.id == before)
    {
        return Page {
            items: Vec::new(),
            next: None,
        };
    }
    let items: Vec<&Notification> = older.by_ref().take(limit).collect();
    let next = older
        .next()
        .is_some()
        .then(|| items.last().map(|n| n.id))
        .flatten();
    Page { items, next }
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    fn history(n: usize) -> Vec<Notification> {
        let user_id = Uuid::new_v4();
        (0..n)
            .map(|i| Notification {
                id: NotificationId::generate(),
                user_id,
                kind: Kind::Welcome,
                order_id: None,
                message: Message {
                    title: format!("n{i}"),
                    body: String::new(),
                },
                created_at: Utc::now(),
            })
            .collect()
    }

    #[test]
    fn a_cursor_gives_what_comes_after_it() {
        let history = history(4);
        assert_eq!(Cursor::Start.unseen(&history).len(), 4);
        assert_eq!(Cursor::After(history[1].id).unseen(&history), &history[2..]);
        assert!(Cursor::end_of(&history).unseen(&history).is_empty());
        assert_eq!(Cursor::end_of(&[]), Cursor::Start);
        let forgotten = NotificationId::generate();
        assert_eq!(Cursor::After(forgotten).unseen(&history).len(), 4);
    }

    #[test]
    fn pages_go_from_newest_to_oldest() {
        let history = history(5);
        let first = newest_first(&history, None, 2);
        assert_eq!(first.items, [&history[4], &history[3]]);
        assert_eq!(first.next, Some(history[3].id));
        let last = newest_first(&history, Some(history[1].id), 2);
        assert_eq!(last.items, [&history[0]]);
        assert_eq!(last.next, None);
        let gone = newest_first(&history, Some(NotificationId::generate()), 2);
        assert!(gone.items.is_empty());
    }
}

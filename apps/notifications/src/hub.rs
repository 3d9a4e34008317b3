//! Wakes the open streams of a user when a notification for them is stored. Only the user's id
//! travels: each stream then reads the history, which stays the one source of truth (order,
//! no duplicates, and the same path as a resumed stream).

use tokio::sync::broadcast;
use uuid::Uuid;

/// Wake-ups for the streams of this replica.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Uuid>,
}

impl Default for Hub {
    fn default() -> Self {
        // A stream that falls behind just reads the history again, so a lagging receiver
        // loses nothing.
        let (sender, _) = broadcast::channel(1024);
        Self { sender }
    }
}

impl Hub {
    /// Tells the streams of `user` that their history changed.
    pub fn wake(&self, user: Uuid) {
        // No open stream is not an error.
        let _ = self.sender.send(user);
    }

    /// Wake-ups from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.sender.subscribe()
    }
}

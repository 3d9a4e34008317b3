//! What the simulator remembers, in memory and bounded: charges (the oldest are forgotten past
//! `max_charges`) and the answers given to idempotency keys (past `max_idempotency_keys`).
//!
//! Idempotency follows the usual provider contract: a key first seen is claimed while its request
//! runs (a concurrent request with the same key is refused); the answer is stored when the
//! request succeeds, and replayed for the same key and the same request; the same key with
//! another request is refused. A request that fails (bad state, simulated outage) releases its
//! key, so that retrying it is safe.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher as _, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};

use crate::domain::{Amount, Charge, ChargeId, Refund, RefundError};

/// A stored answer to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body, as first sent.
    pub body: Bytes,
}

#[derive(Debug)]
enum Slot {
    Running {
        fingerprint: u64,
    },
    Answered {
        fingerprint: u64,
        answer: StoredAnswer,
    },
}

impl Slot {
    fn fingerprint(&self) -> u64 {
        match self {
            Self::Running { fingerprint } | Self::Answered { fingerprint, .. } => *fingerprint,
        }
    }
}

/// What an idempotency key says about a request.
#[derive(Debug)]
pub enum Claim {
    /// New: run the request, then [`KeyClaim::answer`].
    Fresh(KeyClaim),
    /// Seen with the same request: send this again.
    Replay(StoredAnswer),
    /// Seen with another request.
    Mismatch,
    /// The same request with this key is running now.
    InUse,
}

/// Why a refund could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundFailure {
    /// No such charge (or forgotten).
    #[error("no such charge")]
    UnknownCharge,
    /// The charge refused it.
    #[error(transparent)]
    Refused(#[from] RefundError),
}

struct Inner {
    charges: HashMap<ChargeId, Charge>,
    charge_order: VecDeque<ChargeId>,
    keys: HashMap<String, Slot>,
    key_order: VecDeque<String>,
}

/// The simulator's memory.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Mutex<Inner>>,
    hasher: RandomState,
    max_charges: usize,
    max_keys: usize,
}

impl Ledger {
    /// An empty ledger keeping at most `max_charges` charges and `max_keys` idempotency keys.
    pub fn new(max_charges: usize, max_keys: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                charges: HashMap::new(),
                charge_order: VecDeque::new(),
                keys: HashMap::new(),
                key_order: VecDeque::new(),
            })),
            hasher: RandomState::new(),
            max_charges,
            max_keys,
        }
    }

    // The lock is never held across an await, and a panic while holding it leaves consistent
    // maps (every change is a single insert or update), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fingerprint of a request to `endpoint` (the request itself is not kept: it holds a card
    /// number).
    pub fn fingerprint(&self, endpoint: &str, request: &impl Hash) -> u64 {
        self.hasher.hash_one((endpoint, request))
    }

    /// Claims `key` for a request with `fingerprint`.
    pub fn claim(&self, key: &str, fingerprint: u64) -> Claim {
        let mut inner = self.lock();
        match inner.keys.entry(key.to_owned()) {
            Entry::Occupied(slot) if slot.get().fingerprint() != fingerprint => Claim::Mismatch,
            Entry::Occupied(slot) => match slot.get() {
                Slot::Running { .. } => Claim::InUse,
                Slot::Answered { answer, .. } => Claim::Replay(answer.clone()),
            },
            Entry::Vacant(slot) => {
                slot.insert(Slot::Running { fingerprint });
                inner.key_order.push_back(key.to_owned());
                forget_oldest_keys(&mut inner, self.max_keys);
                Claim::Fresh(KeyClaim {
                    ledger: self.clone(),
                    key: Some(key.to_owned()),
                })
            }
        }
    }

    /// Stores a charge.
    pub fn insert(&self, charge: Charge) {
        let mut inner = self.lock();
        inner.charge_order.push_back(charge.id.clone());
        inner.charges.insert(charge.id.clone(), charge);
        while inner.charges.len() > self.max_charges {
            let Some(oldest) = inner.charge_order.pop_front() else {
                break;
            };
            inner.charges.remove(&oldest);
        }
    }

    /// A charge as it is now.
    pub fn charge(&self, id: &ChargeId) -> Option<Charge> {
        self.lock().charges.get(id).cloned()
    }

    /// Refunds (part of) a charge; checking what is left and taking it happen under one lock,
    /// so concurrent refunds never take more than the charge.
    pub fn refund(
        &self,
        id: &ChargeId,
        amount: Option<Amount>,
        now: DateTime<Utc>,
    ) -> Result<(Refund, Charge), RefundFailure> {
        let mut inner = self.lock();
        let charge = inner
            .charges
            .get_mut(id)
            .ok_or(RefundFailure::UnknownCharge)?;
        let refund = charge.refund(amount, now)?;
        Ok((refund, charge.clone()))
    }

    /// How many idempotency keys are remembered.
    pub fn remembered_keys(&self) -> usize {
        self.lock().keys.len()
    }
}

/// Forgets the oldest answered keys past `max`; running requests keep theirs.
fn forget_oldest_keys(inner: &mut Inner, max: usize) {
    let mut skipped = 0;
    while inner.keys.len() > max && skipped < inner.key_order.len() {
        let Some(oldest) = inner.key_order.pop_front() else {
            break;
        };
        if matches!(inner.keys.get(&oldest), Some(Slot::Running { .. })) {
            inner.key_order.push_back(oldest);
            skipped += 1;
        } else {
            inner.keys.remove(&oldest);
        }
    }
}

/// A claimed idempotency key: answered with [`KeyClaim::answer`], or released when dropped.
#[derive(Debug)]
pub struct KeyClaim {
    ledger: Ledger,
    key: Option<String>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl KeyClaim {
    /// Stores `answer` for the key, to be replayed.
    pub fn answer(mut self, answer: StoredAnswer) {
        if let Some(key) = self.key.take() {
            let mut inner = self.ledger.lock();
            if let Some(slot) = inner.keys.get_mut(&key) {
                let fingerprint = slot.fingerprint();
                *slot = Slot::Answered {
                    fingerprint,
                    answer,
                };
            }
        }
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut inner = self.ledger.lock();
            if matches!(inner.keys.get(&key), Some(Slot::Running { .. })) {
                inner.keys.remove(&key);
                inner.key_order.retain(|k| k != &key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: i64) -> StoredAnswer {
        StoredAnswer {
            status: StatusCode::CREATED,
            body: Bytes::from(format!("{{\"n\":{n}}}")),
        }
    }

    #[test]
    fn a_key_is_replayed_refused_or_released_as_its_request_went() {
        let ledger = Ledger::new(10, 10);
        let Claim::Fresh(claim) = ledger.claim("k1", 1) else {
            panic!("a new key is fresh");
        };
        assert!(matches!(ledger.claim("k1", 1), Claim::InUse));
        assert!(matches!(ledger.claim("k1", 2), Claim::Mismatch));
        claim.answer(answer(1));
        assert!(matches!(ledger.claim("k1", 1), Claim::Replay(a) if a == answer(1)));
        assert!(matches!(ledger.claim("k1", 2), Claim::Mismatch));

        let Claim::Fresh(claim) = ledger.claim("k2", 1) else {
            panic!("a new key is fresh");
        };
        drop(claim);
        assert!(
            matches!(ledger.claim("k2", 1), Claim::Fresh(_)),
            "a failed request released its key"
        );
    }

    #[test]
    fn the_oldest_answers_are_forgotten_past_the_bound() {
        let ledger = Ledger::new(10, 3);
        for n in 0..5 {
            let Claim::Fresh(claim) = ledger.claim(&format!("k{n}"), 1) else {
                panic!("fresh");
            };
            claim.answer(answer(n));
        }
        assert_eq!(ledger.remembered_keys(), 3);
        assert!(matches!(ledger.claim("k4", 1), Claim::Replay(_)));
        assert!(matches!(ledger.claim("k0", 1), Claim::Fresh(_)));
    }
}

//! Per-client rate limiting: a token bucket per IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often buckets that have filled up again are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct Buckets {
    by_client: HashMap<IpAddr, Bucket>,
    pruned: Instant,
}

/// Token buckets: each client may send `burst` requests at once, then `per_second`.
#[derive(Debug)]
pub struct TokenBuckets {
    per_second: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

impl TokenBuckets {
    /// Buckets of `burst` tokens refilled at `per_second` (which must be above 0).
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Buckets {
                by_client: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// Takes a token for `client` at `now`; when there is none, how long until there is one.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let client = canonical(client);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(buckets.pruned) >= PRUNE_EVERY {
            // A bucket that has refilled is the same as no bucket: forget it to bound memory.
            let (per_second, burst) = (self.per_second, self.burst);
            buckets
                .by_client
                .retain(|_, bucket| refilled(bucket, now, per_second, burst) < burst);
            buckets.pruned = now;
        }
        let bucket = buckets.by_client.entry(client).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = refilled(bucket, now, self.per_second, self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    /// How many clients are tracked.
    pub fn clients(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_client
            .len()
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

/// IPv4 clients reaching a dual-stack socket appear as `::ffff:a.b.c.d`: one client, one bucket.
fn canonical(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const BOB: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let buckets = TokenBuckets::new(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            buckets.take(ALICE, start).expect("within the burst");
        }
        let wait = buckets.take(ALICE, start).expect_err("burst used up");
        assert_eq!(wait, Duration::from_millis(500));
        buckets
            .take(ALICE, start + Duration::from_millis(500))
            .expect("one token refilled");
        buckets
            .take(ALICE, start + Duration::from_millis(600))
            .expect_err("not yet another");
    }

    #[test]
    fn clients_have_buckets_of_their_own() {
        let buckets = TokenBuckets::new(1.0, 1);
        let now = Instant::now();
        buckets.take(ALICE, now).expect("first");
        buckets.take(ALICE, now).expect_err("limited");
        buckets.take(BOB, now).expect("another client");
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped());
        buckets
            .take(mapped, now)
            .expect_err("the same client over IPv6");
        buckets
            .take(IpAddr::V6(Ipv6Addr::LOCALHOST), now)
            .expect("a third client");
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let buckets = TokenBuckets::new(10.0, 5);
        let now = Instant::now();
        buckets.take(ALICE, now).expect("first");
        buckets.take(BOB, now).expect("first");
        assert_eq!(buckets.clients(), 2);
        buckets.take(BOB, now + PRUNE_EVERY).expect("later");
        assert_eq!(buckets.clients(), 1, "only the client just seen is kept");
    }
}

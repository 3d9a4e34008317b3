//! Resiliency at run time: the merged policies of every `Resiliency` document, and circuit
//! breakers that trip on a CEL expression over their counts (as daprd's sony/gobreaker wrapper).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt as _;

use crate::resources::{
    CircuitBreakerPolicy, ComponentPolicies, Resiliency, RetryBackoff, TargetPolicies,
};

/// Policies by target, with the circuit breakers they created.
#[derive(Default)]
pub struct Policies {
    apps: BTreeMap<String, TargetPolicies>,
    components: BTreeMap<String, ComponentPolicies>,
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
}

/// Most circuit breakers kept per target (daprd's default `circuitBreakerCacheSize`).
const BREAKER_CACHE_SIZE: usize = 100;

impl Policies {
    /// Merges `resiliencies`; a later document's target replaces an earlier one's.
    pub fn new(resiliencies: &[Resiliency]) -> Self {
        let mut policies = Self::default();
        for resiliency in resiliencies {
            policies
                .apps
                .extend(resiliency.apps.iter().map(|(k, v)| (k.clone(), v.clone())));
            policies.components.extend(
                resiliency
                    .components
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        policies
    }

    /// The policies for invoking `app_id`, if any.
    pub fn app(&self, app_id: &str) -> Option<&TargetPolicies> {
        self.apps.get(app_id)
    }

    /// The policies for component `name`, if any.
    pub fn component(&self, name: &str) -> Option<&ComponentPolicies> {
        self.components.get(name)
    }

    /// The breaker for `key` (daprd keys invocation breakers by app and method).
    pub fn breaker(&self, key: &str, policy: &CircuitBreakerPolicy) -> Arc<Breaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(breaker) = breakers.get(key) {
            return breaker.clone();
        }
        if breakers.len() >= BREAKER_CACHE_SIZE {
            // Forget closed breakers first; they hold no state worth keeping.
            breakers.retain(|_, breaker| !breaker.is_closed());
            if breakers.len() >= BREAKER_CACHE_SIZE {
                breakers.clear();
            }
        }
        let breaker = Arc::new(Breaker::new(policy.clone()));
        breakers.insert(key.to_owned(), breaker.clone());
        breaker
    }
}

/// The wait before retry `attempt` (1-based), with daprd's ±50% jitter on exponential backoff.
pub fn retry_delay(backoff: &RetryBackoff, attempt: u32) -> Duration {
    let delay = backoff.delay(attempt);
    match backoff {
        RetryBackoff::Constant(_) => delay,
        RetryBackoff::Exponential { .. } => delay.mul_f64(rand::rng().random_range(0.5..1.5)),
    }
}

/// gobreaker's counts, the variables a `trip` expression sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests let through.
    pub requests: u32,
    /// Successes.
    pub total_successes: u32,
    /// Failures.
    pub total_failures: u32,
    /// Successes since the last failure.
    pub consecutive_successes: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { since: Instant },
    Open { until: Instant },
    HalfOpen { in_flight: u32 },
}

/// The breaker refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BreakerRejection {
    /// The breaker is open.
    #[error("circuit breaker is open")]
    Open,
    /// The breaker is half-open and its trial requests are taken.
    #[error("too many requests")]
    TooManyRequests,
}

/// One circuit breaker.
pub struct Breaker {
    policy: CircuitBreakerPolicy,
    trip: Option<cel::Program>,
    inner: Mutex<(State, Counts)>,
}

impl Breaker {
    fn new(policy: CircuitBreakerPolicy) -> Self {
        // The expression was compiled when the resource was loaded; failing here is not expected.
        let trip = cel::Program::compile(&policy.trip).ok();
        Self {
            policy,
            trip,
            inner: Mutex::new((
                State::Closed {
                    since: Instant::now(),
                },
                Counts::default(),
            )),
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self.lock().0, State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Counts)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to let one call through; every `Ok` must be followed by [`Breaker::record`].
    pub fn acquire(&self) -> Result<(), BreakerRejection> {
        let mut guard = self.lock();
        let now = Instant::now();
        let (state, counts) = &mut *guard;
        match *state {
            State::Closed { since } => {
                if !self.policy.interval.is_zero()
                    && now.duration_since(since) >= self.policy.interval
                {
                    *state = State::Closed { since: now };
                    *counts = Counts::default();
                }
            }
            State::Open { until } if now < until => return Err(BreakerRejection::Open),
            State::Open { .. } => {
                *state = State::HalfOpen { in_flight: 0 };
                *counts = Counts::default();
            }
            State::HalfOpen { .. } => {}
        }
        if let State::HalfOpen { in_flight } = state {
            if *in_flight >= self.policy.max_requests {
                return Err(BreakerRejection::TooManyRequests);
            }
            *in_flight += 1;
        }
        counts.requests += 1;
        Ok(())
    }

    /// Records the outcome of a call that [`Breaker::acquire`] let through.
    pub fn record(&self, success: bool) {
        let mut guard = self.lock();
        let (state, counts) = &mut *guard;
        if success {
            counts.total_successes += 1;
            counts.consecutive_successes += 1;
            counts.consecutive_failures = 0;
            if let State::HalfOpen { .. } = state
                && counts.consecutive_successes >= self.policy.max_requests
            {
                *state = State::Closed {
                    since: Instant::now(),
                };
                *counts = Counts::default();
            }
        } else {
            counts.total_failures += 1;
            counts.consecutive_failures += 1;
            counts.consecutive_successes = 0;
            let trip = match state {
                State::HalfOpen { .. } => true,
                State::Closed { .. } => self.ready_to_trip(counts),
                State::Open { .. } => false,
            };
            if trip {
                tracing::warn!(policy = %self.policy.name, "circuit breaker opened");
                *state = State::Open {
                    until: Instant::now() + self.policy.timeout,
                };
                *counts = Counts::default();
            }
        }
    }

    fn ready_to_trip(&self, counts: &Counts) -> bool {
        let Some(program) = &self.trip else {
            return counts.consecutive_failures > 5;
        };
        let mut context = cel::Context::default();
        for (name, value) in [
            ("requests", counts.requests),
            ("totalSuccesses", counts.total_successes),
            ("totalFailures", counts.total_failures),
            ("consecutiveSuccesses", counts.consecutive_successes),
            ("consecutiveFailures", counts.consecutive_failures),
        ] {
            context.add_variable_from_value(name, i64::from(value));
        }
        // As daprd: an expression that fails or is not a boolean never trips.
        matches!(program.execute(&context), Ok(cel::Value::Bool(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(trip: &str, timeout: Duration) -> Breaker {
        Breaker::new(CircuitBreakerPolicy {
            name: "cb".into(),
            max_requests: 1,
            interval: Duration::ZERO,
            timeout,
            trip: trip.into(),
        })
    }

    #[test]
    fn the_breaker_opens_when_the_trip_expression_holds() {
        let breaker = breaker("consecutiveFailures >= 2", Duration::from_secs(60));
        for _ in 0..2 {
            breaker.acquire().expect("closed");
            breaker.record(false);
        }
        assert_eq!(breaker.acquire(), Err(BreakerRejection::Open));
    }

    #[test]
    fn a_success_resets_consecutive_failures() {
        let breaker = breaker("consecutiveFailures >= 2", Duration::from_secs(60));
        for success in [false, true, false] {
            breaker.acquire().expect("closed");
            breaker.record(success);
        }
        assert_eq!(breaker.acquire(), Ok(()));
    }

    #[test]
    fn after_the_timeout_one_trial_call_closes_or_reopens_the_breaker() {
        let breaker = breaker("consecutiveFailures >= 1", Duration::from_millis(20));
        breaker.acquire().expect("closed");
        breaker.record(false);
        std::thread::sleep(Duration::from_millis(30));
        breaker.acquire().expect("half-open lets one through");
        assert_eq!(breaker.acquire(), Err(BreakerRejection::TooManyRequests));
        breaker.record(true);
        assert_eq!(breaker.acquire(), Ok(()), "closed again after a good trial");
    }

    #[test]
    fn a_failing_trial_reopens_the_breaker() {
        let breaker = breaker("consecutiveFailures >= 1", Duration::from_millis(20));
        breaker.acquire().expect("closed");
        breaker.record(false);
        std::thread::sleep(Duration::from_millis(30));
        breaker.acquire().expect("half-open");
        breaker.record(false);
        assert_eq!(breaker.acquire(), Err(BreakerRejection::Open));
    }
}

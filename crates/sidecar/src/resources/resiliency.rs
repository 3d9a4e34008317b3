//! The `Resiliency` resource: named timeout, retry and circuit-breaker policies and their targets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{ObjectMeta, ResourceError, Scalar, decode, duration};

/// A parsed `Resiliency` document with its named policies resolved into each target.
#[derive(Debug, Clone, Default)]
pub struct Resiliency {
    /// `metadata.name`.
    pub name: String,
    /// `scopes`.
    pub scopes: Vec<String>,
    /// `targets.apps`, keyed by app id.
    pub apps: BTreeMap<String, TargetPolicies>,
    /// `targets.components`, keyed by component name.
    pub components: BTreeMap<String, ComponentPolicies>,
}

/// The policies that apply to one target (an app, or one direction of a component).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetPolicies {
    /// Time limit for each attempt.
    pub timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<RetryPolicy>,
    /// Circuit breaker, with its policy name (breakers are shared per name and target).
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
}

/// A component's outbound (sidecar → component) and inbound (component → app) policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComponentPolicies {
    /// Calls from the sidecar into the component.
    pub outbound: TargetPolicies,
    /// Deliveries from the component to the app (pub/sub, input bindings).
    pub inbound: TargetPolicies,
}

/// A retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// How long to wait between attempts.
    pub backoff: RetryBackoff,
    /// Retries after the first attempt; `None` retries forever (Dapr's `-1`).
    pub max_retries: Option<u32>,
    /// Which failures are retried.
    pub matching: StatusMatcher,
}

/// Constant or exponential backoff.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryBackoff {
    /// The same wait every time.
    Constant(Duration),
    /// Dapr's exponential backoff: 500ms initial interval, ×1.5, ±50% jitter, capped.
    Exponential {
        /// The first wait.
        initial: Duration,
        /// The longest wait.
        max_interval: Duration,
    },
}

impl RetryBackoff {
    /// The wait before retry number `attempt` (1-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        match self {
            Self::Constant(delay) => *delay,
            Self::Exponential {
                initial,
                max_interval,
            } => {
                let factor =
                    1.5f64.powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX));
                let delay = initial.as_secs_f64() * factor;
                Duration::from_secs_f64(delay.min(max_interval.as_secs_f64()))
            }
        }
    }
}

/// `matching.httpStatusCodes` / `matching.gRPCStatusCodes`: which status codes are retried.
/// Empty lists mean Dapr's defaults (every failure is retried).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusMatcher {
    /// Inclusive ranges of HTTP status codes.
    pub http: Vec<(u16, u16)>,
    /// Inclusive ranges of gRPC status codes.
    pub grpc: Vec<(u16, u16)>,
}

impl StatusMatcher {
    /// Whether a failed HTTP call that answered `status` is retried: every failure when no
    /// codes are listed (daprd retries any error status then), else only the listed codes.
    pub fn retries_http(&self, status: u16) -> bool {
        self.http.is_empty()
            || self
                .http
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    fn parse(text: &str, max: u16) -> Result<Vec<(u16, u16)>, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (part, part),
            };
            let parse = |s: &str| {
                s.parse::<u16>()
                    .ok()
                    .filter(|code| *code <= max)
                    .ok_or_else(|| format!("invalid status code {s:?} in {text:?}"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("invalid range {part:?} in {text:?}"));
            }
            ranges.push((lo, hi));
        }
        Ok(ranges)
    }
}

/// A circuit breaker policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerPolicy {
    /// The policy's name.
    pub name: String,
    /// Requests allowed through while half-open (default 1).
    pub max_requests: u32,
    /// How often the closed state's counts are reset (0 = never).
    pub interval: Duration,
    /// How long the breaker stays open before trying half-open (default 60s).
    pub timeout: Duration,
    /// The CEL expression that trips the breaker, e.g. `consecutiveFailures > 5`.
    pub trip: String,
}

#[derive(Deserialize)]
struct ResiliencyDoc {
    metadata: ObjectMeta,
    #[serde(default)]
    scopes: Vec<String>,
    spec: SpecDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecDoc {
    #[serde(default)]
    policies: PoliciesDoc,
    #[serde(default)]
    targets: TargetsDoc,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoliciesDoc {
    #[serde(default)]
    timeouts: BTreeMap<String, Scalar>,
    #[serde(default)]
    retries: BTreeMap<String, RetryDoc>,
    #[serde(default)]
    circuit_breakers: BTreeMap<String, CircuitBreakerDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RetryDoc {
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    duration: Option<Scalar>,
    #[serde(default)]
    max_interval: Option<Scalar>,
    #[serde(default)]
    max_retries: Option<i64>,
    #[serde(default)]
    matching: Option<MatchingDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchingDoc {
    #[serde(default, rename = "httpStatusCodes")]
    http_status_codes: Option<String>,
    #[serde(default, rename = "gRPCStatusCodes")]
    grpc_status_codes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CircuitBreakerDoc {
    #[serde(default)]
    max_requests: Option<u32>,
    #[serde(default)]
    interval: Option<Scalar>,
    #[serde(default)]
    timeout: Option<Scalar>,
    #[serde(default)]
    trip: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TargetsDoc {
    #[serde(default)]
    apps: BTreeMap<String, TargetDoc>,
    /// Actor targets are accepted (so daprd's files load) but unused: there are no actors here.
    #[serde(default, rename = "actors")]
    _actors: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    components: BTreeMap<String, ComponentTargetDoc>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TargetDoc {
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retry: Option<String>,
    #[serde(default)]
    circuit_breaker: Option<String>,
    /// Accepted for compatibility; breakers are kept in a cache of daprd's default size.
    #[serde(default, rename = "circuitBreakerCacheSize")]
    _circuit_breaker_cache_size: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ComponentTargetDoc {
    #[serde(default)]
    outbound: TargetDoc,
    #[serde(default)]
    inbound: TargetDoc,
}

/// A policy duration: a Go duration, or as daprd's config decoder reads it, a bare number of
/// milliseconds.
fn policy_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(millis) => Ok(Duration::from_millis(millis)),
        Err(_) => duration::parse(text),
    }
}

impl Resiliency {
    pub(crate) fn parse(file: &Path, value: serde_yaml_ng::Value) -> Result<Self, ResourceError> {
        let doc: ResiliencyDoc = decode(file, "Resiliency", value)?;
        let name = doc.metadata.name;
        let error = |field: String, message: String| {
            ResourceError::new(file, message)
                .resource("Resiliency", &name)
                .field(field)
        };
        let policies = doc.spec.policies;

        let mut timeouts = BTreeMap::new();
        for (key, text) in &policies.timeouts {
            let parsed = policy_duration(&text.0)
                .map_err(|e| error(format!("spec.policies.timeouts.{key}"), e))?;
            timeouts.insert(key.clone(), parsed);
        }

        let mut retries = BTreeMap::new();
        for (key, retry) in &policies.retries {
            let field = |f: &str| format!("spec.policies.retries.{key}.{f}");
            let parse_duration = |f: &str, text: &Option<Scalar>, default: Duration| match text {
                Some(t) => policy_duration(&t.0).map_err(|e| error(field(f), e)),
                None => Ok(default),
            };
            let backoff = match retry.policy.as_deref().unwrap_or("constant") {
                "constant" => RetryBackoff::Constant(parse_duration(
                    "duration",
                    &retry.duration,
                    Duration::from_secs(5),
                )?),
                "exponential" => RetryBackoff::Exponential {
                    initial: parse_duration(
                        "duration",
                        &retry.duration,
                        Duration::from_millis(500),
                    )?,
                    max_interval: parse_duration(
                        "maxInterval",
                        &retry.max_interval,
                        Duration::from_secs(60),
                    )?,
                },
                other => {
                    return Err(error(
                        field("policy"),
                        format!("expected `constant` or `exponential`, got {other:?}"),
                    ));
                }
            };
            let max_retries = match retry.max_retries {
                None | Some(-1) => None,
                Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                Some(n) => {
                    return Err(error(
                        field("maxRetries"),
                        format!("expected -1 (forever) or a count, got {n}"),
                    ));
                }
            };
            let mut matching = StatusMatcher::default();
            if let Some(m) = &retry.matching {
                if let Some(text) = &m.http_status_codes {
                    matching.http = StatusMatcher::parse(text, 599)
                        .map_err(|e| error(field("matching.httpStatusCodes"), e))?;
                }
                if let Some(text) = &m.grpc_status_codes {
                    matching.grpc = StatusMatcher::parse(text, 16)
                        .map_err(|e| error(field("matching.gRPCStatusCodes"), e))?;
                }
            }
            retries.insert(
                key.clone(),
                RetryPolicy {
                    backoff,
                    max_retries,
                    matching,
                },
            );
        }

        let mut breakers = BTreeMap::new();
        for (key, cb) in &policies.circuit_breakers {
            let field = |f: &str| format!("spec.policies.circuitBreakers.{key}.{f}");
            let parse_duration = |f: &str, text: &Option<Scalar>, default: Duration| match text {
                Some(t) => policy_duration(&t.0).map_err(|e| error(field(f), e)),
                None => Ok(default),
            };
            let trip = cb
                .trip
                .clone()
                .unwrap_or_else(|| "consecutiveFailures > 5".into());
            if let Err(e) = cel::Program::compile(&trip) {
                return Err(error(field("trip"), format!("invalid expression: {e}")));
            }
            breakers.insert(
                key.clone(),
                CircuitBreakerPolicy {
                    name: key.clone(),
                    max_requests: cb.max_requests.unwrap_or(1).max(1),
                    interval: parse_duration("interval", &cb.interval, Duration::ZERO)?,
                    timeout: parse_duration("timeout", &cb.timeout, Duration::from_secs(60))?,
                    trip,
                },
            );
        }

        let resolve =
            |field: String, target: &TargetDoc| -> Result<TargetPolicies, ResourceError> {
                let timeout = match &target.timeout {
                    None => None,
                    Some(key) => Some(match timeouts.get(key) {
                        Some(t) => *t,
                        // Dapr also accepts a duration written in place of a policy name.
                        None => policy_duration(key).map_err(|_| {
                            error(
                                format!("{field}.timeout"),
                                format!("no timeout policy named {key:?}"),
                            )
                        })?,
                    }),
                };
                let retry = match &target.retry {
                    None => None,
                    Some(key) => Some(retries.get(key).cloned().ok_or_else(|| {
                        error(
                            format!("{field}.retry"),
                            format!("no retry policy named {key:?}"),
                        )
                    })?),
                };
                let circuit_breaker = match &target.circuit_breaker {
                    None => None,
                    Some(key) => Some(breakers.get(key).cloned().ok_or_else(|| {
                        error(
                            format!("{field}.circuitBreaker"),
                            format!("no circuit breaker policy named {key:?}"),
                        )
                    })?),
                };
                Ok(TargetPolicies {
                    timeout,
                    retry,
                    circuit_breaker,
                })
            };

        let mut apps = BTreeMap::new();
        for (app, target) in &doc.spec.targets.apps {
            apps.insert(
                app.clone(),
                resolve(format!("spec.targets.apps.{app}"), target)?,
            );
        }
        let mut components = BTreeMap::new();
        for (component, target) in &doc.spec.targets.components {
            let field = format!("spec.targets.components.{component}");
            components.insert(
                component.clone(),
                ComponentPolicies {
                    outbound: resolve(format!("{field}.outbound"), &target.outbound)?,
                    inbound: resolve(format!("{field}.inbound"), &target.inbound)?,
                },
            );
        }
        Ok(Self {
            name,
            scopes: doc.scopes,
            apps,
            components,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Resiliency, ResourceError> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("test YAML parses");
        Resiliency::parse(Path::new("resiliency.yaml"), value)
    }

    const DOC: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: r}
spec:
  policies:
    timeouts: {fast: 2s}
    retries:
      important: {policy: exponential, maxInterval: 10s, maxRetries: 3, matching: {httpStatusCodes: "429,500-599"}}
      forever: {policy: constant, duration: 1s, maxRetries: -1}
    circuitBreakers:
      cb: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures >= 3}
  targets:
    apps:
      inventory: {timeout: fast, retry: important, circuitBreaker: cb}
    components:
      pubsub: {inbound: {retry: forever}}
"#;

    #[test]
    fn targets_resolve_their_named_policies() {
        let r = parse(DOC).expect("valid resiliency");
        let inventory = &r.apps["inventory"];
        assert_eq!(inventory.timeout, Some(Duration::from_secs(2)));
        let retry = inventory.retry.as_ref().expect("retry");
        assert_eq!(retry.max_retries, Some(3));
        assert!(retry.matching.retries_http(429));
        assert!(retry.matching.retries_http(503));
        assert!(!retry.matching.retries_http(404));
        assert_eq!(
            inventory.circuit_breaker.as_ref().map(|c| c.trip.as_str()),
            Some("consecutiveFailures >= 3")
        );
        assert_eq!(
            r.components["pubsub"]
                .inbound
                .retry
                .as_ref()
                .and_then(|r| r.max_retries),
            None
        );
    }

    #[test]
    fn bare_numbers_in_policies_are_milliseconds() {
        let r = parse(&DOC.replace("fast: 2s", "fast: 250")).expect("valid resiliency");
        assert_eq!(
            r.apps["inventory"].timeout,
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let backoff = RetryBackoff::Exponential {
            initial: Duration::from_millis(500),
            max_interval: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(500));
        assert_eq!(backoff.delay(2), Duration::from_millis(750));
        assert_eq!(backoff.delay(5), Duration::from_secs(1));
    }

    #[test]
    fn a_target_naming_a_missing_policy_is_an_error_naming_the_field() {
        let error =
            parse(&DOC.replace("retry: important", "retry: missing")).expect_err("unknown policy");
        assert_eq!(
            error.field.as_deref(),
            Some("spec.targets.apps.inventory.retry")
        );
    }

    #[test]
    fn a_malformed_status_range_is_an_error() {
        let error = parse(&DOC.replace("429,500-599", "600")).expect_err("bad code");
        assert_eq!(
            error.field.as_deref(),
            Some("spec.policies.retries.important.matching.httpStatusCodes")
        );
    }
}

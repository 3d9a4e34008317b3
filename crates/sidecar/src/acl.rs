//! `accessControl`: whether a calling app may invoke an operation of this app.
//!
//! daprd identifies callers by their mTLS certificate. Sidecars here talk over the local
//! internal channel, whose caller id plays the certificate's part, so policies apply exactly as
//! with mTLS on. Operation names match case-insensitively (HTTP apps), segment by segment: `*`
//! inside a segment is a glob, a trailing `/*` matches one more segment (or none), `/**` any.

use crate::resources::{AccessControl, AclAction, AclOperation};

/// The decision for one call.
pub(crate) fn is_allowed(
    acl: &AccessControl,
    caller: &str,
    caller_namespace: &str,
    verb: &str,
    method: &str,
) -> bool {
    let Some(policy) = acl
        .policies
        .iter()
        .find(|p| p.app_id == caller && p.namespace == caller_namespace)
    else {
        return acl.default_action == AclAction::Allow;
    };
    let operation = format!("/{}", method.trim_start_matches('/')).to_ascii_lowercase();
    let verb = verb.to_ascii_uppercase();
    let action = best_match(&policy.operations, &operation)
        .and_then(|op| {
            if op.http_verbs.iter().any(|v| v == &verb) || op.http_verbs.iter().any(|v| v == "*") {
                Some(op.action)
            } else {
                None
            }
        })
        .unwrap_or(policy.default_action);
    action == AclAction::Allow
}

/// The matching operation with the most literal segments (the trie's preference).
fn best_match<'a>(operations: &'a [AclOperation], operation: &str) -> Option<&'a AclOperation> {
    let path: Vec<&str> = segments(operation);
    operations
        .iter()
        .filter(|op| {
            let lower = op.name.to_ascii_lowercase();
            matches(&segments(&lower), &path)
        })
        .max_by_key(|op| {
            segments(&op.name)
                .iter()
                .filter(|s| !s.contains('*'))
                .count()
        })
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn matches(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            // Any depth, including none.
            (0..=path.len()).any(|skip| matches(&pattern[1..], &path[skip..]))
        }
        (Some(&"*"), None) => pattern.len() == 1, // `/a/*` also matches `/a`
        (Some(segment), Some(part)) => glob(segment, part) && matches(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// `*` inside one segment matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(after) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=after.len())
                .filter(|i| after.is_char_boundary(*i))
                .any(|i| glob(rest, &after[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::AclPolicy;

    fn acl(default: AclAction, operations: Vec<(&str, &[&str], AclAction)>) -> AccessControl {
        AccessControl {
            default_action: AclAction::Deny,
            trust_domain: "public".into(),
            policies: vec![AclPolicy {
                app_id: "gateway".into(),
                default_action: default,
                trust_domain: "public".into(),
                namespace: "default".into(),
                operations: operations
                    .into_iter()
                    .map(|(name, verbs, action)| AclOperation {
                        name: name.into(),
                        http_verbs: verbs.iter().map(|v| v.to_string()).collect(),
                        action,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn callers_without_a_policy_get_the_global_default() {
        let acl = acl(AclAction::Allow, vec![]);
        assert!(!is_allowed(&acl, "stranger", "default", "GET", "orders"));
        assert!(is_allowed(&acl, "gateway", "default", "GET", "orders"));
    }

    #[test]
    fn operations_match_by_segment_with_wildcards() {
        let acl = acl(
            AclAction::Deny,
            vec![
                ("/orders/*", &["GET"], AclAction::Allow),
                ("/admin/**", &["*"], AclAction::Allow),
                ("/v*/items", &["POST"], AclAction::Allow),
            ],
        );
        assert!(is_allowed(&acl, "gateway", "default", "GET", "orders/42"));
        assert!(is_allowed(&acl, "gateway", "default", "GET", "orders"));
        assert!(!is_allowed(
            &acl,
            "gateway",
            "default",
            "GET",
            "orders/42/lines"
        ));
        assert!(!is_allowed(
            &acl,
            "gateway",
            "default",
            "DELETE",
            "orders/42"
        ));
        assert!(is_allowed(
            &acl,
            "gateway",
            "default",
            "PATCH",
            "admin/a/b/c"
        ));
        assert!(is_allowed(&acl, "gateway", "default", "POST", "v2/items"));
        assert!(
            is_allowed(&acl, "gateway", "default", "GET", "ORDERS/7"),
            "HTTP names ignore case"
        );
    }

    #[test]
    fn the_more_specific_operation_wins() {
        let acl = acl(
            AclAction::Deny,
            vec![
                ("/orders/*", &["*"], AclAction::Allow),
                ("/orders/secret", &["*"], AclAction::Deny),
            ],
        );
        assert!(!is_allowed(
            &acl,
            "gateway",
            "default",
            "GET",
            "orders/secret"
        ));
        assert!(is_allowed(
            &acl,
            "gateway",
            "default",
            "GET",
            "orders/public"
        ));
    }
}

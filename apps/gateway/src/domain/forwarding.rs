//! Which headers cross the gateway: what a client sends minus what only the gateway may say
//! (identity, Dapr, forwarding headers) and minus what describes one connection; plus the
//! identity of a verified token.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use kit::extract::{AuthUser, headers as identity};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Prefixes of headers a client may not set: the gateway's identity headers and Dapr's.
const RESERVED_PREFIXES: &[&str] = &["x-shop-user-", "dapr-"];

/// Client headers the gateway replaces or that mean nothing past it.
const DROPPED: &[&str] = &[
    "host",
    "authorization",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The headers an app receives for a client request: the client's, cleaned, with the caller's
/// identity when a token was verified and `X-Forwarded-For`/`-Host` saying who asked for what.
pub fn upstream_headers(
    client: &HeaderMap,
    caller: Option<&AuthUser>,
    client_ip: Option<IpAddr>,
) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    let reserved: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            RESERVED_PREFIXES
                .iter()
                .any(|prefix| name.as_str().starts_with(prefix))
        })
        .cloned()
        .collect();
    for name in reserved {
        headers.remove(name);
    }
    for name in DROPPED {
        headers.remove(*name);
    }
    if let Some(user) = caller {
        for (name, value) in [
            (identity::USER_ID, user.id.to_string()),
            (identity::USER_EMAIL, user.email.clone()),
            (identity::USER_ROLE, user.role.as_str().to_owned()),
        ] {
            // Token verification has checked that the email is a valid header value.
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    if let Some(ip) = client_ip
        && let Ok(value) = HeaderValue::from_str(&ip.to_string())
    {
        headers.insert("x-forwarded-for", value);
    }
    if let Some(host) = client.get(header::HOST) {
        headers.insert("x-forwarded-host", host.clone());
    }
    headers
}

/// The headers a client receives from an app's answer.
pub fn downstream_headers(mut upstream: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut upstream);
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::extract::Role;
    use std::net::Ipv4Addr;

    fn client_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "shop.example"),
            ("authorization", "Bearer abc"),
            ("x-shop-user-role", "admin"),
            ("x-shop-user-id", "0"),
            ("dapr-caller-app-id", "gateway"),
            ("dapr-api-token", "guess"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "per connection"),
            ("transfer-encoding", "chunked"),
            ("x-forwarded-for", "1.2.3.4"),
            ("content-type", "application/json"),
            ("x-request-id", "r-1"),
            ("accept", "text/event-stream"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn client_headers_pass_except_those_only_the_gateway_may_set() {
        let headers = upstream_headers(
            &client_headers(),
            None,
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        );
        for kept in ["content-type", "x-request-id", "accept"] {
            assert!(headers.contains_key(kept), "{kept} is forwarded");
        }
        for dropped in [
            "host",
            "authorization",
            "x-shop-user-role",
            "x-shop-user-id",
            "dapr-caller-app-id",
            "dapr-api-token",
            "connection",
            "x-secret",
            "transfer-encoding",
        ] {
            assert!(!headers.contains_key(dropped), "{dropped} is dropped");
        }
        assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "shop.example");
    }

    #[test]
    fn a_verified_caller_is_named_in_identity_headers() {
        let user = AuthUser {
            id: uuid::Uuid::new_v4(),
            email: "ada@example.com".into(),
            role: Role::Customer,
        };
        let headers = upstream_headers(&client_headers(), Some(&user), None);
        assert_eq!(headers[identity::USER_ID], user.id.to_string());
        assert_eq!(headers[identity::USER_EMAIL], "ada@example.com");
        assert_eq!(headers[identity::USER_ROLE], "customer");
        assert_eq!(headers.get_all(identity::USER_ROLE).iter().count(), 1);
    }
}

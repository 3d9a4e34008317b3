//! Request extractors: a JSON body whose errors name the offending field, and the caller's
//! identity as the gateway vouches for it.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::problem::Problem;

/// A JSON body. Malformed JSON is a 400; a missing field or a wrong type is a 422 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
            });
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "The body must be JSON",
            )
            .detail("send the body with `Content-Type: application/json`"));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        "The body is too large",
                    )
                } else {
                    Problem::bad_request(rejection.body_text())
                }
            })?;
        parse(&bytes).map(Json)
    }
}

/// Deserializes JSON, turning serde's errors into problems that name the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::bad_request(format!("malformed JSON: {inner}"));
        }
        let message = inner.to_string();
        // serde names missing and unknown fields in its message. The path of a missing field is
        // the object that lacks it; the path of an unknown field already ends with it.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing.or(unknown)) {
            (".", Some(name)) => name.to_owned(),
            (path, Some(name)) if missing.is_some() => format!("{path}.{name}"),
            (path, _) => path.to_owned(),
        };
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        Problem::validation(field, message)
    })?;
    // As `axum::Json`: a document followed by anything but whitespace is not JSON.
    deserializer
        .end()
        .map_err(|error| Problem::bad_request(format!("malformed JSON: {error}")))?;
    Ok(value)
}

/// The headers the gateway sets after verifying a token. Apps trust them only on calls that
/// come from the gateway's app id.
pub mod headers {
    /// The user's id.
    pub const USER_ID: &str = "x-shop-user-id";
    /// The user's email.
    pub const USER_EMAIL: &str = "x-shop-user-email";
    /// `customer` or `admin`.
    pub const USER_ROLE: &str = "x-shop-user-role";
    /// The app id the sidecar reports for the caller.
    pub const CALLER_APP_ID: &str = "dapr-caller-app-id";
}

/// The app id of the gateway, the only caller allowed to assert a user's identity.
pub const GATEWAY_APP_ID: &str = "gateway";

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Places orders.
    Customer,
    /// Manages products.
    Admin,
}

impl Role {
    /// The role's name in tokens and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A signed-in user, as the gateway reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// User id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Identity headers mean something only when the gateway sent them.
        if header(parts, headers::CALLER_APP_ID) != Some(GATEWAY_APP_ID) {
            return Err(Problem::unauthorized(
                "this endpoint is reached through the API gateway",
            ));
        }
        let id = header(parts, headers::USER_ID).and_then(|v| Uuid::parse_str(v).ok());
        let email = header(parts, headers::USER_EMAIL);
        let role = header(parts, headers::USER_ROLE).and_then(Role::parse);
        match (id, email, role) {
            (Some(id), Some(email), Some(role)) => Ok(Self {
                id,
                email: email.to_owned(),
                role,
            }),
            _ => Err(Problem::unauthorized("sign in to use this endpoint")),
        }
    }
}

/// A signed-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser(pub AuthUser);

impl<S: Send + Sync> FromRequestParts<S> for AdminUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(Problem::forbidden("this needs an admin account"));
        }
        Ok(Self(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "fields exist to be parsed")]
    struct Order {
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "fields exist to be parsed")]
    #[serde(deny_unknown_fields)]
    struct Item {
        product_id: String,
        quantity: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let problem = parse::<Order>(br#"{"items":[{"product_id":"a","quantity":-1}]}"#)
            .expect_err("negative");
        assert_eq!(problem.errors[0].field, "items[0].quantity");
        let problem = parse::<Order>(br#"{"items":[{"quantity":1}]}"#).expect_err("missing");
        assert_eq!(problem.errors[0].field, "items[0].product_id");
        let problem = parse::<Order>(br#"{}"#).expect_err("missing");
        assert_eq!(problem.errors[0].field, "items");
        let problem = parse::<Order>(br#"{"items":[{"product_id":"a","quantity":1,"x":1}]}"#)
            .expect_err("unknown");
        assert_eq!(problem.errors[0].field, "items[0].x");
        let problem = parse::<Order>(br#"{"items": ["#).expect_err("malformed");
        assert_eq!(problem.status, 400);
    }
}

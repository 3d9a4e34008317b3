//! Checking access tokens: EdDSA-signed JWTs from the auth app, whose `kid` names a key of its
//! JWKS, with the claims `sub`, `email`, `role`, `iss`, `aud`, `iat` and `exp`.

use std::collections::HashMap;

use axum::http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kit::extract::{AuthUser, Role};
use serde::Deserialize;
use uuid::Uuid;

/// Why a token is refused. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// Signed with something else than EdDSA.
    #[error("the token must be signed with EdDSA")]
    WrongAlgorithm,
    /// No `kid` in the header.
    #[error("the token does not name its key (`kid`)")]
    NoKeyId,
    /// The `kid` is not a key of the auth app.
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, issuer, audience or claims.
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
}

/// The claims the gateway reads; `iss`, `aud` and `exp` are checked by [`TokenRules`].
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    email: String,
    role: Role,
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct TokenRules {
    validation: Validation,
}

impl TokenRules {
    /// EdDSA only, issued by `issuer` for `audience`, not expired (60 s leeway for clock skew).
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self { validation }
    }
}

/// The `kid` of a token, read from its header before its key is looked up.
pub fn key_id(token: &str) -> Result<String, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::WrongAlgorithm);
    }
    header.kid.ok_or(TokenError::NoKeyId)
}

/// Checks `token` against `key` and `rules`; returns who it speaks for.
pub fn verify(token: &str, key: &DecodingKey, rules: &TokenRules) -> Result<AuthUser, TokenError> {
    let claims = jsonwebtoken::decode::<Claims>(token, key, &rules.validation)
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience"),
            ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer"),
            ErrorKind::InvalidSignature => TokenError::Invalid("bad signature"),
            ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
            ErrorKind::MissingRequiredClaim(_) => {
                TokenError::Invalid("a required claim is missing")
            }
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                TokenError::Invalid("the claims are not the expected ones")
            }
            _ => TokenError::Malformed,
        })?
        .claims;
    let id =
        Uuid::parse_str(&claims.sub).map_err(|_| TokenError::Invalid("`sub` is not a user id"))?;
    // The email travels on as a header value.
    if claims.email.is_empty() || HeaderValue::from_str(&claims.email).is_err() {
        return Err(TokenError::Invalid("`email` is not a plain email address"));
    }
    Ok(AuthUser {
        id,
        email: claims.email,
        role: claims.role,
    })
}

/// The usable keys of a JWKS, by `kid`: Ed25519 keys only.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl KeySet {
    /// Keeps the Ed25519 keys that have a `kid`; others cannot verify the auth app's tokens.
    pub fn from_jwks(jwks: &JwkSet) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter(|jwk| {
                matches!(&jwk.algorithm, AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519)
            })
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, key))
            })
            .collect();
        Self { keys }
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    /// A fixed Ed25519 test key (the auth app's test key).
    pub(crate) const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

    /// The JWKS of `pem` and its `kid`, as the auth app publishes them.
    pub(crate) fn jwks(pem: &str) -> (JwkSet, String) {
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("valid key");
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).expect("jwk");
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint");
        jwk.common.key_id = Some(kid.clone());
        (JwkSet { keys: vec![jwk] }, kid)
    }

    pub(crate) fn sign(pem: &str, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("valid key");
        jsonwebtoken::encode(&header, claims, &key).expect("signed")
    }

    pub(crate) fn claims(role: &str) -> serde_json::Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "sub": Uuid::new_v4().to_string(),
            "email": "ada@example.com",
            "role": role,
            "iss": "shop-auth",
            "aud": "shop",
            "iat": now,
            "exp": now + 600,
        })
    }

    fn check(token: &str) -> Result<AuthUser, TokenError> {
        let (jwks, kid) = jwks(KEY);
        assert_eq!(key_id(token)?, kid);
        let keys = KeySet::from_jwks(&jwks);
        verify(
            token,
            keys.get(&kid).expect("key"),
            &TokenRules::new("shop-auth", "shop"),
        )
    }

    #[test]
    fn a_token_of_the_auth_app_names_its_user() {
        let (_, kid) = jwks(KEY);
        let claims = claims("admin");
        let user = check(&sign(KEY, &kid, &claims)).expect("valid");
        assert_eq!(user.id.to_string(), claims["sub"]);
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.role, Role::Admin);
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused() {
        let (_, kid) = jwks(KEY);
        let mut expired = claims("customer");
        expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 3600);
        assert_eq!(check(&sign(KEY, &kid, &expired)), Err(TokenError::Expired));
        let mut audience = claims("customer");
        audience["aud"] = json!("elsewhere");
        assert_eq!(
            check(&sign(KEY, &kid, &audience)),
            Err(TokenError::Invalid("wrong audience"))
        );
        let mut issuer = claims("customer");
        issuer["iss"] = json!("someone");
        assert_eq!(
            check(&sign(KEY, &kid, &issuer)),
            Err(TokenError::Invalid("wrong issuer"))
        );
        let mut role = claims("customer");
        role["role"] = json!("root");
        assert!(matches!(
            check(&sign(KEY, &kid, &role)),
            Err(TokenError::Invalid(_))
        ));
        let token = sign(KEY, &kid, &claims("customer"));
        let (head, rest) = token.split_once('.').expect("three parts");
        let (_, signature) = rest.split_once('.').expect("three parts");
        let forged_claims = claims("admin").to_string();
        let forged = format!(
            "{head}.{}.{signature}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.as_bytes())
        );
        assert_eq!(check(&forged), Err(TokenError::Invalid("bad signature")));
    }

    #[test]
    fn headers_without_eddsa_or_kid_are_refused() {
        assert_eq!(key_id("not a token"), Err(TokenError::Malformed));
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("admin"),
            &EncodingKey::from_secret(b"secret"),
        )
        .expect("signed");
        assert_eq!(key_id(&hs), Err(TokenError::WrongAlgorithm));
        let no_kid = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims("admin"),
            &EncodingKey::from_ed_pem(KEY.as_bytes()).expect("key"),
        )
        .expect("signed");
        assert_eq!(key_id(&no_kid), Err(TokenError::NoKeyId));
    }
}

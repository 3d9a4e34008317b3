//! Access tokens: JWTs signed with Ed25519 (`EdDSA`), the key id (`kid`) being the key's RFC 7638
//! thumbprint, and the public keys published as a JWKS for the gateway.

use chrono::Utc;
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::extract::Role;
use serde::{Deserialize, Serialize};

use super::{Email, UserId};

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Email.
    pub email: String,
    /// `customer` or `admin`.
    pub role: Role,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

/// Signs tokens with the current key; publishes the current and previous public keys.
pub struct TokenSigner {
    key: EncodingKey,
    kid: String,
    jwks: JwkSet,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
}

fn public_jwk(key: &EncodingKey) -> anyhow::Result<(Jwk, String)> {
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::EdDSA)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
    jwk.common.key_id = Some(kid.clone());
    Ok((jwk, kid))
}

impl TokenSigner {
    /// A signer from the PKCS#8 PEM of the current key, and optionally the previous key (whose
    /// tokens stay valid until they expire, which is what makes rotation seamless).
    pub fn new(
        current_pem: &str,
        previous_pem: Option<&str>,
        issuer: &str,
        audience: &str,
        ttl_seconds: u64,
    ) -> anyhow::Result<Self> {
        let key = EncodingKey::from_ed_pem(current_pem.as_bytes()).map_err(|e| {
            anyhow::anyhow!("jwt-signing-key is not an Ed25519 PKCS#8 PEM key: {e}")
        })?;
        let (jwk, kid) = public_jwk(&key)?;
        let mut keys = vec![jwk];
        if let Some(previous) = previous_pem {
            let previous = EncodingKey::from_ed_pem(previous.as_bytes()).map_err(|e| {
                anyhow::anyhow!("jwt-previous-signing-key is not an Ed25519 PKCS#8 PEM key: {e}")
            })?;
            keys.push(public_jwk(&previous)?.0);
        }
        Ok(Self {
            key,
            kid,
            jwks: JwkSet { keys },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_seconds: i64::try_from(ttl_seconds).unwrap_or(3600),
        })
    }

    /// A token for a user.
    pub fn issue(&self, user: UserId, email: &Email, role: Role) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.to_string(),
            email: email.as_str().to_owned(),
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.ttl_seconds,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }

    /// Seconds a token lives.
    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    /// A fixed Ed25519 test key (never used outside tests).
    pub(crate) const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

    #[test]
    fn tokens_verify_against_the_published_key() {
        let signer = TokenSigner::new(TEST_KEY, None, "shop-auth", "shop", 600).expect("valid key");
        let email = Email::parse("ada@example.com").expect("valid");
        let token = signer
            .issue(UserId::generate(), &email, Role::Admin)
            .expect("signed");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        let jwk = signer
            .jwks()
            .find(header.kid.as_deref().expect("kid"))
            .expect("published");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["shop"]);
        validation.set_issuer(&["shop-auth"]);
        let claims = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_jwk(jwk).expect("key"),
            &validation,
        )
        .expect("valid token")
        .claims;
        assert_eq!(claims.email, "ada@example.com");
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.exp - claims.iat, 600);
    }
}

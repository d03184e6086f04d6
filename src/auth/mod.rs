//! Authentication: turns a request into verified [`Claims`], or refuses it.
//!
//! Users present a JWT (HS256 secret, RS256/ES256 PEM key, or a JWKS endpoint);
//! controllers present an API key. The key for a token is chosen by the token's
//! algorithm *family* before verification, so an HS256 token can never be checked
//! against a public key (algorithm confusion) and `alg: none` has no key at all.

mod apikey;
mod claims;
mod jwks;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

pub use apikey::ApiKeys;
pub use claims::Claims;
use claims::TokenClaims;
pub use jwks::JwksCache;

use crate::config::JwtConfig;

/// Why a user token was refused. The `Display` text is the contract's exact
/// `connect_error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in `auth.token`, `?token=` or `Authorization`.
    #[error("unauthorized: missing token")]
    MissingToken,
    /// Malformed, forged, wrong issuer/audience, unknown key…
    #[error("unauthorized: invalid token")]
    InvalidToken,
    /// `exp` is in the past.
    #[error("unauthorized: token expired")]
    TokenExpired,
}

/// Verifies user tokens against the configured keys.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    secret: Option<DecodingKey>,
    public_key: Option<(Arc<DecodingKey>, AlgorithmFamily)>,
    jwks: Option<JwksCache>,
    /// The claim checks for each family's algorithms, built once.
    hmac: Validation,
    rsa: Validation,
    ec: Validation,
}

/// Reads a PEM public key: RSA first, then EC.
pub fn decoding_key_from_pem(pem: &[u8]) -> Option<(DecodingKey, AlgorithmFamily)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((key, AlgorithmFamily::Rsa));
    }
    DecodingKey::from_ec_pem(pem)
        .ok()
        .map(|key| (key, AlgorithmFamily::Ec))
}

impl Verifier {
    /// Builds a verifier from validated settings.
    pub fn new(config: &JwtConfig) -> Verifier {
        use Algorithm::*;
        let checks = |algorithms: &[Algorithm]| validation(config, algorithms);
        Verifier {
            inner: Arc::new(VerifierInner {
                secret: config
                    .secret
                    .as_ref()
                    .map(|s| DecodingKey::from_secret(s.as_bytes())),
                public_key: config
                    .public_key_pem
                    .as_ref()
                    .and_then(|(_, pem)| decoding_key_from_pem(pem))
                    .map(|(key, family)| (Arc::new(key), family)),
                jwks: config.jwks_url.clone().map(JwksCache::new),
                hmac: checks(&[HS256, HS384, HS512]),
                rsa: checks(&[RS256, RS384, RS512, PS256, PS384, PS512]),
                ec: checks(&[ES256, ES384]),
            }),
        }
    }

    /// The JWKS cache, when one is configured (to warm it at start-up).
    pub fn jwks(&self) -> Option<&JwksCache> {
        self.inner.jwks.as_ref()
    }

    /// Verifies a token and returns its claims.
    ///
    /// The signature is checked before any claim, so a forged expired token is
    /// "invalid", never "expired". There is no leeway: a live socket is cut at `exp`.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let inner = &*self.inner;
        let fetched;
        let (key, checks) = match (&inner.secret, &inner.public_key, &inner.jwks) {
            // Only a secret: every token must be HMAC, which `decode` checks
            // against the header itself (reading it here too cost a connect
            // storm a third of a header parse per handshake).
            (Some(secret), None, None) => (secret, &inner.hmac),
            _ => {
                let header =
                    jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
                let (key, checks) = match header.alg.family() {
                    AlgorithmFamily::Hmac => (inner.secret.as_ref(), &inner.hmac),
                    AlgorithmFamily::Rsa => {
                        fetched = self.public_key(&header).await;
                        (fetched.as_deref(), &inner.rsa)
                    }
                    AlgorithmFamily::Ec => {
                        fetched = self.public_key(&header).await;
                        (fetched.as_deref(), &inner.ec)
                    }
                    // No EdDSA key is ever configured.
                    AlgorithmFamily::Ed => (None, &inner.hmac),
                };
                (key.ok_or(AuthError::InvalidToken)?, checks)
            }
        };
        let data = jsonwebtoken::decode::<TokenClaims>(token, key, checks).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::TokenExpired,
            _ => AuthError::InvalidToken,
        })?;
        Claims::from_token(data.claims).ok_or(AuthError::InvalidToken)
    }

    /// The key for an RSA or EC token: the JWKS's for its `kid`, else the
    /// configured PEM key when it is of the token's family.
    async fn public_key(&self, header: &jsonwebtoken::Header) -> Option<Arc<DecodingKey>> {
        let inner = &*self.inner;
        if let (Some(jwks), Some(kid)) = (&inner.jwks, &header.kid)
            && let Some(key) = jwks.key(kid, header.alg).await
        {
            return Some(key);
        }
        let (key, family) = inner.public_key.as_ref()?;
        (*family == header.alg.family()).then(|| key.clone())
    }
}

/// The claim checks for tokens signed with one of `algorithms` (one family).
fn validation(config: &JwtConfig, algorithms: &[Algorithm]) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms.to_vec();
    v.leeway = 0;
    // A token not valid yet (`nbf` in the future) is refused as invalid.
    v.validate_nbf = true;
    // jsonwebtoken only checks `iss`/`aud` when present, so configured ones are required.
    // `sub` is checked by `Claims::from_token`, which also takes numeric ids
    // (plenty of backends mint `"sub": 42`, RFC 7519 notwithstanding).
    let mut required = vec!["exp"];
    if config.issuer.is_some() {
        required.push("iss");
    }
    if config.audience.is_some() {
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v.validate_aud = config.audience.is_some();
    if let Some(aud) = &config.audience {
        v.set_audience(&[aud]);
    }
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
    }
    v
}

/// Where a Socket.IO handshake carries its token, in the contract's order:
/// `auth.token`, then `?token=`, then `Authorization: Bearer …`.
pub fn handshake_token<'a>(
    auth: Option<&'a Value>,
    query: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    if let Some(t) = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Some(Cow::Borrowed(t));
    }
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(raw) = pair.strip_prefix("token=")
                && !raw.is_empty()
            {
                return Some(percent_decode(raw));
            }
        }
    }
    authorization.and_then(bearer).map(Cow::Borrowed)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') && !s.contains('+') {
        return std::borrow::Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Signs a development token with an HS256 secret (`livehub token`, `--dev`).
pub fn mint_dev_token(
    secret: &str,
    sub: &str,
    branch_id: Option<&str>,
    role: Option<&str>,
    name: Option<&str>,
    ttl_seconds: u64,
) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + ttl_seconds;
    let mut claims = serde_json::json!({ "sub": sub, "exp": exp });
    if let Some(b) = branch_id {
        claims["branchId"] = b.into();
    }
    if let Some(r) = role {
        claims["role"] = r.into();
    }
    if let Some(n) = name {
        claims["name"] = n.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing with a byte secret cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    const SECRET: &str = "test-secret-0123456789";

    fn verifier() -> Verifier {
        Verifier::new(&JwtConfig {
            secret: Some(SECRET.into()),
            ..Default::default()
        })
    }

    fn sign(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[tokio::test]
    async fn accepts_a_valid_token_with_all_claims() {
        let t = sign(
            json!({"sub": "u1", "exp": now() + 60, "branchId": 7, "role": "manager", "name": "Ann", "rooms": ["order:*"]}),
            SECRET,
        );
        let c = verifier().verify(&t).await.unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.branch_id.as_deref(), Some("7"));
        assert_eq!(c.role.as_deref(), Some("manager"));
        assert_eq!(c.name.as_deref(), Some("Ann"));
        assert_eq!(c.rooms, Some(vec!["order:*".to_string()]));
    }

    #[tokio::test]
    async fn refusals_carry_the_contract_messages() {
        let v = verifier();
        let expired = sign(json!({"sub": "u1", "exp": now() - 5}), SECRET);
        assert_eq!(v.verify(&expired).await, Err(AuthError::TokenExpired));
        assert_eq!(
            AuthError::TokenExpired.to_string(),
            "unauthorized: token expired"
        );
        let forged = sign(
            json!({"sub": "u1", "exp": now() + 60}),
            "another-secret-value",
        );
        assert_eq!(v.verify(&forged).await, Err(AuthError::InvalidToken));
        let forged_expired = sign(
            json!({"sub": "u1", "exp": now() - 60}),
            "another-secret-value",
        );
        assert_eq!(
            v.verify(&forged_expired).await,
            Err(AuthError::InvalidToken)
        );
        assert_eq!(v.verify("not-a-jwt").await, Err(AuthError::InvalidToken));
        let no_exp = sign(json!({"sub": "u1"}), SECRET);
        assert_eq!(v.verify(&no_exp).await, Err(AuthError::InvalidToken));
        let numeric = sign(json!({"sub": 42, "exp": now() + 60}), SECRET);
        assert_eq!(
            v.verify(&numeric).await.map(|c| c.sub),
            Ok("42".to_string())
        );
        let no_sub = sign(json!({"exp": now() + 60}), SECRET);
        assert_eq!(v.verify(&no_sub).await, Err(AuthError::InvalidToken));
        let empty_sub = sign(json!({"sub": "", "exp": now() + 60}), SECRET);
        assert_eq!(v.verify(&empty_sub).await, Err(AuthError::InvalidToken));
        assert_eq!(
            AuthError::MissingToken.to_string(),
            "unauthorized: missing token"
        );
        assert_eq!(
            AuthError::InvalidToken.to_string(),
            "unauthorized: invalid token"
        );
    }

    #[tokio::test]
    async fn a_secret_verifies_every_hmac_strength_and_nothing_else() {
        let claims = json!({"sub": "u1", "exp": now() + 60});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let t = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap();
            assert_eq!(verifier().verify(&t).await.map(|c| c.sub), Ok("u1".into()));
        }
        // Algorithm confusion: a header naming RS256 over an HMAC signature.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let hs = sign(claims, SECRET);
        let (_, rest) = hs.split_once('.').unwrap();
        let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        assert_eq!(
            verifier().verify(&format!("{header}.{rest}")).await,
            Err(AuthError::InvalidToken)
        );
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"sub":"u1","exp":{}}}"#, now() + 60));
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            assert_eq!(
                verifier().verify(&token).await,
                Err(AuthError::InvalidToken)
            );
        }
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let v = Verifier::new(&JwtConfig {
            secret: Some(SECRET.into()),
            issuer: Some("https://issuer.example".into()),
            audience: Some("livehub".into()),
            ..Default::default()
        });
        let good = sign(
            json!({"sub": "u", "exp": now() + 60, "iss": "https://issuer.example", "aud": "livehub"}),
            SECRET,
        );
        assert!(v.verify(&good).await.is_ok());
        let wrong_iss = sign(
            json!({"sub": "u", "exp": now() + 60, "iss": "https://evil.example", "aud": "livehub"}),
            SECRET,
        );
        assert_eq!(v.verify(&wrong_iss).await, Err(AuthError::InvalidToken));
        let wrong_aud = sign(
            json!({"sub": "u", "exp": now() + 60, "iss": "https://issuer.example", "aud": "other"}),
            SECRET,
        );
        assert_eq!(v.verify(&wrong_aud).await, Err(AuthError::InvalidToken));
        let missing = sign(json!({"sub": "u", "exp": now() + 60}), SECRET);
        assert_eq!(v.verify(&missing).await, Err(AuthError::InvalidToken));
        // Without configuration, an `aud` in the token is not an error.
        let any = sign(json!({"sub": "u", "exp": now() + 60, "aud": "x"}), SECRET);
        assert!(verifier().verify(&any).await.is_ok());
    }

    #[test]
    fn token_sources_in_contract_order() {
        let auth = json!({"token": "from-auth"});
        assert_eq!(
            handshake_token(Some(&auth), Some("token=q"), Some("Bearer h")).as_deref(),
            Some("from-auth")
        );
        let empty = json!({"token": ""});
        assert_eq!(
            handshake_token(Some(&empty), Some("EIO=4&token=q%2Bx"), Some("Bearer h")).as_deref(),
            Some("q+x")
        );
        assert_eq!(
            handshake_token(None, Some("EIO=4&transport=polling"), Some("Bearer h")).as_deref(),
            Some("h")
        );
        assert_eq!(handshake_token(None, None, Some("Basic abc")), None);
        assert_eq!(handshake_token(None, Some("token="), None), None);
        assert_eq!(bearer("bearer   tok "), Some("tok"));
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%aé"), "%aé");
    }

    #[tokio::test]
    async fn dev_tokens_verify() {
        let t = mint_dev_token(SECRET, "u9", Some("b1"), Some("admin"), Some("Dev"), 60);
        let c = verifier().verify(&t).await.unwrap();
        assert_eq!((c.sub.as_str(), c.is_admin()), ("u9", true));
    }
}

//! A cached JWKS (JSON Web Key Set), e.g. a Cognito user pool's.
//!
//! Keys are fetched on first use and whenever a token names a `kid` the cache
//! does not know — so a key rotated in is picked up on the first token that uses
//! it — but at most once per [`MIN_REFRESH_INTERVAL`], so a flood of tokens with
//! made-up `kid`s cannot turn livehub into a load generator against the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use parking_lot::RwLock;

/// The shortest time between two fetches of the key set.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

struct Key {
    decoding: Arc<DecodingKey>,
    /// The algorithms this key may verify: its `alg` if it names one, else its family's.
    algorithms: Vec<Algorithm>,
}

/// A JWK's `alg` as a verification algorithm (`None` for encryption algorithms).
fn key_algorithm(alg: jsonwebtoken::jwk::KeyAlgorithm) -> Option<Algorithm> {
    let name = serde_json::to_value(alg).ok()?;
    name.as_str()?.parse().ok()
}

/// JWKS keys by `kid`, refreshed on demand.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, Key>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksCache {
    /// A cache for the key set at `url`; nothing is fetched yet.
    pub fn new(url: String) -> JwksCache {
        JwksCache {
            inner: Arc::new(Inner {
                url,
                client: reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    // The keys that sign every token: never from wherever a redirect points.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("a default HTTP client builds"),
                keys: RwLock::new(HashMap::new()),
                last_fetch: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The key for `kid` if it may verify `alg`, fetching the set when `kid` is unknown.
    pub async fn key(&self, kid: &str, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        if let Some(k) = self.cached(kid, alg) {
            return Some(k);
        }
        self.refresh(false).await;
        self.cached(kid, alg)
    }

    fn cached(&self, kid: &str, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let keys = self.inner.keys.read();
        let key = keys.get(kid)?;
        key.algorithms.contains(&alg).then(|| key.decoding.clone())
    }

    /// Fetches the key set now (`force`) or if the last fetch is old enough.
    /// Failures keep the keys already known and are logged.
    pub async fn refresh(&self, force: bool) {
        let mut last = self.inner.last_fetch.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(count = keys.len(), "JWKS refreshed");
                *self.inner.keys.write() = keys;
            }
            Err(e) => tracing::warn!(url = %self.inner.url, error = %e, "JWKS fetch failed"),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, reqwest::Error> {
        let set: JwkSet = self
            .inner
            .client
            .get(&self.inner.url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let family_algs: &[Algorithm] = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms(),
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256],
                    EllipticCurve::P384 => &[Algorithm::ES384],
                    _ => continue,
                },
                // Symmetric keys have no business in a public key set.
                _ => continue,
            };
            let algorithms = match jwk.common.key_algorithm.and_then(key_algorithm) {
                Some(alg) if family_algs.contains(&alg) => vec![alg],
                Some(_) => continue,
                None => family_algs.to_vec(),
            };
            if let Ok(decoding) = DecodingKey::from_jwk(jwk) {
                keys.insert(
                    kid,
                    Key {
                        decoding: Arc::new(decoding),
                        algorithms,
                    },
                );
            }
        }
        Ok(keys)
    }
}

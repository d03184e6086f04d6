//! Controller API keys, compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured API keys, kept only as SHA-256 digests.
///
/// Hashing first gives every comparison the same length, and every configured
/// key is compared on every check, so timing reveals neither a key's length,
/// its prefix, nor which key matched.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// From the configured plain keys.
    pub fn new(keys: &[String]) -> ApiKeys {
        ApiKeys {
            digests: keys.iter().map(|k| digest(k)).collect(),
        }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `candidate` is one of the keys.
    pub fn check(&self, candidate: &str) -> bool {
        let d = digest(candidate);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, k| found | k.ct_eq(&d))
            .into()
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_any_configured_key_and_nothing_else() {
        let keys = ApiKeys::new(&["alpha".into(), "beta".into()]);
        assert!(keys.check("alpha"));
        assert!(keys.check("beta"));
        assert!(!keys.check("alph"));
        assert!(!keys.check("alphaa"));
        assert!(!keys.check(""));
        assert!(!ApiKeys::new(&[]).check(""));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 configured)");
    }
}

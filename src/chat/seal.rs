//! Chat content at rest: sealing with ChaCha20-Poly1305, and the blind index
//! that keeps whole-word search possible without storing words.
//!
//! A sealed message is `base64(nonce || ciphertext)`, with the room as
//! associated data, so a ciphertext moved to another room's row does not open.
//! The blind index stores, per word, an HMAC-SHA256 under a key derived from
//! the encryption key: equal words give equal tokens, nothing else is revealed
//! beyond which messages share a word.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The longest word indexed or searched for, in characters.
pub const MAX_WORD_CHARS: usize = 64;
/// The most words one search may ask for.
pub const MAX_QUERY_WORDS: usize = 16;

/// Seals and opens chat content, and makes blind-index tokens.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    index_key: [u8; 32],
}

/// A sealed text that does not open (wrong key, wrong room, damaged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chat content could not be decrypted")]
pub struct Unreadable;

type HmacSha256 = Hmac<Sha256>;

impl Sealer {
    /// From the 32-byte `ENCRYPTION_KEY`.
    pub fn new(key: &[u8; 32]) -> Sealer {
        let mut derive =
            <HmacSha256 as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        derive.update(b"livehub blind index v1");
        Sealer {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
            index_key: derive.finalize().into_bytes().into(),
        }
    }

    /// Seals `plaintext` for `room`.
    pub fn seal(&self, room: &str, plaintext: &str) -> String {
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: room.as_bytes(),
                },
            )
            .expect("encryption of a bounded message cannot fail");
        let mut out = Vec::with_capacity(12 + ciphertext.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`Sealer::seal`] made for `room`.
    pub fn open(&self, room: &str, sealed: &str) -> Result<String, Unreadable> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| Unreadable)?;
        if bytes.len() < 12 {
            return Err(Unreadable);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce = Nonce::try_from(nonce).map_err(|_| Unreadable)?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: room.as_bytes(),
                },
            )
            .map_err(|_| Unreadable)?;
        String::from_utf8(plain).map_err(|_| Unreadable)
    }

    /// The blind-index token of each distinct word of `text`.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        words(text).iter().map(|w| self.token(w)).collect()
    }

    fn token(&self, word: &str) -> String {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.index_key)
            .expect("HMAC takes any key length");
        mac.update(word.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// The distinct lowercase words of `text`: runs of letters and digits, cut to
/// [`MAX_WORD_CHARS`]. The same rule splits messages and search queries.
pub fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        if raw.is_empty() {
            continue;
        }
        let word: String = raw
            .chars()
            .take(MAX_WORD_CHARS)
            .flat_map(char::to_lowercase)
            .collect();
        if !out.contains(&word) {
            out.push(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_for_the_same_room_and_key() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal("order:1", "Dock 4 is ready");
        assert!(!sealed.contains("Dock"));
        assert_eq!(s.open("order:1", &sealed).unwrap(), "Dock 4 is ready");
        assert_eq!(s.open("order:2", &sealed), Err(Unreadable));
        assert_eq!(
            Sealer::new(&[8u8; 32]).open("order:1", &sealed),
            Err(Unreadable)
        );
        assert_eq!(s.open("order:1", "not base64!"), Err(Unreadable));
        assert_eq!(s.open("order:1", "AAAA"), Err(Unreadable));
        assert_ne!(
            s.seal("order:1", "same"),
            s.seal("order:1", "same"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn blind_tokens_match_equal_words_only() {
        let s = Sealer::new(&[1u8; 32]);
        let a = s.tokens("Pallet DAMAGED at dock");
        let b = s.tokens("damaged");
        assert_eq!(a.len(), 4);
        assert!(a.contains(&b[0]));
        assert!(!a.contains(&s.tokens("damage")[0]), "whole words only");
        assert_ne!(Sealer::new(&[2u8; 32]).tokens("damaged"), b, "keyed");
    }

    #[test]
    fn words_split_on_anything_but_letters_and_digits() {
        assert_eq!(
            words("PO-2024/17: Ärger, ärger! x"),
            vec!["po", "2024", "17", "ärger", "x"]
        );
        assert!(words("  ,;  ").is_empty());
        assert_eq!(words(&"a".repeat(100))[0].len(), MAX_WORD_CHARS);
    }
}

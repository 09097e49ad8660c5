//! The cluster secret: what a node must know to take part in gossip and internal RPC.
//!
//! `cluster_secret` is a keyring: a list of secrets, the first of which is used to seal
//! and every one of which is accepted, so a secret can be rotated without downtime (add
//! the new one second everywhere, then first, then drop the old one — a rolling restart
//! each). From each secret two independent keys are derived with HKDF-SHA256:
//!
//! - the **gossip key**: every gossip packet is sealed with ChaCha20-Poly1305 (a random
//!   96-bit nonce per packet), the header with the cluster label is authenticated too;
//! - the **RPC token**: sent in `x-ringtail-cluster-token` on every internal gRPC call and
//!   compared in constant time. Someone who reads the token off the wire cannot derive
//!   the gossip key from it (for confidentiality on the wire, use mTLS).
//!
//! Gossip packet: `"RT" | version 1 | label length | label | nonce (12) | ciphertext+tag`.
//! The label travels in clear so a packet from another cluster is refused as such.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

const MAGIC: &[u8; 2] = b"RT";
const VERSION: u8 = 1;
const SALT: &[u8] = b"ringtail cluster secret v1";
/// The shortest secret accepted (bytes).
pub const MIN_SECRET_LEN: usize = 16;
/// The longest cluster label (bytes).
pub const MAX_LABEL_LEN: usize = 64;
/// The metadata key internal gRPC calls carry the token in.
pub const RPC_TOKEN_HEADER: &str = "x-ringtail-cluster-token";

/// Why a gossip packet was refused (the `reason` label of
/// `ringtail_gossip_packets_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a sealed packet (a node without the secret, or noise).
    #[error("not sealed with a cluster secret")]
    Unsealed,
    /// Sealed for a cluster with another label.
    #[error("sealed for another cluster label")]
    Label,
    /// No key of the keyring opens it (another secret, or tampered with).
    #[error("no cluster secret opens it")]
    Auth,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unsealed => "unsealed",
            Refused::Label => "label",
            Refused::Auth => "auth",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cluster_secret is empty")]
    Empty,
    #[error("a cluster_secret is {0} bytes; at least {MIN_SECRET_LEN} are needed (e.g. `openssl rand -base64 32`)")]
    TooShort(usize),
    #[error("cluster_label is longer than {MAX_LABEL_LEN} bytes or not printable ASCII")]
    Label,
}

struct Key {
    gossip: LessSafeKey,
    rpc_token: String,
}

/// The derived keys of every secret in the keyring, and the cluster label.
pub struct ClusterKeys {
    keys: Vec<Key>,
    header: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKeys")
            .field("keys", &self.keys.len())
            .field("label", &String::from_utf8_lossy(&self.header[4..]))
            .finish()
    }
}

/// `len` bytes of key material for `purpose`, from `secret`.
fn derive(secret: &[u8], purpose: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
    let info = [purpose];
    // `expand` fails only for lengths over 255 hash blocks and `fill` only on a length
    // mismatch; both are fixed here.
    if let Ok(okm) = prk.expand(&info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

/// A fresh secret: 32 random bytes, hex encoded.
pub fn random_secret() -> String {
    let mut secret = [0u8; 32];
    // The OS random source does not fail on Linux once booted.
    let _ = SystemRandom::new().fill(&mut secret);
    hex::encode(secret)
}

impl ClusterKeys {
    /// The keyring from `secrets` (the first seals) and `label`.
    pub fn new(secrets: &[String], label: &str) -> Result<Self, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        if label.len() > MAX_LABEL_LEN || !label.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::Label);
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for secret in secrets {
            if secret.len() < MIN_SECRET_LEN {
                return Err(KeyError::TooShort(secret.len()));
            }
            let mut gossip = [0u8; 32];
            derive(secret.as_bytes(), b"gossip", &mut gossip);
            let mut token = [0u8; 32];
            derive(secret.as_bytes(), b"internal rpc", &mut token);
            let unbound =
                UnboundKey::new(&CHACHA20_POLY1305, &gossip).map_err(|_| KeyError::Empty)?;
            keys.push(Key {
                gossip: LessSafeKey::new(unbound),
                rpc_token: hex::encode(token),
            });
        }
        let mut header = Vec::with_capacity(4 + label.len());
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.push(label.len() as u8);
        header.extend_from_slice(label.as_bytes());
        Ok(Self {
            keys,
            header,
            rng: SystemRandom::new(),
        })
    }

    /// A keyring of one random secret: a node that runs alone, which nobody can join.
    pub fn random() -> Self {
        Self::new(&[random_secret()], "")
            .unwrap_or_else(|_| unreachable!("a 64-byte secret is valid"))
    }

    /// Bytes a sealed packet adds to the plaintext.
    pub fn overhead(&self) -> usize {
        self.header.len() + NONCE_LEN + CHACHA20_POLY1305.tag_len()
    }

    /// Seals a gossip packet with the first key.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The OS random source does not fail on Linux once booted; a zero nonce would
        // still be unique enough for a packet or two.
        let _ = self.rng.fill(&mut nonce);
        let mut out = Vec::with_capacity(plaintext.len() + self.overhead());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&nonce);
        let mut sealed = plaintext.to_vec();
        let _ = self.keys[0].gossip.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&self.header[..]),
            &mut sealed,
        );
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a sealed gossip packet with whichever key of the keyring sealed it.
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        if packet.len() < 4 || &packet[..2] != MAGIC || packet[2] != VERSION {
            return Err(Refused::Unsealed);
        }
        let label_end = 4 + packet[3] as usize;
        if packet.len() < label_end + NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(Refused::Unsealed);
        }
        if packet[..label_end] != self.header[..] {
            return Err(Refused::Label);
        }
        let nonce: [u8; NONCE_LEN] = packet[label_end..label_end + NONCE_LEN]
            .try_into()
            .map_err(|_| Refused::Unsealed)?;
        let ciphertext = &packet[label_end + NONCE_LEN..];
        for key in &self.keys {
            let mut buf = ciphertext.to_vec();
            let opened = key.gossip.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.header[..]),
                &mut buf,
            );
            if let Ok(plain) = opened {
                let len = plain.len();
                buf.truncate(len);
                return Ok(buf);
            }
        }
        Err(Refused::Auth)
    }

    /// The token this node sends on internal calls (the first secret's).
    pub fn rpc_token(&self) -> &str {
        &self.keys[0].rpc_token
    }

    /// True when `token` is any secret's RPC token (constant time per key).
    pub fn accepts_rpc_token(&self, token: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for key in &self.keys {
            ok |= key.rpc_token.as_bytes().ct_eq(token);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secrets: &[&str], label: &str) -> ClusterKeys {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        ClusterKeys::new(&secrets, label).expect("valid keyring")
    }

    const A: &str = "secret-number-one-0123456789";
    const B: &str = "secret-number-two-0123456789";

    #[test]
    fn a_sealed_packet_opens_with_the_same_secret_and_label() {
        let k = keys(&[A], "prod");
        let sealed = k.seal(b"hello gossip");
        assert_eq!(sealed.len(), 12 + k.overhead());
        assert_eq!(k.open(&sealed), Ok(b"hello gossip".to_vec()));
        assert_ne!(k.seal(b"hello gossip"), sealed, "a fresh nonce per packet");
    }

    #[test]
    fn another_secret_another_label_plaintext_or_a_flipped_bit_are_refused() {
        let k = keys(&[A], "prod");
        let sealed = k.seal(b"hello");
        assert_eq!(keys(&[B], "prod").open(&sealed), Err(Refused::Auth));
        assert_eq!(keys(&[A], "staging").open(&sealed), Err(Refused::Label));
        assert_eq!(k.open(b"plain foca bytes"), Err(Refused::Unsealed));
        assert_eq!(k.open(&sealed[..sealed.len() - 20]), Err(Refused::Unsealed));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open(&bad).is_err(), "bit flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn a_keyring_seals_with_its_first_secret_and_opens_with_any() {
        let old = keys(&[A], "");
        let both_new_first = keys(&[B, A], "");
        let both_old_first = keys(&[A, B], "");
        let new = keys(&[B], "");
        assert!(both_new_first.open(&old.seal(b"x")).is_ok());
        assert!(old.open(&both_old_first.seal(b"x")).is_ok());
        assert!(new.open(&both_new_first.seal(b"x")).is_ok());
        assert!(both_old_first.open(&new.seal(b"x")).is_ok());
        assert_eq!(old.open(&new.seal(b"x")), Err(Refused::Auth));
    }

    #[test]
    fn rpc_tokens_are_derived_apart_from_the_secret_and_accepted_by_any_key() {
        let k = keys(&[B, A], "");
        assert_eq!(
            k.rpc_token(),
            keys(&[B], "x").rpc_token(),
            "the label does not change it"
        );
        assert!(!k.rpc_token().contains(B));
        assert!(k.accepts_rpc_token(keys(&[A], "").rpc_token().as_bytes()));
        assert!(!k.accepts_rpc_token(b""));
        assert!(!keys(&[A], "").accepts_rpc_token(keys(&[B], "").rpc_token().as_bytes()));
    }

    #[test]
    fn weak_secrets_and_bad_labels_are_refused() {
        assert_eq!(ClusterKeys::new(&[], "").err(), Some(KeyError::Empty));
        assert_eq!(
            ClusterKeys::new(&["short".into()], "").err(),
            Some(KeyError::TooShort(5))
        );
        assert_eq!(
            ClusterKeys::new(&[A.into()], "has space").err(),
            Some(KeyError::Label)
        );
        assert!(ClusterKeys::random()
            .open(&keys(&[A], "").seal(b"x"))
            .is_err());
    }
}

//! The `.noduspkg` wire format: fixed header, canonical manifest, DSSE pre-authentication
//! encoding, payload framing. `docs/sync.md` describes it byte by byte.

use std::fmt;

use nodus_fabric::{EventHash, Incarnation, NodeId};
use nodus_policy::TenantId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The 8 bytes every bundle starts with.
pub const MAGIC: &[u8; 8] = b"NODUSPKG";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the fixed header: magic (8), version (2), reserved (2), manifest length (4).
pub const HEADER_LEN: usize = 16;
/// Length of the Ed25519 signature that follows the manifest.
pub const SIGNATURE_LEN: usize = 64;
/// The DSSE payload type the signature's pre-authentication encoding names.
pub const PAYLOAD_TYPE: &str = "application/vnd.nodus.bundle-manifest+json";
/// The only compression this version writes: raw DEFLATE (RFC 1951) of the payload plaintext.
pub const COMPRESSION: &str = "deflate";
/// Most recipients a bundle may be encrypted to.
pub const MAX_RECIPIENTS: usize = 128;
/// Length of an entry frame's header in the payload plaintext: kind (1) and length (8).
pub const FRAME_HEADER_LEN: u64 = 9;

/// A bundle's id: 16 random bytes, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId([u8; 16]);

impl BundleId {
    /// An id from its bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        BundleId(bytes)
    }
    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    pub(crate) fn random() -> Result<Self, String> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| e.to_string())?;
        Ok(BundleId(b))
    }
}

/// Why a text is not a bundle id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bundle id `{0}` is not 32 lowercase hex digits")]
pub struct BundleIdError(String);

impl std::str::FromStr for BundleId {
    type Err = BundleIdError;
    fn from_str(s: &str) -> Result<Self, BundleIdError> {
        lower_hex::<16>(s)
            .map(BundleId)
            .ok_or_else(|| BundleIdError(s.chars().take(40).collect()))
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleId({self})")
    }
}

pub(crate) fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

macro_rules! hex_serde {
    ($name:ty) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
hex_serde!(BundleId);

/// 32 bytes shown as 64 lowercase hex digits (digests, public keys).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hex32(pub [u8; 32]);

impl std::str::FromStr for Hex32 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        lower_hex::<32>(s)
            .map(Hex32)
            .ok_or_else(|| "not 64 lowercase hex digits".to_owned())
    }
}

impl fmt::Display for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}
hex_serde!(Hex32);

/// What an entry of the payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Events of one chain, in seq order, each a length-prefixed canonical event encoding.
    Events,
    /// A CRDT delta (reserved: opaque bytes in this version).
    Crdt,
    /// The sender's public trust material (opaque bytes; never private keys).
    Trust,
}

impl EntryKind {
    /// The byte that names the kind in the payload's entry frames.
    pub const fn tag(self) -> u8 {
        match self {
            EntryKind::Events => 1,
            EntryKind::Crdt => 2,
            EntryKind::Trust => 3,
        }
    }
    /// The name in the manifest.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Events => "events",
            EntryKind::Crdt => "crdt",
            EntryKind::Trust => "trust",
        }
    }
}

/// The sender as the manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSender {
    /// The key id the receiver's trust store knows the key by.
    pub key_id: String,
    /// The Ed25519 public key (32 bytes, hex).
    pub public_key: Hex32,
}

/// One chain's range in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestChain {
    /// Index of the `events` entry holding the range.
    pub entry: u32,
    /// First seq in the bundle; the receiver must already hold `from − 1` contiguously.
    pub from: u64,
    /// The hash of the event at `to`.
    pub head_hash: EventHash,
    /// The chain's incarnation.
    pub incarnation: Incarnation,
    /// The chain's node.
    pub node_id: NodeId,
    /// The hash of the event at `from − 1` (zero when `from` is 1): the prerequisite.
    pub prereq_hash: EventHash,
    /// Last seq in the bundle.
    pub to: u64,
}

/// One entry of the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// What it holds.
    pub kind: EntryKind,
    /// Its length in bytes (frame header excluded).
    pub len: u64,
    /// SHA-256 of its bytes.
    pub sha256: Hex32,
}

/// The signed manifest. Field order is the canonical key order (lexicographic); the canonical
/// form is `serde_json`'s compact output of this struct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The bundle id.
    pub bundle_id: BundleId,
    /// Each chain's range, sorted by `(node_id, incarnation)`.
    pub chains: Vec<ManifestChain>,
    /// `deflate`.
    pub compression: String,
    /// When the bundle was made, unix seconds.
    pub created_at: u64,
    /// The payload's entries, in payload order.
    pub entries: Vec<ManifestEntry>,
    /// When the bundle stops being importable, unix seconds.
    pub expires_at: u64,
    /// The format version (1).
    pub format: u16,
    /// The payload plaintext length (entry frames included), before compression.
    pub payload_len: u64,
    /// SHA-256 (hex) of each recipient's `age1…` text, sorted, unique.
    pub recipients: Vec<Hex32>,
    /// The sender.
    pub sender: ManifestSender,
    /// The tenant.
    pub tenant: TenantId,
}

impl Manifest {
    /// The canonical bytes.
    pub(crate) fn to_canonical(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// DSSE's pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// The fixed header.
pub(crate) fn encode_header(manifest_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let (magic, rest) = h.split_at_mut(8);
    magic.copy_from_slice(MAGIC);
    let (ver, rest) = rest.split_at_mut(2);
    ver.copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    let (_reserved, len) = rest.split_at_mut(2);
    len.copy_from_slice(&manifest_len.to_be_bytes());
    h
}

/// The fingerprint a manifest lists for an age X25519 recipient: SHA-256 of its `age1…` text.
pub fn recipient_fingerprint(recipient: &age::x25519::Recipient) -> [u8; 32] {
    Sha256::digest(recipient.to_string().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn header_layout() {
        let h = encode_header(0x0102_0304);
        assert_eq!(&h[..8], b"NODUSPKG");
        assert_eq!(&h[8..], &[0, 1, 0, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn bundle_id_text() {
        let id: BundleId = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        assert_eq!(id.to_string(), "000102030405060708090a0b0c0d0e0f");
        assert!(
            "000102030405060708090A0B0C0D0E0F"
                .parse::<BundleId>()
                .is_err()
        );
    }
}

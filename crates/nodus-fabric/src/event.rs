//! Events, their identity, and the canonical encoding their hash covers.

use std::fmt;
use std::sync::Arc;

use nodus_policy::{Label, LabelError, LabelScheme, TenantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{PayloadError, check_canonical, to_canonical};

/// The domain-separation tag that starts every event's hash input: `nodus.fabric.event.v1` and a
/// NUL (22 bytes).
pub const EVENT_TAG: &[u8] = b"nodus.fabric.event.v1\0";

/// Longest event kind, in bytes.
pub const MAX_KIND_LEN: usize = 128;
/// Longest entity id, in bytes.
pub const MAX_ENTITY_LEN: usize = 256;
/// Longest label text, in bytes.
pub const MAX_LABEL_LEN: usize = 1024;
/// Longest canonical payload text, in bytes (4 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Largest value of the integer fields `seq`, `lamport` and `time_ms` (SQLite stores signed
/// 64-bit integers).
pub const MAX_COUNTER: u64 = i64::MAX as u64;

/// Why a text is not a valid field of an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// A node id is not `k` followed by 32 lowercase hex digits.
    #[error("node id `{0}` is not `k` followed by 32 lowercase hex digits")]
    NodeId(String),
    /// An incarnation is not 32 lowercase hex digits.
    #[error("incarnation `{0}` is not 32 lowercase hex digits")]
    Incarnation(String),
    /// An event hash is not 64 lowercase hex digits.
    #[error("event hash `{0}` is not 64 lowercase hex digits")]
    Hash(String),
    /// An event kind is not a dotted name.
    #[error(
        "event kind `{0}` is not a dotted name: two or more segments of `a-z 0-9 _`, each starting with a letter, at most {MAX_KIND_LEN} bytes"
    )]
    Kind(String),
    /// An entity id is empty, too long or holds a control character.
    #[error(
        "entity id `{0}` is not 1 to {MAX_ENTITY_LEN} bytes of text without control characters"
    )]
    Entity(String),
    /// A label text is empty, too long or holds a control character.
    #[error("label `{0}` is not 1 to {MAX_LABEL_LEN} bytes of text without control characters")]
    Label(String),
    /// The label text does not parse under the scheme given.
    #[error("label `{text}` does not parse under the scheme: {source}")]
    LabelScheme {
        /// The label text.
        text: String,
        /// Why.
        source: LabelError,
    },
    /// The payload is not canonical JSON, too deep or too large.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

macro_rules! text_serde {
    ($name:ident) => {
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

/// A node: the vault key id of its signing key, 16 bytes shown as `k` + 32 lowercase hex digits
/// (the text form of `nodus_security::vault::KeyId`; from a key id,
/// `NodeId::from_bytes(*key_id.as_bytes())`).
///
/// ```
/// use nodus_fabric::NodeId;
/// let n: NodeId = "k000102030405060708090a0b0c0d0e0f".parse().unwrap();
/// assert_eq!(n.as_bytes()[15], 0x0f);
/// assert!("K000102030405060708090A0B0C0D0E0F".parse::<NodeId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 16]);

impl NodeId {
    /// A node id from the key id's 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        NodeId(bytes)
    }
    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::str::FromStr for NodeId {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        s.strip_prefix('k')
            .and_then(parse_hex::<16>)
            .map(NodeId)
            .ok_or_else(|| FieldError::NodeId(clip(s)))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

text_serde!(NodeId);

/// A node's incarnation: 16 random bytes made when its store is created, shown as 32 lowercase hex
/// digits. A reinstalled node gets a new one, so its chain restarting at seq 1 is a new chain, not
/// a replay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Incarnation([u8; 16]);

impl Incarnation {
    /// An incarnation from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Incarnation(bytes)
    }
    /// A fresh random incarnation from the operating system's generator.
    ///
    /// # Errors
    /// The generator's error, as text.
    pub fn random() -> Result<Self, String> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| e.to_string())?;
        Ok(Incarnation(b))
    }
    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::str::FromStr for Incarnation {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        parse_hex::<16>(s)
            .map(Incarnation)
            .ok_or_else(|| FieldError::Incarnation(clip(s)))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Incarnation({self})")
    }
}

text_serde!(Incarnation);

/// One hash chain within a tenant: a node in one incarnation. Shown as `<node_id>/<incarnation>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChainId {
    /// The node that appended the chain's events.
    pub node_id: NodeId,
    /// The incarnation of that node's store.
    pub incarnation: Incarnation,
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node_id, self.incarnation)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({self})")
    }
}

/// A SHA-256 event hash, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventHash([u8; 32]);

impl EventHash {
    /// 32 zero bytes: the `prev_hash` of a chain's first event.
    pub const ZERO: EventHash = EventHash([0; 32]);
    /// A hash from its bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        EventHash(bytes)
    }
    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::str::FromStr for EventHash {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        parse_hex::<32>(s)
            .map(EventHash)
            .ok_or_else(|| FieldError::Hash(clip(s)))
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({self})")
    }
}

text_serde!(EventHash);

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            ///
            /// # Errors
            /// [`FieldError`] naming the rule broken.
            pub fn new(s: impl AsRef<str>) -> Result<Self, FieldError> {
                let s = s.as_ref();
                let check: fn(&str) -> Result<(), FieldError> = $check;
                check(s)?;
                Ok($name(Arc::from(s)))
            }
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        text_serde!($name);
    };
}

fn check_kind(s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_KIND_LEN
        && s.contains('.')
        && s.split('.').all(|seg| {
            let mut b = seg.bytes();
            b.next().is_some_and(|c| c.is_ascii_lowercase())
                && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(FieldError::Kind(clip(s)))
    }
}

fn plain_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

text_newtype!(
    /// What an event records: a dotted name of two or more segments, each `[a-z][a-z0-9_]*`, at
    /// most [`MAX_KIND_LEN`] bytes (`object.created`, `link.added`, `config.set`).
    ///
    /// ```
    /// use nodus_fabric::EventKind;
    /// assert!(EventKind::new("object.created").is_ok());
    /// assert!(EventKind::new("created").is_err());
    /// assert!(EventKind::new("Object.Created").is_err());
    /// ```
    EventKind,
    check_kind
);

text_newtype!(
    /// The entity an event is about (an object id, a type name, a config key): 1 to
    /// [`MAX_ENTITY_LEN`] bytes of text without control characters.
    EntityId,
    |s| {
        if plain_text(s, MAX_ENTITY_LEN) {
            Ok(())
        } else {
            Err(FieldError::Entity(clip(s)))
        }
    }
);

text_newtype!(
    /// An event's security label in its canonical text under the tenant's label scheme
    /// (`SECRET//CRYPTO`, as [`LabelScheme::format`] writes it): 1 to [`MAX_LABEL_LEN`] bytes
    /// without control characters. The log stores and hashes the text; it never interprets it.
    ///
    /// ```
    /// use nodus_fabric::EventLabel;
    /// use nodus_policy::LabelScheme;
    /// let scheme = LabelScheme::new(["UNCLASSIFIED", "SECRET"], ["CRYPTO"]).unwrap();
    /// let label = EventLabel::from_label(&scheme, scheme.parse("secret//crypto").unwrap());
    /// assert_eq!(label.as_str(), "SECRET//CRYPTO");
    /// assert_eq!(label.parse(&scheme).unwrap(), scheme.parse("SECRET//CRYPTO").unwrap());
    /// ```
    EventLabel,
    |s| {
        if plain_text(s, MAX_LABEL_LEN) {
            Ok(())
        } else {
            Err(FieldError::Label(clip(s)))
        }
    }
);

impl EventLabel {
    /// The canonical text of `label` under `scheme`.
    pub fn from_label(scheme: &LabelScheme, label: Label) -> Self {
        EventLabel(Arc::from(scheme.format(label)))
    }

    /// The label this text names under `scheme`.
    ///
    /// # Errors
    /// [`FieldError::LabelScheme`] when the scheme does not define it.
    pub fn parse(&self, scheme: &LabelScheme) -> Result<Label, FieldError> {
        scheme
            .parse(&self.0)
            .map_err(|source| FieldError::LabelScheme {
                text: clip(&self.0),
                source,
            })
    }
}

/// An event payload: a JSON value held as its **canonical text** (see `docs/fabric.md`,
/// "Canonical payload JSON"), at most [`MAX_PAYLOAD_BYTES`] bytes. One value has one text, so the
/// hash of an event does not depend on how its payload was written.
///
/// ```
/// use nodus_fabric::Payload;
/// let p = Payload::from_value(&serde_json::json!({"b": [1, 2.5], "a": "x"})).unwrap();
/// assert_eq!(p.as_str(), r#"{"a":"x","b":[1,2.5]}"#);
/// assert!(Payload::from_canonical(r#"{"b":1,"a":2}"#).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

impl Payload {
    /// The canonical text of `value`.
    ///
    /// # Errors
    /// [`PayloadError::TooDeep`] or [`PayloadError::TooLarge`].
    pub fn from_value(value: &Value) -> Result<Self, PayloadError> {
        let text = to_canonical(value)?;
        check_len(&text)?;
        Ok(Payload(Arc::from(text)))
    }

    /// Accepts `text` only if it is already canonical.
    ///
    /// # Errors
    /// [`PayloadError`].
    pub fn from_canonical(text: &str) -> Result<Self, PayloadError> {
        check_len(text)?;
        check_canonical(text)?;
        Ok(Payload(Arc::from(text)))
    }

    /// Wraps stored text whose integrity the event hash vouches for.
    pub(crate) fn from_stored(text: String) -> Self {
        Payload(Arc::from(text))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON value.
    ///
    /// # Errors
    /// [`PayloadError::NotJson`] (only for text read from a corrupted store).
    pub fn to_value(&self) -> Result<Value, PayloadError> {
        serde_json::from_str(&self.0).map_err(|e| PayloadError::NotJson(e.to_string()))
    }
}

fn check_len(text: &str) -> Result<(), PayloadError> {
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge {
            len: text.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    /// Serialises as a string holding the canonical text, so the bytes the event hash covers
    /// travel unchanged and a verifier never has to re-canonicalise JSON.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    /// Accepts a string holding canonical text only ([`Payload::from_canonical`]).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Payload::from_canonical(&s).map_err(serde::de::Error::custom)
    }
}

/// An event to append locally: the log assigns its chain, seq, lamport, time and hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// What it happened to.
    pub entity: EntityId,
    /// Its security label.
    pub label: EventLabel,
    /// The data.
    pub payload: Payload,
    /// The version of the payload's shape (see [`Upcasters`](crate::Upcasters)); 1 by default.
    pub model_ver: u32,
}

impl NewEvent {
    /// An event at `model_ver` 1.
    pub fn new(kind: EventKind, entity: EntityId, label: EventLabel, payload: Payload) -> Self {
        NewEvent {
            kind,
            entity,
            label,
            payload,
            model_ver: 1,
        }
    }

    /// Sets the payload's model version.
    #[must_use]
    pub fn model_ver(mut self, model_ver: u32) -> Self {
        self.model_ver = model_ver;
        self
    }
}

/// An event as the log stores it: its identity `(tenant, node_id, incarnation, seq)`, its place in
/// the tenant's Lamport order, its content, and the hash chain link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The tenant.
    pub tenant: TenantId,
    /// The node that appended it.
    pub node_id: NodeId,
    /// That node's incarnation.
    pub incarnation: Incarnation,
    /// Its position in its chain, from 1, contiguous.
    pub seq: u64,
    /// The tenant's Lamport clock when it was appended (greater than every event its node had
    /// applied in the tenant).
    pub lamport: u64,
    /// What happened.
    pub kind: EventKind,
    /// What it happened to.
    pub entity: EntityId,
    /// Its security label (canonical text).
    pub label: EventLabel,
    /// The data (canonical JSON).
    pub payload: Payload,
    /// The payload's model version.
    pub model_ver: u32,
    /// The hash of the chain's previous event ([`EventHash::ZERO`] for seq 1).
    pub prev_hash: EventHash,
    /// SHA-256 of [`Event::canonical_bytes`].
    pub hash: EventHash,
    /// When it was appended, unix milliseconds (the appending node's clock; informative only).
    pub time_ms: u64,
}

impl Event {
    /// Its chain.
    pub fn chain(&self) -> ChainId {
        ChainId {
            node_id: self.node_id,
            incarnation: self.incarnation,
        }
    }

    /// Its identity within the tenant.
    pub fn event_ref(&self) -> EventRef {
        EventRef {
            chain: self.chain(),
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// The canonical encoding the hash covers (every field but `hash`; see `docs/fabric.md`,
    /// "Canonical encoding").
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let p = self.payload.as_str().as_bytes();
        let mut out = Vec::with_capacity(
            EVENT_TAG.len() + 160 + self.kind.as_str().len() + self.entity.as_str().len() + p.len(),
        );
        out.extend_from_slice(EVENT_TAG);
        put_str(&mut out, self.tenant.as_str());
        out.extend_from_slice(self.node_id.as_bytes());
        out.extend_from_slice(self.incarnation.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.lamport.to_be_bytes());
        put_str(&mut out, self.kind.as_str());
        put_str(&mut out, self.entity.as_str());
        put_str(&mut out, self.label.as_str());
        out.extend_from_slice(&self.model_ver.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        put_str(&mut out, self.payload.as_str());
        out.extend_from_slice(self.prev_hash.as_bytes());
        out
    }

    /// SHA-256 of the canonical encoding: what `hash` must be.
    pub fn compute_hash(&self) -> EventHash {
        EventHash(Sha256::digest(self.canonical_bytes()).into())
    }

    /// Decodes a canonical encoding (as [`canonical_bytes`](Self::canonical_bytes) writes it) into
    /// an event whose `hash` is recomputed. Only the exact encoding is accepted: every field must
    /// be valid and nothing may follow `prev_hash`.
    ///
    /// # Errors
    /// [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader(bytes);
        if r.take(EVENT_TAG.len(), "tag")? != EVENT_TAG {
            return Err(DecodeError("tag"));
        }
        let tenant = TenantId::new(r.string("tenant")?).map_err(|_| DecodeError("tenant"))?;
        let node_id = NodeId(r.array::<16>("node_id")?);
        let incarnation = Incarnation(r.array::<16>("incarnation")?);
        let seq = r.u64("seq")?;
        let lamport = r.u64("lamport")?;
        let kind = EventKind::new(r.string("kind")?).map_err(|_| DecodeError("kind"))?;
        let entity = EntityId::new(r.string("entity")?).map_err(|_| DecodeError("entity"))?;
        let label = EventLabel::new(r.string("label")?).map_err(|_| DecodeError("label"))?;
        let model_ver = u32::from_be_bytes(r.array::<4>("model_ver")?);
        let time_ms = r.u64("time_ms")?;
        let payload =
            Payload::from_canonical(r.string("payload")?).map_err(|_| DecodeError("payload"))?;
        let prev_hash = EventHash(r.array::<32>("prev_hash")?);
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        let mut e = Event {
            tenant,
            node_id,
            incarnation,
            seq,
            lamport,
            kind,
            entity,
            label,
            payload,
            model_ver,
            prev_hash,
            hash: EventHash::ZERO,
            time_ms,
        };
        e.hash = e.compute_hash();
        Ok(e)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Every field is bounded far below 4 GiB (the payload by `MAX_PAYLOAD_BYTES`, ids by their
    // types), so the length always fits.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Why bytes are not a canonical event encoding: the field at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a canonical event encoding: bad or truncated `{0}`")]
pub struct DecodeError(pub &'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(field));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        self.take(N, field)?
            .try_into()
            .map_err(|_| DecodeError(field))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array::<8>(field)?))
    }
    fn string(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = u32::from_be_bytes(self.array::<4>(field)?);
        let n = usize::try_from(n).map_err(|_| DecodeError(field))?;
        std::str::from_utf8(self.take(n, field)?).map_err(|_| DecodeError(field))
    }
}

/// An event's identity within a tenant, with its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventRef {
    /// Its chain.
    pub chain: ChainId,
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: EventHash,
}

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.chain, self.seq)
    }
}

//! Audit records and their canonical leaf encoding.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nodus_policy::{ActorId, TenantId};
use serde::{Deserialize, Serialize};

/// The domain tag and version that start every leaf: `nodus.audit.v1` and a NUL.
pub const LEAF_TAG: &[u8] = b"nodus.audit.v1\0";

/// The outcome of an audited action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was allowed (and, for dispatch, the handler succeeded).
    Allowed,
    /// The action was refused by policy.
    Denied,
    /// The action failed (bad input, handler error, I/O).
    Error,
}

impl Outcome {
    fn byte(self) -> u8 {
        match self {
            Outcome::Allowed => 0,
            Outcome::Denied => 1,
            Outcome::Error => 2,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Outcome::Allowed,
            1 => Outcome::Denied,
            2 => Outcome::Error,
            _ => return None,
        })
    }
}

/// One audited action. Built on the hot path from `Arc` clones and static strings, so constructing
/// and enqueueing it allocates nothing when `detail` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix time in milliseconds, supplied by the caller.
    pub time_ms: u64,
    /// The tenant (`None`: a system-level action).
    pub tenant: Option<TenantId>,
    /// The actor.
    pub actor: Option<ActorId>,
    /// The session.
    pub session: Option<Arc<str>>,
    /// What happened: `dispatch`, `fields.decrypt`, `keys.rotated`, `policy.reloaded`, `audit.gap`, …
    pub kind: Cow<'static, str>,
    /// The command, for dispatch records. A [`SharedStr`]: a static name costs nothing to copy.
    pub command: Option<SharedStr>,
    /// The outcome.
    pub outcome: Outcome,
    /// A stable reason code (`MissingPermission`, …).
    pub reason: Option<Cow<'static, str>>,
    /// A small map of details (empty on the hot path).
    pub detail: BTreeMap<String, String>,
    /// The policy epoch the decision was made under.
    pub policy_epoch: u64,
    /// Handler latency, when measured.
    pub latency_ns: Option<u64>,
}

/// An immutable string that is either `'static` or shared behind an [`Arc`].
///
/// Audit records carry names (the command) that are almost always string literals: a `Static`
/// copy is two words with no reference count, so threads recording calls to the same command
/// share no cache line. Names known only at run time are `Shared`. Equality, ordering, hashing,
/// `Display` and serde all go by the text alone.
///
/// ```
/// use nodus_security::audit::SharedStr;
/// let a = SharedStr::from("notes.create");
/// let b = SharedStr::from(String::from("notes.create"));
/// assert_eq!(a, b);
/// assert_eq!(&*a, "notes.create");
/// ```
#[derive(Clone)]
pub enum SharedStr {
    /// A string literal (or any `'static` text).
    Static(&'static str),
    /// Text owned behind a reference count.
    Shared(Arc<str>),
}

impl SharedStr {
    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            SharedStr::Static(s) => s,
            SharedStr::Shared(s) => s,
        }
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for SharedStr {
    fn from(s: &'static str) -> Self {
        SharedStr::Static(s)
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr::Shared(Arc::from(s))
    }
}

impl From<&String> for SharedStr {
    fn from(s: &String) -> Self {
        SharedStr::Shared(Arc::from(s.as_str()))
    }
}

impl From<Arc<str>> for SharedStr {
    fn from(s: Arc<str>) -> Self {
        SharedStr::Shared(s)
    }
}

impl From<&Arc<str>> for SharedStr {
    fn from(s: &Arc<str>) -> Self {
        SharedStr::Shared(s.clone())
    }
}

impl From<Box<str>> for SharedStr {
    fn from(s: Box<str>) -> Self {
        SharedStr::Shared(Arc::from(s))
    }
}

impl From<Cow<'static, str>> for SharedStr {
    fn from(s: Cow<'static, str>) -> Self {
        match s {
            Cow::Borrowed(b) => SharedStr::Static(b),
            Cow::Owned(o) => SharedStr::from(o),
        }
    }
}

impl Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(SharedStr::from(s))
    }
}

/// A record with the sequence number the log gave it (its leaf index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The leaf index.
    pub seq: u64,
    /// The record.
    pub record: AuditRecord,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AuditRecord {
    /// A record of `kind` with `outcome`, stamped now, every other field empty.
    pub fn new(kind: impl Into<Cow<'static, str>>, outcome: Outcome) -> Self {
        AuditRecord {
            time_ms: now_ms(),
            tenant: None,
            actor: None,
            session: None,
            kind: kind.into(),
            command: None,
            outcome,
            reason: None,
            detail: BTreeMap::new(),
            policy_epoch: 0,
            latency_ns: None,
        }
    }

    /// Sets the tenant.
    pub fn tenant(mut self, t: TenantId) -> Self {
        self.tenant = Some(t);
        self
    }

    /// Sets the actor.
    pub fn actor(mut self, a: ActorId) -> Self {
        self.actor = Some(a);
        self
    }

    /// Sets the command.
    pub fn command(mut self, c: impl Into<SharedStr>) -> Self {
        self.command = Some(c.into());
        self
    }

    /// Sets the reason code.
    pub fn reason(mut self, r: impl Into<Cow<'static, str>>) -> Self {
        self.reason = Some(r.into());
        self
    }

    /// Adds a detail.
    pub fn detail(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.detail.insert(k.into(), v.into());
        self
    }

    /// The canonical leaf encoding of this record at index `seq` (see `docs/audit.md`):
    /// `LEAF_TAG ‖ seq u64 ‖ time_ms u64 ‖ ?tenant ‖ ?actor ‖ ?session ‖ kind ‖ ?command ‖ outcome u8 ‖
    /// ?reason ‖ count u32 ‖ (key ‖ value)* ‖ policy_epoch u64 ‖ ?latency_ns u64`, integers big-endian,
    /// strings `u32 length ‖ UTF-8`, optionals `0x00` or `0x01 ‖ value`, details in key order.
    pub fn leaf_bytes(&self, seq: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(LEAF_TAG);
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&self.time_ms.to_be_bytes());
        opt_str(&mut b, self.tenant.as_ref().map(|t| t.as_str()));
        opt_str(&mut b, self.actor.as_ref().map(|a| a.as_str()));
        opt_str(&mut b, self.session.as_deref());
        put_str(&mut b, &self.kind);
        opt_str(&mut b, self.command.as_deref());
        b.push(self.outcome.byte());
        opt_str(&mut b, self.reason.as_deref());
        b.extend_from_slice(&(self.detail.len() as u32).to_be_bytes());
        for (k, v) in &self.detail {
            put_str(&mut b, k);
            put_str(&mut b, v);
        }
        b.extend_from_slice(&self.policy_epoch.to_be_bytes());
        match self.latency_ns {
            None => b.push(0),
            Some(l) => {
                b.push(1);
                b.extend_from_slice(&l.to_be_bytes());
            }
        }
        b
    }

    /// Decodes a leaf encoding into `(seq, record)`, strictly: only the canonical encoding
    /// [`leaf_bytes`](Self::leaf_bytes) produces is accepted (detail keys in strictly ascending
    /// byte order, flags `0` or `1`, an outcome `0`–`2`, valid tenant and actor ids, no trailing
    /// bytes), so every accepted leaf re-encodes to itself byte for byte.
    ///
    /// # Errors
    /// A short description of the first malformed field (never any of the record's content).
    pub fn decode(bytes: &[u8]) -> Result<(u64, AuditRecord), &'static str> {
        let mut r = Reader { b: bytes };
        if r.take(LEAF_TAG.len())? != LEAF_TAG {
            return Err("wrong domain tag or version");
        }
        let seq = r.u64()?;
        let time_ms = r.u64()?;
        let tenant = r
            .opt_str()?
            .map(|s| TenantId::new(s).map_err(|_| "invalid tenant id"))
            .transpose()?;
        let actor = r
            .opt_str()?
            .map(|s| ActorId::new(s).map_err(|_| "invalid actor id"))
            .transpose()?;
        let session = r.opt_str()?.map(Arc::from);
        let kind = Cow::Owned(r.str()?.to_owned());
        let command = r.opt_str()?.map(|c| SharedStr::Shared(Arc::from(c)));
        let outcome = Outcome::from_byte(r.u8()?).ok_or("invalid outcome")?;
        let reason = r.opt_str()?.map(|s| Cow::Owned(s.to_owned()));
        let n = r.u32()?;
        let mut detail = BTreeMap::new();
        let mut prev: Option<&str> = None;
        for _ in 0..n {
            let k = r.str()?;
            let v = r.str()?;
            // Strictly ascending byte order: no two byte strings decode to one record.
            if prev.is_some_and(|p| p.as_bytes() >= k.as_bytes()) {
                return Err("detail keys not in strictly ascending order");
            }
            prev = Some(k);
            detail.insert(k.to_owned(), v.to_owned());
        }
        let policy_epoch = r.u64()?;
        let latency_ns = match r.u8()? {
            0 => None,
            1 => Some(r.u64()?),
            _ => return Err("invalid latency flag"),
        };
        if !r.b.is_empty() {
            return Err("trailing bytes");
        }
        let record = AuditRecord {
            time_ms,
            tenant,
            actor,
            session,
            kind,
            command,
            outcome,
            reason,
            detail,
            policy_epoch,
            latency_ns,
        };
        // The grammar above admits exactly one byte string per record; this re-encoding check
        // keeps that true whatever the encoder does.
        if record.leaf_bytes(seq) != bytes {
            return Err("not the canonical encoding");
        }
        Ok((seq, record))
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => b.push(0),
        Some(s) => {
            b.push(1);
            put_str(b, s);
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.b.len() < n {
            return Err("truncated record");
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes(
            s.try_into().map_err(|_| "truncated record")?,
        ))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let s = self.take(8)?;
        Ok(u64::from_be_bytes(
            s.try_into().map_err(|_| "truncated record")?,
        ))
    }
    fn str(&mut self) -> Result<&'a str, &'static str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "invalid UTF-8")
    }
    fn opt_str(&mut self) -> Result<Option<&'a str>, &'static str> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err("invalid option flag"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoding_is_stable() {
        let r = AuditRecord {
            time_ms: 1,
            ..AuditRecord::new("dispatch", Outcome::Denied)
        }
        .tenant(TenantId::new("t").unwrap())
        .reason("MissingPermission");
        let b = r.leaf_bytes(7);
        assert!(b.starts_with(LEAF_TAG));
        assert_eq!(AuditRecord::decode(&b).unwrap(), (7, r.clone()));
        // Every field is covered: changing any one changes the bytes.
        let mut other = r.clone();
        other.policy_epoch = 1;
        assert_ne!(other.leaf_bytes(7), b);
        assert_ne!(r.leaf_bytes(8), b);
        assert!(AuditRecord::decode(&b[..b.len() - 1]).is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(AuditRecord::decode(&extra).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(seq in any::<u64>(), time in any::<u64>(), kind in "[a-z.]{1,20}", cmd in proptest::option::of("[a-z.]{1,20}"),
                      detail in proptest::collection::btree_map("[a-z]{1,5}", ".{0,10}", 0..4), epoch in any::<u64>(), lat in proptest::option::of(any::<u64>())) {
            let mut r = AuditRecord::new(kind, Outcome::Error);
            r.time_ms = time;
            r.command = cmd.map(SharedStr::from);
            r.detail = detail;
            r.policy_epoch = epoch;
            r.latency_ns = lat;
            r.session = Some(Arc::from("s"));
            prop_assert_eq!(AuditRecord::decode(&r.leaf_bytes(seq)).unwrap(), (seq, r));
        }
    }
}

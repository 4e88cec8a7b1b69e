//! Live sync between connected nodes: the [`DiffTransport`] trait, the signed batch format every
//! transport carries, and its verification against a tenant's [`TrustStore`].
//!
//! A **batch** is what one node publishes for one tenant: either a run of events of the sender's
//! own chains ([`BatchBody::Events`]) or the sender's status ([`BatchBody::Status`]: its
//! version vector, which tells peers what it has applied, and the chain positions it *wants*
//! because a gap holds events back). Each batch carries one Ed25519 signature by the sending
//! node over a domain-separated encoding ([`SIGNING_DOMAIN`] followed by every byte of the batch
//! before the signature; the layout is in `docs/sync.md`, "Batch layout"). A receiver checks, in
//! this order and before decoding any event: size cap → magic → header → sender trusted (not
//! revoked, not expired, trusted for the batch's tenant) → signature → body; and then that every
//! event belongs to the batch's tenant and to a chain of the sender's own node
//! ([`verify_batch`]). Events are deduplicated by identity by the event log on ingest, so a
//! transport may deliver a batch any number of times: the effect is exactly once.
//!
//! Transports: [`MemoryTransport`] (one process), [`FileDropTransport`] (a shared directory) and,
//! behind the feature `nats`, `NatsTransport` (NATS JetStream). All are synchronous to their
//! caller.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};
use nodus_fabric::{
    ChainHead, ChainId, Event, EventHash, EventRef, Incarnation, NodeId, VersionVector,
};
use nodus_policy::TenantId;
use sha2::{Digest as _, Sha256};

use crate::trust::{BundleSigner, SignerError, TrustStore};

mod file_drop;
mod memory;
#[cfg(feature = "nats")]
mod nats;
mod switch;

pub use file_drop::{BATCH_EXTENSION, FileDropTransport};
pub use memory::MemoryTransport;
#[cfg(feature = "nats")]
pub use nats::{NatsConfig, NatsTransport};
pub use switch::Switched;

/// The first 8 bytes of every batch.
pub const BATCH_MAGIC: &[u8; 8] = b"NODUSLB1";
/// What the signature covers before the batch bytes: a domain separator, so a batch signature can
/// never be taken for a bundle's or an audit checkpoint's.
pub const SIGNING_DOMAIN: &[u8] = b"nodus live batch v1\n";
/// The largest batch accepted (bytes, signature included). NATS' default `max_payload` is 1 MiB:
/// senders keep batches well below it.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// The most events in one batch, and the most heads or wants in one status.
pub const MAX_BATCH_ITEMS: usize = 65_536;

const KIND_EVENTS: u8 = 1;
const KIND_STATUS: u8 = 2;
const SIG_LEN: usize = 64;

/// Why a transport could not publish or deliver. Transient by nature: the caller retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport is not reachable now (disconnected, server down).
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// A file operation failed.
    #[error("i/o error at `{path}`: {message}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        message: String,
    },
    /// The batch is larger than the transport carries.
    #[error("batch of {size} bytes is above the transport's limit of {limit}")]
    TooLarge {
        /// The batch size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The subscription was closed.
    #[error("the subscription is closed")]
    Closed,
}

/// Why a batch was refused by [`verify_batch`] (or could not be built). Each has a stable
/// [`code`](BatchError::code), the `reason` of the `sync.rejected` audit record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Larger than [`MAX_BATCH_BYTES`].
    #[error("batch of {size} bytes is above the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a batch encoding (the field at fault).
    #[error("malformed batch: bad or truncated `{0}`")]
    Malformed(&'static str),
    /// The sender is not in the trust store.
    #[error("batch sender `{key_id}` is not trusted")]
    UntrustedKey {
        /// The sender's key id.
        key_id: String,
    },
    /// The sender was revoked.
    #[error("batch sender `{key_id}` is revoked")]
    RevokedKey {
        /// The sender's key id.
        key_id: String,
    },
    /// The sender's trust ended.
    #[error("trust in batch sender `{key_id}` has expired")]
    KeyExpired {
        /// The sender's key id.
        key_id: String,
    },
    /// The sender is not trusted for the batch's tenant.
    #[error("batch sender `{key_id}` is not trusted for tenant `{tenant}`")]
    KeyNotForTenant {
        /// The sender's key id.
        key_id: String,
        /// The batch's tenant.
        tenant: String,
    },
    /// The signature does not verify under the sender's trusted key.
    #[error("the batch signature does not verify")]
    BadSignature,
    /// The batch is for another tenant than the subscription's.
    #[error("batch for tenant `{got}` delivered on tenant `{expected}`")]
    WrongTenant {
        /// The subscription's tenant.
        expected: String,
        /// The batch's.
        got: String,
    },
    /// An event of the batch belongs to another tenant or to a chain of another node than the
    /// signer's: a node publishes only its own events.
    #[error("event `{event}` is not of the sender's own chains in tenant `{tenant}`")]
    ForeignEvent {
        /// The event (`chain#seq`).
        event: String,
        /// The batch's tenant.
        tenant: String,
    },
    /// The signer failed.
    #[error("cannot sign the batch: {0}")]
    Sign(#[from] SignerError),
}

impl BatchError {
    /// The stable code (`malformed`, `too_large`, `untrusted_key`, `revoked_key`, `key_expired`,
    /// `key_not_for_tenant`, `bad_signature`, `wrong_tenant`, `foreign_event`, `sign_failed`).
    pub fn code(&self) -> &'static str {
        match self {
            BatchError::TooLarge { .. } => "too_large",
            BatchError::Malformed(_) => "malformed",
            BatchError::UntrustedKey { .. } => "untrusted_key",
            BatchError::RevokedKey { .. } => "revoked_key",
            BatchError::KeyExpired { .. } => "key_expired",
            BatchError::KeyNotForTenant { .. } => "key_not_for_tenant",
            BatchError::BadSignature => "bad_signature",
            BatchError::WrongTenant { .. } => "wrong_tenant",
            BatchError::ForeignEvent { .. } => "foreign_event",
            BatchError::Sign(_) => "sign_failed",
        }
    }
}

/// A chain position a receiver asks for: the events of `chain` from `from_seq` on (its gap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Want {
    /// The chain.
    pub chain: ChainId,
    /// The first missing seq.
    pub from_seq: u64,
}

/// A node's status for one tenant: what it has applied and what it misses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its version vector (the head of every chain it has applied).
    pub heads: VersionVector,
    /// The gaps it waits on.
    pub wants: Vec<Want>,
}

/// What a batch carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchBody {
    /// Events of the sender's own chains, in chain and seq order.
    Events(Vec<Event>),
    /// The sender's status.
    Status(PeerStatus),
}

/// A verified (or about to be signed) batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The tenant.
    pub tenant: TenantId,
    /// The sender's key id (a node's key id is its node id).
    pub sender: String,
    /// When it was made, unix ms (the sender's clock; informative, and how old statuses are told).
    pub time_ms: u64,
    /// 16 random bytes: two batches with the same content still differ (a resend is not taken
    /// for a transport-level duplicate).
    pub nonce: [u8; 16],
    /// The content.
    pub body: BatchBody,
}

/// The encoded, signed bytes of a batch: what transports carry.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedBatch(Arc<[u8]>);

impl fmt::Debug for SignedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedBatch")
            .field("id", &self.id())
            .field("len", &self.0.len())
            .finish()
    }
}

impl SignedBatch {
    /// Bytes as received (nothing is checked until [`verify_batch`]).
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        SignedBatch(bytes.into())
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The batch id: the SHA-256 of its bytes, 64 hex digits (the NATS message id, a file
    /// name's tail).
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(&self.0))
    }
    /// The header as claimed, unverified: for routing and catch-up filtering only, never for a
    /// decision about content.
    ///
    /// # Errors
    /// [`BatchError::Malformed`].
    pub fn peek(&self) -> Result<BatchHeader, BatchError> {
        let mut r = Reader(&self.0);
        let (header, _) = read_header(&mut r)?;
        Ok(header)
    }
    /// `true` when the batch is a run of events that `heads` already covers (every event at or
    /// below its chain's head), or a status: either way nothing a receiver at `heads` needs.
    /// Unverified: used by transports to skip history on catch-up, never to accept anything.
    pub fn covered_by(&self, heads: &VersionVector) -> bool {
        let Some(body) = self
            .0
            .len()
            .checked_sub(SIG_LEN)
            .and_then(|n| self.0.get(..n))
        else {
            return false;
        };
        let mut r = Reader(body);
        let Ok((_, kind)) = read_header(&mut r) else {
            return false;
        };
        if kind != KIND_EVENTS {
            return true;
        }
        if r.take(16, "nonce").is_err() {
            return false;
        }
        match read_events(&mut r) {
            Ok(events) => events
                .iter()
                .all(|e| heads.get(&e.chain()).is_some_and(|h| h.seq >= e.seq)),
            Err(_) => false,
        }
    }
}

/// A batch header as its bytes claim it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The tenant named.
    pub tenant: String,
    /// The sender named.
    pub sender: String,
    /// The time named, unix ms.
    pub time_ms: u64,
    /// `true` for a status, `false` for events.
    pub is_status: bool,
}

impl Batch {
    /// A batch of `events` (of the sender's own chains) for `tenant`, made now.
    ///
    /// # Errors
    /// [`BatchError::Malformed`] when the random generator fails.
    pub fn events(
        tenant: TenantId,
        sender: impl Into<String>,
        events: Vec<Event>,
    ) -> Result<Self, BatchError> {
        Self::new(tenant, sender, BatchBody::Events(events))
    }

    /// A status batch for `tenant`, made now.
    ///
    /// # Errors
    /// [`BatchError::Malformed`] when the random generator fails.
    pub fn status(
        tenant: TenantId,
        sender: impl Into<String>,
        status: PeerStatus,
    ) -> Result<Self, BatchError> {
        Self::new(tenant, sender, BatchBody::Status(status))
    }

    fn new(
        tenant: TenantId,
        sender: impl Into<String>,
        body: BatchBody,
    ) -> Result<Self, BatchError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| BatchError::Malformed("nonce"))?;
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Ok(Batch {
            tenant,
            sender: sender.into(),
            time_ms,
            nonce,
            body,
        })
    }

    /// The batch's bytes before the signature (see `docs/sync.md`, "Batch layout").
    ///
    /// # Errors
    /// [`BatchError::Malformed`] when a field is too long for its length prefix.
    pub fn encode_unsigned(&self) -> Result<Vec<u8>, BatchError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(BATCH_MAGIC);
        out.push(match self.body {
            BatchBody::Events(_) => KIND_EVENTS,
            BatchBody::Status(_) => KIND_STATUS,
        });
        put_short(&mut out, self.tenant.as_str(), "tenant")?;
        put_short(&mut out, &self.sender, "sender")?;
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        match &self.body {
            BatchBody::Events(events) => {
                put_count(&mut out, events.len(), "events")?;
                for e in events {
                    let bytes = e.canonical_bytes();
                    let len =
                        u32::try_from(bytes.len()).map_err(|_| BatchError::Malformed("event"))?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&bytes);
                }
            }
            BatchBody::Status(s) => {
                put_count(&mut out, s.heads.len(), "heads")?;
                for (chain, head) in &s.heads {
                    put_chain(&mut out, chain);
                    out.extend_from_slice(&head.seq.to_be_bytes());
                    out.extend_from_slice(head.hash.as_bytes());
                }
                put_count(&mut out, s.wants.len(), "wants")?;
                for w in &s.wants {
                    put_chain(&mut out, &w.chain);
                    out.extend_from_slice(&w.from_seq.to_be_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Encodes and signs the batch: `unsigned ‖ Ed25519(SIGNING_DOMAIN ‖ unsigned)`.
    ///
    /// # Errors
    /// [`BatchError::Sign`] when the signer fails; [`BatchError::TooLarge`] above
    /// [`MAX_BATCH_BYTES`]; [`BatchError::Malformed`] for oversized fields.
    pub fn sign(&self, signer: &dyn BundleSigner) -> Result<SignedBatch, BatchError> {
        let mut out = self.encode_unsigned()?;
        let size = out.len() + SIG_LEN;
        if size > MAX_BATCH_BYTES {
            return Err(BatchError::TooLarge {
                size,
                limit: MAX_BATCH_BYTES,
            });
        }
        let sig = signer.sign(&signing_input(&out))?;
        out.extend_from_slice(&sig);
        Ok(SignedBatch(out.into()))
    }
}

/// What the signature covers: [`SIGNING_DOMAIN`] followed by the unsigned batch bytes.
pub fn signing_input(unsigned: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_DOMAIN.len() + unsigned.len());
    m.extend_from_slice(SIGNING_DOMAIN);
    m.extend_from_slice(unsigned);
    m
}

/// Verifies a batch delivered on `tenant`'s subscription against `trust` at `now_unix` (seconds),
/// in the order of the module documentation, and decodes it.
///
/// # Errors
/// [`BatchError`] naming the first check that failed; nothing of the batch may be used then.
pub fn verify_batch(
    batch: &SignedBatch,
    tenant: &TenantId,
    trust: &TrustStore,
    now_unix: u64,
) -> Result<Batch, BatchError> {
    let bytes = batch.as_bytes();
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge {
            size: bytes.len(),
            limit: MAX_BATCH_BYTES,
        });
    }
    let split = bytes
        .len()
        .checked_sub(SIG_LEN)
        .ok_or(BatchError::Malformed("signature"))?;
    let (unsigned, sig) = bytes.split_at(split);
    let mut r = Reader(unsigned);
    let (header, kind) = read_header(&mut r)?;
    if header.tenant != tenant.as_str() {
        return Err(BatchError::WrongTenant {
            expected: tenant.as_str().to_owned(),
            got: clip(&header.tenant),
        });
    }
    let key = trust
        .get(&header.sender)
        .ok_or_else(|| BatchError::UntrustedKey {
            key_id: clip(&header.sender),
        })?;
    if key.revoked {
        return Err(BatchError::RevokedKey {
            key_id: key.key_id.clone(),
        });
    }
    if key.not_after.is_some_and(|t| now_unix > t) {
        return Err(BatchError::KeyExpired {
            key_id: key.key_id.clone(),
        });
    }
    if key
        .tenants
        .as_ref()
        .is_some_and(|ts| !ts.contains(tenant.as_str()))
    {
        return Err(BatchError::KeyNotForTenant {
            key_id: key.key_id.clone(),
            tenant: tenant.as_str().to_owned(),
        });
    }
    let sig: [u8; SIG_LEN] = sig
        .try_into()
        .map_err(|_| BatchError::Malformed("signature"))?;
    let vk = VerifyingKey::from_bytes(&key.public_key).map_err(|_| BatchError::BadSignature)?;
    vk.verify_strict(&signing_input(unsigned), &Signature::from_bytes(&sig))
        .map_err(|_| BatchError::BadSignature)?;
    let time_ms = header.time_ms;
    let nonce: [u8; 16] = r.array("nonce")?;
    let body = match kind {
        KIND_EVENTS => {
            let events = read_events(&mut r)?;
            for e in &events {
                if e.tenant != *tenant || e.node_id.to_string() != header.sender {
                    return Err(BatchError::ForeignEvent {
                        event: format!("{}#{}", e.chain(), e.seq),
                        tenant: tenant.as_str().to_owned(),
                    });
                }
            }
            BatchBody::Events(events)
        }
        _ => BatchBody::Status(read_status(&mut r)?),
    };
    if !r.0.is_empty() {
        return Err(BatchError::Malformed("trailing bytes"));
    }
    Ok(Batch {
        tenant: tenant.clone(),
        sender: header.sender,
        time_ms,
        nonce,
        body,
    })
}

/// The gaps of a tenant as wants: for each chain with pending events, the first seq after its
/// head (`heads` is the receiver's version vector, `pending` its held events).
pub fn wants_for(heads: &VersionVector, pending: &[EventRef]) -> Vec<Want> {
    let mut out: BTreeMap<ChainId, u64> = BTreeMap::new();
    for p in pending {
        let from = heads.get(&p.chain).map_or(1, |h| h.seq.saturating_add(1));
        if p.seq > from {
            out.insert(p.chain, from);
        }
    }
    out.into_iter()
        .map(|(chain, from_seq)| Want { chain, from_seq })
        .collect()
}

/// One delivery of a subscription: a batch, to acknowledge once its events are applied.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The batch.
    pub batch: SignedBatch,
    /// The subscription's token for [`Subscription::ack`].
    pub token: u64,
    /// `true` when the transport says this is a redelivery.
    pub redelivered: bool,
}

/// An open subscription to one tenant's batches. At-least-once: a delivery not acknowledged is
/// delivered again (after the transport's acknowledgement wait, or on the next subscription).
pub trait Subscription: Send {
    /// The next batch, waiting up to `timeout`; `Ok(None)` when none came.
    ///
    /// # Errors
    /// [`TransportError`]: the caller drops the subscription and subscribes again later.
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError>;

    /// Acknowledges a delivery: its batch is ingested and applied (or refused for good).
    ///
    /// # Errors
    /// [`TransportError`]; the batch will then be delivered again (harmless: deduplicated).
    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError>;
}

/// A channel of signed batches between the nodes of a deployment, per tenant. Object safe; share
/// it as `Arc<dyn DiffTransport>`.
pub trait DiffTransport: Send + Sync {
    /// Publishes a batch on `tenant`'s channel (every subscriber of the tenant receives it, the
    /// publisher's own subscriptions included).
    ///
    /// # Errors
    /// [`TransportError`]: the caller keeps the events (they are in its log) and publishes again.
    fn publish(&self, tenant: &TenantId, batch: &SignedBatch) -> Result<(), TransportError>;

    /// Subscribes `subscriber` (a node's stable name: its durable position where the transport
    /// keeps one) to `tenant`'s batches. `from` is the subscriber's version vector: batches it
    /// already covers may be skipped, so a node that was offline catches up without a full
    /// resend.
    ///
    /// # Errors
    /// [`TransportError`].
    fn subscribe(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        from: &VersionVector,
    ) -> Result<Box<dyn Subscription>, TransportError>;
}

impl<T: DiffTransport + ?Sized> DiffTransport for Arc<T> {
    fn publish(&self, tenant: &TenantId, batch: &SignedBatch) -> Result<(), TransportError> {
        (**self).publish(tenant, batch)
    }
    fn subscribe(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        from: &VersionVector,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        (**self).subscribe(tenant, subscriber, from)
    }
}

/// A tenant as one token of a path or a NATS subject: the id when it is made of
/// `A-Z a-z 0-9 _ -` only, else `x` and the hex of the id.
pub(crate) fn tenant_token(tenant: &TenantId) -> String {
    let t = tenant.as_str();
    if !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        t.to_owned()
    } else {
        format!("x{}", hex::encode(t))
    }
}

// ---- encoding ---------------------------------------------------------------------------------

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn put_short(out: &mut Vec<u8>, s: &str, field: &'static str) -> Result<(), BatchError> {
    let len = u16::try_from(s.len()).map_err(|_| BatchError::Malformed(field))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize, field: &'static str) -> Result<(), BatchError> {
    if n > MAX_BATCH_ITEMS {
        return Err(BatchError::Malformed(field));
    }
    let n = u32::try_from(n).map_err(|_| BatchError::Malformed(field))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_chain(out: &mut Vec<u8>, chain: &ChainId) {
    out.extend_from_slice(chain.node_id.as_bytes());
    out.extend_from_slice(chain.incarnation.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], BatchError> {
        if self.0.len() < n {
            return Err(BatchError::Malformed(field));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], BatchError> {
        self.take(N, field)?
            .try_into()
            .map_err(|_| BatchError::Malformed(field))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, BatchError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, BatchError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    fn short_str(&mut self, field: &'static str) -> Result<String, BatchError> {
        let len = u16::from_be_bytes(self.array(field)?);
        let bytes = self.take(usize::from(len), field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| BatchError::Malformed(field))
    }
    fn count(&mut self, field: &'static str) -> Result<usize, BatchError> {
        let n = usize::try_from(self.u32(field)?).map_err(|_| BatchError::Malformed(field))?;
        if n > MAX_BATCH_ITEMS {
            return Err(BatchError::Malformed(field));
        }
        Ok(n)
    }
    fn chain(&mut self, field: &'static str) -> Result<ChainId, BatchError> {
        Ok(ChainId {
            node_id: NodeId::from_bytes(self.array(field)?),
            incarnation: Incarnation::from_bytes(self.array(field)?),
        })
    }
}

/// Reads magic, kind, tenant, sender and time (not the nonce).
fn read_header(r: &mut Reader<'_>) -> Result<(BatchHeader, u8), BatchError> {
    if r.take(BATCH_MAGIC.len(), "magic")? != BATCH_MAGIC {
        return Err(BatchError::Malformed("magic"));
    }
    let kind = r.array::<1>("kind")?[0];
    if kind != KIND_EVENTS && kind != KIND_STATUS {
        return Err(BatchError::Malformed("kind"));
    }
    let tenant = r.short_str("tenant")?;
    let sender = r.short_str("sender")?;
    let time_ms = r.u64("time_ms")?;
    Ok((
        BatchHeader {
            tenant,
            sender,
            time_ms,
            is_status: kind == KIND_STATUS,
        },
        kind,
    ))
}

fn read_events(r: &mut Reader<'_>) -> Result<Vec<Event>, BatchError> {
    let n = r.count("events")?;
    let mut events = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let len = usize::try_from(r.u32("event")?).map_err(|_| BatchError::Malformed("event"))?;
        let bytes = r.take(len, "event")?;
        events.push(Event::decode(bytes).map_err(|e| BatchError::Malformed(e.0))?);
    }
    Ok(events)
}

fn read_status(r: &mut Reader<'_>) -> Result<PeerStatus, BatchError> {
    let n = r.count("heads")?;
    let mut heads = VersionVector::new();
    for _ in 0..n {
        let chain = r.chain("heads")?;
        let seq = r.u64("heads")?;
        let hash = EventHash::from_bytes(r.array("heads")?);
        heads.insert(chain, ChainHead { seq, hash });
    }
    let n = r.count("wants")?;
    let mut wants = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let chain = r.chain("wants")?;
        let from_seq = r.u64("wants")?;
        wants.push(Want { chain, from_seq });
    }
    Ok(PeerStatus { heads, wants })
}

//! The live sync agent: one thread per instance, started by
//! [`NodusBuilder::sync`](crate::NodusBuilder::sync) and joined on shutdown, that keeps this
//! node's tenants current with its peers over a [`DiffTransport`].
//!
//! For each synced tenant, every `poll` it:
//!
//! 1. **publishes** the events this node appended since the last publish (its own chain), as
//!    batches signed with the node key in the vault;
//! 2. **receives** batches: each is verified against the tenant's trust store (the peers trusted
//!    with [`SyncAdmin::trust_peer`](crate::sync_commands::SyncAdmin::trust_peer)) before
//!    anything in it is used; a refused batch (bad signature, untrusted or revoked sender, sender
//!    not trusted for the tenant, events of another node's chain, malformed) is audited as
//!    `sync.rejected` with the code and acknowledged, and the stream goes on. The events of a
//!    good batch are admitted under the tenant's *current* policy (labels parse and are within
//!    `sync.import_ceiling`, or the scheme's top when the key is not set; object types known),
//!    ingested and applied in one transaction ([`Fabric::ingest`](nodus_fabric::Fabric)):
//!    duplicates have no effect, equivocations are quarantined by the log and audited as
//!    `sync.equivocation`, events after a gap wait. Only then is the batch acknowledged. An event
//!    the policy does not admit is not applied (audited once as `sync.quarantined`): its chain
//!    waits at it, and it is checked again each time it is delivered;
//! 3. **reports** its status (its version vector and the gaps it waits on) every
//!    `status_every`, and at once when a gap appears. A peer's status tells this node how far the
//!    peer has applied its chain (the lag metric) and what it misses; this node resends from its
//!    own log what a peer asks for, or what a peer has stopped short of for longer than
//!    `resend_after`.
//!
//! After each ingest that applied or held events, the event bus carries `sync.applied` (tenant
//! scoped): `{"applied": n, "pending": n, "heads": {"<chain>": highest seq applied}}`.
//!
//! Metrics (through the `metrics` facade, when the host installed a recorder):
//! `nodus_sync_batches_total{tenant, direction, kind}`, `nodus_sync_events_applied_total{tenant}`,
//! `nodus_sync_duplicates_total{tenant}`, `nodus_sync_rejections_total{tenant, reason}` and the
//! gauge `nodus_sync_peer_lag{tenant, peer}` (events of this node's chain the peer has not
//! applied). The same figures are in `sync.status` (`live`) and [`Nodus::live_sync_status`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use nodus_fabric::{ChainId, Event, EventRef, TenantEventLog, VersionVector};
use nodus_policy::TenantId;
use nodus_security::audit::{AuditRecord, Outcome};
use nodus_sync::transport::{
    Batch, BatchBody, BatchError, DiffTransport, PeerStatus, SignedBatch, Subscription,
    verify_batch, wants_for,
};
use nodus_sync::{Admission as _, Decision, TrustStore, TrustedKey};
use parking_lot::Mutex;
use serde::Serialize;

use crate::nodus::{Inner, Nodus};

/// How the live sync agent paces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSyncOptions {
    /// The tenants to sync; `None`: every tenant of the policy when the instance starts.
    pub tenants: Option<Vec<TenantId>>,
    /// How often local appends are looked for, and the longest wait for a batch (default 1 ms).
    pub poll: Duration,
    /// How often this node publishes its status (default 250 ms).
    pub status_every: Duration,
    /// How long a peer may stay short of this node's head before it is resent (default 1 s).
    pub resend_after: Duration,
    /// The most events in one published batch (default 512).
    pub max_batch_events: usize,
    /// How long to wait before subscribing again after a transport error (default 200 ms).
    pub retry_after: Duration,
}

impl Default for LiveSyncOptions {
    fn default() -> Self {
        LiveSyncOptions {
            tenants: None,
            poll: Duration::from_millis(1),
            status_every: Duration::from_millis(250),
            resend_after: Duration::from_secs(1),
            max_batch_events: 512,
            retry_after: Duration::from_millis(200),
        }
    }
}

/// A live peer of a tenant as this node sees it (from its last status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LivePeer {
    /// The peer's key id (its node id).
    pub key_id: String,
    /// When its last status arrived, unix ms.
    pub last_seen_ms: u64,
    /// The highest seq of this node's chain it has applied.
    pub applied_seq: u64,
    /// Events of this node's chain it has not applied yet.
    pub lag: u64,
    /// Gaps it reported waiting on.
    pub wants: u64,
}

/// Live sync of one tenant: counters since the instance started, and the live peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LiveStatus {
    /// Batches received (verified or not).
    pub batches_in: u64,
    /// Batches published (events and statuses).
    pub batches_out: u64,
    /// Events of peers applied here.
    pub applied: u64,
    /// Events received again with no effect.
    pub duplicates: u64,
    /// Batches refused (`sync.rejected`) and events the log refused.
    pub rejected: u64,
    /// Equivocations found (`sync.equivocation`).
    pub equivocations: u64,
    /// Events the current policy does not admit, held back.
    pub held: u64,
    /// Events resent to peers that asked or fell behind.
    pub resent: u64,
    /// The seq this node has published its chain up to.
    pub published_seq: u64,
    /// Events waiting after a gap.
    pub pending: u64,
    /// `true` while the subscription is up.
    pub connected: bool,
    /// Peers that reported a status, by key id.
    pub peers: Vec<LivePeer>,
}

#[derive(Default)]
struct Counters {
    batches_in: AtomicU64,
    batches_out: AtomicU64,
    applied: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    equivocations: AtomicU64,
    held: AtomicU64,
    resent: AtomicU64,
}

/// What the agent shares with readers of its status.
#[derive(Default)]
pub(crate) struct LiveShared {
    tenants: Mutex<BTreeMap<TenantId, TenantView>>,
}

#[derive(Default)]
struct TenantView {
    counters: Arc<Counters>,
    published_seq: u64,
    pending: u64,
    connected: bool,
    peers: BTreeMap<String, LivePeer>,
}

/// The running agent: its stop flag and thread.
pub(crate) struct AgentHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
    pub(crate) shared: Arc<LiveShared>,
}

impl AgentHandle {
    /// Stops the agent and joins its thread (unless called from that thread, when the last
    /// handle is dropped there: then it only signals).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if std::thread::current().id() != self.thread_id
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the agent of `nodus` over `transport`.
pub(crate) fn start(
    nodus: &Nodus,
    transport: Arc<dyn DiffTransport>,
    options: LiveSyncOptions,
) -> std::io::Result<AgentHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(LiveShared::default());
    let weak = Arc::downgrade(&nodus.inner);
    let tenants = options
        .tenants
        .clone()
        .unwrap_or_else(|| nodus.inner.policy.tenants());
    let thread = {
        let stop = stop.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("nodus-sync-agent".into())
            .spawn(move || run(weak, transport, options, tenants, stop, shared))?
    };
    Ok(AgentHandle {
        stop,
        thread_id: thread.thread().id(),
        thread: Some(thread),
        shared,
    })
}

/// The live status of `tenant`, when the instance runs an agent that syncs it.
pub(crate) fn live_status(n: &Nodus, tenant: &TenantId) -> Option<LiveStatus> {
    let shared = n.inner.sync_agent.lock().as_ref()?.shared.clone();
    let tenants = shared.tenants.lock();
    let v = tenants.get(tenant)?;
    let c = &v.counters;
    Some(LiveStatus {
        batches_in: c.batches_in.load(Ordering::Relaxed),
        batches_out: c.batches_out.load(Ordering::Relaxed),
        applied: c.applied.load(Ordering::Relaxed),
        duplicates: c.duplicates.load(Ordering::Relaxed),
        rejected: c.rejected.load(Ordering::Relaxed),
        equivocations: c.equivocations.load(Ordering::Relaxed),
        held: c.held.load(Ordering::Relaxed),
        resent: c.resent.load(Ordering::Relaxed),
        published_seq: v.published_seq,
        pending: v.pending,
        connected: v.connected,
        peers: v.peers.values().cloned().collect(),
    })
}

impl Nodus {
    /// Live sync of `tenant` (counters, live peers and their lag), when the instance runs a sync
    /// agent ([`NodusBuilder::sync`](crate::NodusBuilder::sync)) for it; `None` otherwise.
    pub fn live_sync_status(&self, tenant: &TenantId) -> Option<LiveStatus> {
        live_status(self, tenant)
    }
}

/// A peer's last status, as the agent keeps it for resend decisions.
struct PeerTrack {
    applied_seq: u64,
    /// When `applied_seq` last moved (or was first seen).
    since: Instant,
    /// When this node last resent to it.
    resent_at: Option<Instant>,
}

struct TenantState {
    tenant: TenantId,
    sub: Option<Box<dyn Subscription>>,
    retry_at: Instant,
    published_seq: u64,
    status_at: Option<Instant>,
    gap_status_at: Option<Instant>,
    peers: HashMap<String, PeerTrack>,
    /// Events held by policy, audited once each.
    held: BTreeSet<EventRef>,
    counters: Arc<Counters>,
    /// Resent ranges (from seq) → when, so a want is answered at most once per `resend_after`.
    answered: HashMap<u64, Instant>,
    /// The last ingest (or status) left events waiting after a gap.
    gap: bool,
    /// After a failed publish: not before this.
    publish_after: Option<Instant>,
}

struct Agent {
    weak: std::sync::Weak<Inner>,
    transport: Arc<dyn DiffTransport>,
    options: LiveSyncOptions,
    shared: Arc<LiveShared>,
    trust: TrustStore,
    trust_at: Option<Instant>,
    key_id: String,
    chain: ChainId,
}

fn run(
    weak: std::sync::Weak<Inner>,
    transport: Arc<dyn DiffTransport>,
    options: LiveSyncOptions,
    tenants: Vec<TenantId>,
    stop: Arc<AtomicBool>,
    shared: Arc<LiveShared>,
) {
    let Some(n) = weak.upgrade().map(|inner| Nodus { inner }) else {
        return;
    };
    let key_id = n.inner.node.node_id.to_string();
    let chain = n.inner.event_log.node().chain();
    let now = Instant::now();
    let mut states: Vec<TenantState> = tenants
        .into_iter()
        .map(|tenant| {
            // What was appended before the agent started counts as published: a peer that misses
            // it says so in its status, and is resent.
            let published_seq = n
                .inner
                .event_log
                .high_water_marks(&tenant)
                .ok()
                .and_then(|vv| vv.get(&chain).map(|h| h.seq))
                .unwrap_or(0);
            let view = TenantView {
                published_seq,
                ..TenantView::default()
            };
            let counters = view.counters.clone();
            shared.tenants.lock().insert(tenant.clone(), view);
            TenantState {
                tenant,
                sub: None,
                retry_at: now,
                published_seq,
                status_at: None,
                gap_status_at: None,
                peers: HashMap::new(),
                held: BTreeSet::new(),
                counters,
                answered: HashMap::new(),
                gap: false,
                publish_after: None,
            }
        })
        .collect();
    drop(n);
    let mut agent = Agent {
        weak,
        transport,
        options,
        shared,
        trust: TrustStore::new(),
        trust_at: None,
        key_id,
        chain,
    };
    while !stop.load(Ordering::SeqCst) {
        let Some(n) = agent.weak.upgrade().map(|inner| Nodus { inner }) else {
            return;
        };
        if n.is_shut_down() {
            return;
        }
        agent.refresh_trust(&n, Duration::from_secs(1));
        let mut busy = false;
        let wait = agent.options.poll / u32::try_from(states.len().max(1)).unwrap_or(1);
        for st in &mut states {
            busy |= agent.tick(&n, st, wait);
        }
        drop(n);
        if states.is_empty() {
            std::thread::sleep(agent.options.poll.max(Duration::from_millis(10)));
        } else if !busy && states.iter().all(|s| s.sub.is_none()) {
            std::thread::sleep(agent.options.poll);
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Agent {
    /// The trust store of live batches: the instance's sync peers, re-read every second.
    fn refresh_trust(&mut self, n: &Nodus, every: Duration) {
        if self.trust_at.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.trust_at = Some(Instant::now());
        let Ok(peers) = n.sync().peers() else {
            return;
        };
        let mut trust = TrustStore::new();
        for p in peers {
            let Some(public) = hex::decode(&p.keys.public_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            else {
                continue;
            };
            trust.insert(TrustedKey::new(p.keys.key_id.clone(), public).for_tenants(p.tenants));
            if p.revoked_ms.is_some() {
                trust.revoke(&p.keys.key_id);
            }
        }
        self.trust = trust;
    }

    /// One round for one tenant; `true` when it did something.
    fn tick(&mut self, n: &Nodus, st: &mut TenantState, wait: Duration) -> bool {
        let mut busy = self.publish_local(n, st);
        if st.sub.is_none() && Instant::now() >= st.retry_at {
            let from = n
                .inner
                .event_log
                .high_water_marks(&st.tenant)
                .unwrap_or_default();
            match self.transport.subscribe(&st.tenant, &self.key_id, &from) {
                Ok(sub) => st.sub = Some(sub),
                Err(e) => {
                    tracing::debug!(tenant = %st.tenant, error = %e, "live sync: subscribe failed");
                    st.retry_at = Instant::now() + self.options.retry_after;
                }
            }
            self.set_connected(st, st.sub.is_some());
        }
        // Drain what is there; wait only when nothing was done this round.
        let mut received = 0;
        while received < 64 {
            let Some(sub) = st.sub.as_mut() else { break };
            let timeout = if busy || received > 0 {
                Duration::ZERO
            } else {
                wait
            };
            match sub.next(timeout) {
                Ok(Some(d)) => {
                    received += 1;
                    self.receive(n, st, &d.batch);
                    if let Some(sub) = st.sub.as_mut()
                        && let Err(e) = sub.ack(&d)
                    {
                        tracing::debug!(tenant = %st.tenant, error = %e, "live sync: ack failed");
                        self.drop_sub(st);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(tenant = %st.tenant, error = %e, "live sync: receive failed");
                    self.drop_sub(st);
                }
            }
        }
        busy |= received > 0;
        busy |= self.publish_status(n, st);
        busy
    }

    fn drop_sub(&self, st: &mut TenantState) {
        st.sub = None;
        st.retry_at = Instant::now() + self.options.retry_after;
        self.set_connected(st, false);
    }

    fn set_connected(&self, st: &TenantState, connected: bool) {
        if let Some(v) = self.shared.tenants.lock().get_mut(&st.tenant) {
            v.connected = connected;
        }
    }

    fn sign_publish(&self, n: &Nodus, st: &TenantState, batch: &Batch) -> bool {
        let signed = match n
            .inner
            .sync
            .as_deref()
            .ok_or(BatchError::Malformed("signer"))
            .and_then(|s| batch.sign(s.signer()))
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(tenant = %st.tenant, error = %e, "live sync: cannot sign a batch");
                return false;
            }
        };
        match self.transport.publish(&st.tenant, &signed) {
            Ok(()) => {
                st.counters.batches_out.fetch_add(1, Ordering::Relaxed);
                let kind = if matches!(batch.body, BatchBody::Status(_)) {
                    "status"
                } else {
                    "events"
                };
                metrics::counter!("nodus_sync_batches_total", "tenant" => st.tenant.as_str().to_owned(), "direction" => "out", "kind" => kind).increment(1);
                true
            }
            Err(e) => {
                tracing::debug!(tenant = %st.tenant, error = %e, "live sync: publish failed");
                false
            }
        }
    }

    /// Publishes this node's chain from `from_seq` up to `to_seq`; returns the last seq
    /// published (`from_seq - 1` when nothing was).
    fn publish_range(&self, n: &Nodus, st: &TenantState, from_seq: u64, to_seq: u64) -> u64 {
        let mut next = from_seq;
        while next <= to_seq {
            let limit = self.options.max_batch_events.max(1);
            let events: Vec<Event> = match n
                .inner
                .event_log
                .read_chain(&st.tenant, self.chain, next, limit)
            {
                Ok(ev) => ev.into_iter().filter(|e| e.seq <= to_seq).collect(),
                Err(_) => break,
            };
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            let Ok(batch) = Batch::events(st.tenant.clone(), self.key_id.clone(), events) else {
                break;
            };
            if !self.sign_publish(n, st, &batch) {
                break;
            }
            next = last + 1;
        }
        next - 1
    }

    /// Publishes what this node appended since the last publish.
    fn publish_local(&self, n: &Nodus, st: &mut TenantState) -> bool {
        if st.publish_after.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let head = n
            .inner
            .event_log
            .high_water_marks(&st.tenant)
            .ok()
            .and_then(|vv| vv.get(&self.chain).map(|h| h.seq))
            .unwrap_or(0);
        if head <= st.published_seq {
            return false;
        }
        let done = self.publish_range(n, st, st.published_seq + 1, head);
        // A transport that refused waits `retry_after` before it is tried again.
        st.publish_after = (done < head).then(|| Instant::now() + self.options.retry_after);
        if done > st.published_seq {
            st.published_seq = done;
            if let Some(v) = self.shared.tenants.lock().get_mut(&st.tenant) {
                v.published_seq = done;
            }
            return true;
        }
        false
    }

    fn publish_status(&self, n: &Nodus, st: &mut TenantState) -> bool {
        let log = &n.inner.event_log;
        let now = Instant::now();
        let periodic = st
            .status_at
            .is_none_or(|t| now.duration_since(t) >= self.options.status_every);
        let gap_due = st.gap
            && st
                .gap_status_at
                .is_none_or(|t| now.duration_since(t) >= self.options.status_every / 5);
        if !periodic && !gap_due {
            return false;
        }
        let pending = log.pending(&st.tenant).unwrap_or_default();
        st.gap = !pending.is_empty();
        if let Some(v) = self.shared.tenants.lock().get_mut(&st.tenant) {
            v.pending = pending.len() as u64;
        }
        let heads: VersionVector = log.high_water_marks(&st.tenant).unwrap_or_default();
        let wants = wants_for(&heads, &pending);
        let Ok(batch) = Batch::status(
            st.tenant.clone(),
            self.key_id.clone(),
            PeerStatus { heads, wants },
        ) else {
            return false;
        };
        if self.sign_publish(n, st, &batch) {
            st.status_at = Some(now);
            if !pending.is_empty() {
                st.gap_status_at = Some(now);
            }
            return true;
        }
        false
    }

    fn audit(
        &self,
        n: &Nodus,
        tenant: &TenantId,
        kind: &'static str,
        reason: &'static str,
        detail: &[(&str, String)],
    ) {
        let mut rec = AuditRecord::new(kind, Outcome::Denied);
        rec.time_ms = n.now_ms();
        rec.tenant = Some(tenant.clone());
        rec.reason = Some(Cow::Borrowed(reason));
        rec.detail.insert("op".into(), "live".into());
        for (k, v) in detail {
            rec.detail.insert((*k).into(), v.clone());
        }
        if let Err(e) = n.audit_event(rec) {
            tracing::warn!(tenant = %tenant, error = %e, "live sync: audit refused a record");
        }
    }

    fn reject(
        &self,
        n: &Nodus,
        st: &TenantState,
        batch: &SignedBatch,
        code: &'static str,
        why: String,
    ) {
        st.counters.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("nodus_sync_rejections_total", "tenant" => st.tenant.as_str().to_owned(), "reason" => code).increment(1);
        let sender = batch.peek().map(|h| h.sender).unwrap_or_default();
        self.audit(
            n,
            &st.tenant,
            "sync.rejected",
            code,
            &[
                ("batch_id", batch.id()),
                ("claimed_sender", sender.chars().take(128).collect()),
                ("why", why),
            ],
        );
    }

    fn receive(&mut self, n: &Nodus, st: &mut TenantState, batch: &SignedBatch) {
        // Our own batches come back on the shared subject.
        if batch.peek().is_ok_and(|h| h.sender == self.key_id) {
            return;
        }
        st.counters.batches_in.fetch_add(1, Ordering::Relaxed);
        let mut verified = verify_batch(batch, &st.tenant, &self.trust, now_unix());
        if let Err(e) = &verified
            && matches!(
                e.code(),
                "untrusted_key" | "revoked_key" | "key_not_for_tenant"
            )
        {
            // The trust store may have changed since it was read (a peer just trusted or
            // revoked): read it again, at most every 50 ms, before deciding.
            self.refresh_trust(n, Duration::from_millis(50));
            verified = verify_batch(batch, &st.tenant, &self.trust, now_unix());
        }
        let verified = match verified {
            Ok(b) => b,
            Err(e) => {
                self.reject(n, st, batch, e.code(), e.to_string());
                return;
            }
        };
        let kind = if matches!(verified.body, BatchBody::Status(_)) {
            "status"
        } else {
            "events"
        };
        metrics::counter!("nodus_sync_batches_total", "tenant" => st.tenant.as_str().to_owned(), "direction" => "in", "kind" => kind).increment(1);
        match verified.body {
            BatchBody::Events(events) => self.ingest(n, st, batch, events),
            BatchBody::Status(status) => {
                self.on_status(n, st, &verified.sender, verified.time_ms, status)
            }
        }
    }

    fn ingest(&self, n: &Nodus, st: &mut TenantState, batch: &SignedBatch, events: Vec<Event>) {
        let tenant = st.tenant.clone();
        let Some(snap) = n.inner.policy.snapshot(&tenant) else {
            return;
        };
        let ceiling = match snap.get_str("sync.import_ceiling") {
            Ok(text) => match snap.label_scheme().parse(text) {
                Ok(l) => l,
                Err(e) => {
                    // Fail closed: a ceiling that does not parse admits nothing.
                    self.reject(
                        n,
                        st,
                        batch,
                        "bad_setting",
                        format!("`sync.import_ceiling` (`{text}`) is not a label: {e}"),
                    );
                    return;
                }
            },
            Err(_) => snap.label_scheme().top(),
        };
        let known_types = n
            .inner
            .fabric
            .list_types(&tenant, &snap)
            .map(|ts| ts.iter().map(|t| t.name().as_str().to_owned()).collect())
            .unwrap_or_default();
        let admission = crate::sync_commands::PolicyAdmission {
            snap: &snap,
            ceiling,
            known_types,
        };
        let decisions = admission.admit_all(&tenant, &events);
        let mut admitted = Vec::with_capacity(events.len());
        for (e, d) in events.into_iter().zip(decisions) {
            match d {
                Decision::Apply => admitted.push(e),
                Decision::Quarantine(why) => {
                    if st.held.insert(e.event_ref()) {
                        st.counters.held.fetch_add(1, Ordering::Relaxed);
                        let mut rec = AuditRecord::new("sync.quarantined", Outcome::Denied);
                        rec.time_ms = n.now_ms();
                        rec.tenant = Some(tenant.clone());
                        rec.reason = Some(Cow::Borrowed("PolicyAdmission"));
                        rec.detail.insert("op".into(), "live".into());
                        rec.detail.insert("batch_id".into(), batch.id());
                        rec.detail
                            .insert("event".into(), format!("{}:{}", e.chain(), e.seq));
                        rec.detail.insert("why".into(), why);
                        let _ = n.audit_event(rec);
                    }
                }
            }
        }
        if admitted.is_empty() {
            return;
        }
        let report = match n.inner.fabric.ingest(&tenant, admitted) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "live sync: ingest failed");
                return;
            }
        };
        let log = report.log;
        st.gap |= !log.pending.is_empty();
        let applied = log.applied.len() as u64;
        for e in &log.applied {
            st.held.remove(&e.event_ref());
        }
        if applied > 0 {
            n.inner.objects_cache.invalidate_tenant(&tenant);
            st.counters.applied.fetch_add(applied, Ordering::Relaxed);
            metrics::counter!("nodus_sync_events_applied_total", "tenant" => tenant.as_str().to_owned()).increment(applied);
        }
        if log.duplicates > 0 {
            st.counters
                .duplicates
                .fetch_add(log.duplicates, Ordering::Relaxed);
            metrics::counter!("nodus_sync_duplicates_total", "tenant" => tenant.as_str().to_owned()).increment(log.duplicates);
        }
        for eq in &log.equivocations {
            st.counters.equivocations.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("nodus_sync_rejections_total", "tenant" => tenant.as_str().to_owned(), "reason" => "equivocation").increment(1);
            self.audit(
                n,
                &tenant,
                "sync.equivocation",
                "Equivocation",
                &[
                    ("batch_id", batch.id()),
                    (
                        "event",
                        format!("{}:{}", eq.conflicting.chain(), eq.conflicting.seq),
                    ),
                    ("stored_hash", eq.stored.hash.to_string()),
                    ("conflicting_hash", eq.conflicting.hash.to_string()),
                ],
            );
        }
        for r in &log.rejected {
            self.reject(
                n,
                st,
                batch,
                "event_rejected",
                format!("event `{}`: {}", r.event, r.reason),
            );
        }
        if !log.applied.is_empty() || !log.pending.is_empty() {
            let mut heads: BTreeMap<String, u64> = BTreeMap::new();
            for e in &log.applied {
                let h = heads.entry(e.chain().to_string()).or_default();
                *h = (*h).max(e.seq);
            }
            let _ = n.inner.events.publish(
                "sync.applied",
                Some(&tenant),
                serde_json::json!({ "applied": applied, "pending": log.pending.len(), "heads": heads }),
            );
        }
    }

    fn on_status(
        &self,
        n: &Nodus,
        st: &mut TenantState,
        sender: &str,
        time_ms: u64,
        status: PeerStatus,
    ) {
        let now = Instant::now();
        let applied_seq = status.heads.get(&self.chain).map_or(0, |h| h.seq);
        let head = st.published_seq;
        let lag = head.saturating_sub(applied_seq);
        let track = st.peers.entry(sender.to_owned()).or_insert(PeerTrack {
            applied_seq,
            since: now,
            resent_at: None,
        });
        if applied_seq != track.applied_seq {
            track.applied_seq = applied_seq;
            track.since = now;
        }
        metrics::gauge!("nodus_sync_peer_lag", "tenant" => st.tenant.as_str().to_owned(), "peer" => sender.to_owned()).set(lag as f64);
        if let Some(v) = self.shared.tenants.lock().get_mut(&st.tenant) {
            v.peers.insert(
                sender.to_owned(),
                LivePeer {
                    key_id: sender.to_owned(),
                    last_seen_ms: time_ms,
                    applied_seq,
                    lag,
                    wants: status.wants.len() as u64,
                },
            );
        }
        // A status from long ago (a replay of history) says nothing about now.
        let fresh = n.now_ms().saturating_sub(time_ms) < 10_000;
        if !fresh {
            return;
        }
        let mut from: Option<u64> = None;
        for w in status.wants.iter().filter(|w| w.chain == self.chain) {
            let due = st
                .answered
                .get(&w.from_seq)
                .is_none_or(|t| now.duration_since(*t) >= self.options.resend_after);
            if due && w.from_seq <= head {
                st.answered.insert(w.from_seq, now);
                from = Some(from.map_or(w.from_seq, |f: u64| f.min(w.from_seq)));
            }
        }
        let stalled = lag > 0
            && now.duration_since(track.since) >= self.options.resend_after
            && track
                .resent_at
                .is_none_or(|t| now.duration_since(t) >= self.options.resend_after);
        if stalled {
            from = Some(from.map_or(applied_seq + 1, |f| f.min(applied_seq + 1)));
        }
        if let Some(from) = from {
            if let Some(t) = st.peers.get_mut(sender) {
                t.resent_at = Some(now);
            }
            st.answered
                .retain(|_, t| now.duration_since(*t) < self.options.resend_after * 4);
            let done = self.publish_range(n, st, from, head);
            if done >= from {
                st.counters
                    .resent
                    .fetch_add(done - from + 1, Ordering::Relaxed);
            }
        }
    }
}

//! The rules of the event log that do not depend on where it is stored: building appended events,
//! the ingest decisions (duplicate, equivocation, hold, apply, promote) over a [`Store`], and the
//! verification walk. `SqliteEventLog` and `PgEventLog` both drive these, so the two backends
//! cannot drift apart.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use nodus_policy::TenantId;

use crate::event::{ChainId, Event, EventHash, EventRef, MAX_COUNTER, NewEvent};
use crate::log::{
    Equivocation, EquivocationKind, EventLogError, IngestReport, ProblemKind, RejectReason,
    Rejection, VerifyProblem, VerifyReport,
};

/// A chain's recorded head: its highest contiguous applied seq, that event's hash and Lamport time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: EventHash,
    pub(crate) lamport: u64,
}

/// The head of a chain with nothing applied.
pub(crate) const EMPTY_HEAD: Head = Head {
    seq: 0,
    hash: EventHash::ZERO,
    lamport: 0,
};

/// Where a stored event lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    /// Applied.
    Events,
    /// Held after a gap.
    Pending,
}

/// `v + 1`, unless that passes [`MAX_COUNTER`].
pub(crate) fn next(v: u64) -> Option<u64> {
    v.checked_add(1).filter(|n| *n <= MAX_COUNTER)
}

/// The current time in unix milliseconds.
pub(crate) fn now_ms() -> Result<u64, EventLogError> {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| EventLogError::Clock)?;
    Ok(u64::try_from(d.as_millis())
        .unwrap_or(MAX_COUNTER)
        .min(MAX_COUNTER))
}

pub(crate) fn corrupt(tenant: &TenantId, chain: &ChainId, seq: u64, reason: &str) -> EventLogError {
    corrupt_raw(tenant, &chain.to_string(), seq, reason)
}

pub(crate) fn corrupt_raw(tenant: &TenantId, chain: &str, seq: u64, reason: &str) -> EventLogError {
    EventLogError::Corrupt {
        tenant: tenant.clone(),
        chain: chain.to_owned(),
        seq,
        reason: reason.to_owned(),
    }
}

/// What an append produces: the events (with their local positions) and the new chain head and
/// tenant counters to record.
pub(crate) struct Appended {
    pub(crate) events: Vec<(Event, u64)>,
    pub(crate) head: Head,
    pub(crate) lamport: u64,
    pub(crate) position: u64,
}

/// Builds the local events of one append: contiguous seqs after `head`, Lamport times and
/// positions after the tenant's, `prev_hash` links and hashes.
pub(crate) fn build_append(
    chain: ChainId,
    tenant: &TenantId,
    mut head: Head,
    mut lamport: u64,
    mut position: u64,
    events: Vec<NewEvent>,
) -> Result<Appended, EventLogError> {
    let time_ms = now_ms()?;
    let exhausted = |counter| EventLogError::Exhausted {
        tenant: tenant.clone(),
        counter,
    };
    let mut out = Vec::with_capacity(events.len());
    for ne in events {
        let seq = next(head.seq).ok_or_else(|| exhausted("seq"))?;
        lamport = next(lamport).ok_or_else(|| exhausted("lamport"))?;
        position = next(position).ok_or_else(|| exhausted("position"))?;
        let mut e = Event {
            tenant: tenant.clone(),
            node_id: chain.node_id,
            incarnation: chain.incarnation,
            seq,
            lamport,
            kind: ne.kind,
            entity: ne.entity,
            label: ne.label,
            payload: ne.payload,
            model_ver: ne.model_ver,
            prev_hash: head.hash,
            hash: EventHash::ZERO,
            time_ms,
        };
        e.hash = e.compute_hash();
        head = Head {
            seq,
            hash: e.hash,
            lamport,
        };
        out.push((e, position));
    }
    Ok(Appended {
        events: out,
        head,
        lamport,
        position,
    })
}

// ---------------------------------------------------------------------------------------------
// Ingest.

/// The storage an ingest reads and writes, inside one transaction of one tenant.
pub(crate) trait Store {
    /// The recorded head of `chain` ([`EMPTY_HEAD`] when it has none).
    fn load_head(&mut self, chain: &ChainId) -> Result<Head, EventLogError>;
    /// The stored event `(chain, seq)` in `table`, its hash checked.
    fn load(
        &mut self,
        chain: &ChainId,
        seq: u64,
        table: Table,
    ) -> Result<Option<Event>, EventLogError>;
    /// Whether `chain` has held events.
    fn has_pending(&mut self, chain: &ChainId) -> Result<bool, EventLogError>;
    /// Whether the tenant has anything in quarantine.
    fn any_quarantined(&mut self) -> Result<bool, EventLogError>;
    /// Whether this exact version is in the tenant's quarantine.
    fn is_quarantined(&mut self, hash: &EventHash) -> Result<bool, EventLogError>;
    /// Keeps both versions in quarantine (no-op if `conflicting` is there already).
    fn quarantine(
        &mut self,
        kind: EquivocationKind,
        stored: &Event,
        conflicting: &Event,
    ) -> Result<(), EventLogError>;
    /// Holds `e` after a gap.
    fn hold(&mut self, e: &Event) -> Result<(), EventLogError>;
    /// Removes a held event.
    fn unhold(&mut self, chain: &ChainId, seq: u64) -> Result<(), EventLogError>;
    /// Stores `e` as applied at local position `pos`.
    fn insert_event(&mut self, e: &Event, pos: u64) -> Result<(), EventLogError>;
    /// Records a chain's head.
    fn save_head(&mut self, chain: &ChainId, head: &Head) -> Result<(), EventLogError>;
    /// Records the tenant's Lamport clock and position.
    fn save_counters(&mut self, lamport: u64, position: u64) -> Result<(), EventLogError>;
}

/// One ingest call: the tenant's counters as they were when the call started (read under the
/// transaction's write lock) and the events received.
pub(crate) fn ingest<S: Store>(
    store: &mut S,
    local: ChainId,
    tenant: &TenantId,
    (lamport, position): (u64, u64),
    events: Vec<Event>,
) -> Result<IngestReport, EventLogError> {
    Ingest {
        store,
        local,
        tenant,
        lamport,
        position,
        heads: HashMap::new(),
        dirty: HashSet::new(),
        has_pending: HashMap::new(),
        any_quarantined: None,
        held: Vec::new(),
        report: IngestReport::default(),
    }
    .run(events)
}

struct Ingest<'a, S> {
    store: &'a mut S,
    local: ChainId,
    tenant: &'a TenantId,
    lamport: u64,
    position: u64,
    heads: HashMap<ChainId, Head>,
    dirty: HashSet<ChainId>,
    has_pending: HashMap<ChainId, bool>,
    /// Whether the tenant has anything in quarantine (looked up once, on first need).
    any_quarantined: Option<bool>,
    held: Vec<EventRef>,
    report: IngestReport,
}

impl<S: Store> Ingest<'_, S> {
    fn run(mut self, events: Vec<Event>) -> Result<IngestReport, EventLogError> {
        for e in events {
            self.one(e)?;
        }
        let mut dirty: Vec<ChainId> = std::mem::take(&mut self.dirty).into_iter().collect();
        // A stable order, so that concurrent writers of one store lock rows in the same order.
        dirty.sort();
        for chain in dirty {
            let head = self.head(&chain)?;
            self.store.save_head(&chain, &head)?;
        }
        if !self.report.applied.is_empty() {
            self.store.save_counters(self.lamport, self.position)?;
        }
        self.report.pending = self.held;
        Ok(self.report)
    }

    fn reject(&mut self, e: &Event, reason: RejectReason) {
        self.report.rejected.push(Rejection {
            event: e.event_ref(),
            reason,
        });
    }

    fn one(&mut self, e: Event) -> Result<(), EventLogError> {
        if &e.tenant != self.tenant {
            self.reject(&e, RejectReason::WrongTenant);
            return Ok(());
        }
        for (field, v, min) in [
            ("seq", e.seq, 1),
            ("lamport", e.lamport, 1),
            ("time_ms", e.time_ms, 0),
        ] {
            if v < min || v > MAX_COUNTER {
                self.reject(
                    &e,
                    RejectReason::OutOfRange {
                        field: field.to_owned(),
                    },
                );
                return Ok(());
            }
        }
        let computed = e.compute_hash();
        if computed != e.hash {
            self.reject(&e, RejectReason::HashMismatch { computed });
            return Ok(());
        }
        if e.seq == 1 && e.prev_hash != EventHash::ZERO {
            self.reject(&e, RejectReason::FirstEventPrevHash);
            return Ok(());
        }
        let chain = e.chain();
        if let Some(stored) = self.find(&chain, e.seq)? {
            if stored.hash == e.hash || self.quarantined(&e.hash)? {
                self.report.duplicates += 1;
            } else {
                self.quarantine(EquivocationKind::SameSeq, stored, e)?;
            }
            return Ok(());
        }
        if self.quarantined(&e.hash)? {
            self.report.duplicates += 1;
            return Ok(());
        }
        if chain == self.local {
            self.reject(&e, RejectReason::LocalChain);
            return Ok(());
        }
        let head = self.head(&chain)?;
        if e.seq == head.seq + 1 {
            self.apply(e)?;
            self.promote(&chain)?;
        } else if e.seq > head.seq {
            self.hold(&e)?;
        } else {
            // Below the head but not stored: the store contradicts itself.
            return Err(corrupt(
                self.tenant,
                &chain,
                e.seq,
                "missing below the chain head",
            ));
        }
        Ok(())
    }

    fn head(&mut self, chain: &ChainId) -> Result<Head, EventLogError> {
        if let Some(h) = self.heads.get(chain) {
            return Ok(*h);
        }
        let h = self.store.load_head(chain)?;
        self.heads.insert(*chain, h);
        Ok(h)
    }

    /// The stored version of `(chain, seq)`, applied or pending.
    fn find(&mut self, chain: &ChainId, seq: u64) -> Result<Option<Event>, EventLogError> {
        let head = self.head(chain)?;
        if seq <= head.seq {
            return self.store.load(chain, seq, Table::Events);
        }
        if !self.pending_in(chain)? {
            return Ok(None);
        }
        self.store.load(chain, seq, Table::Pending)
    }

    fn pending_in(&mut self, chain: &ChainId) -> Result<bool, EventLogError> {
        if let Some(p) = self.has_pending.get(chain) {
            return Ok(*p);
        }
        let p = self.store.has_pending(chain)?;
        self.has_pending.insert(*chain, p);
        Ok(p)
    }

    /// Whether this exact version is in the tenant's quarantine.
    fn quarantined(&mut self, hash: &EventHash) -> Result<bool, EventLogError> {
        let any = match self.any_quarantined {
            Some(any) => any,
            None => {
                let any = self.store.any_quarantined()?;
                self.any_quarantined = Some(any);
                any
            }
        };
        if !any {
            return Ok(false);
        }
        self.store.is_quarantined(hash)
    }

    fn quarantine(
        &mut self,
        kind: EquivocationKind,
        stored: Event,
        conflicting: Event,
    ) -> Result<(), EventLogError> {
        self.store.quarantine(kind, &stored, &conflicting)?;
        self.any_quarantined = Some(true);
        self.report.equivocations.push(Equivocation {
            kind,
            stored,
            conflicting,
        });
        Ok(())
    }

    fn hold(&mut self, e: &Event) -> Result<(), EventLogError> {
        self.store.hold(e)?;
        self.has_pending.insert(e.chain(), true);
        self.held.push(e.event_ref());
        Ok(())
    }

    /// Applies `e`, the next event of its chain, unless it forks the chain or its Lamport time
    /// does not increase. Returns whether it was applied.
    fn apply(&mut self, e: Event) -> Result<bool, EventLogError> {
        let chain = e.chain();
        let head = self.head(&chain)?;
        if e.prev_hash != head.hash {
            // seq 1 with a non-zero prev_hash was rejected before, so head.seq ≥ 1 here.
            let stored = self
                .store
                .load(&chain, head.seq, Table::Events)?
                .ok_or_else(|| corrupt(self.tenant, &chain, head.seq, "chain head missing"))?;
            if !self.quarantined(&e.hash)? {
                self.quarantine(EquivocationKind::Fork, stored, e)?;
            } else {
                self.report.duplicates += 1;
            }
            return Ok(false);
        }
        if head.seq > 0 && e.lamport <= head.lamport {
            self.reject(&e, RejectReason::LamportNotIncreasing);
            return Ok(false);
        }
        self.position = next(self.position).ok_or_else(|| EventLogError::Exhausted {
            tenant: self.tenant.clone(),
            counter: "position",
        })?;
        self.store.insert_event(&e, self.position)?;
        self.lamport = self.lamport.max(e.lamport);
        self.heads.insert(
            chain,
            Head {
                seq: e.seq,
                hash: e.hash,
                lamport: e.lamport,
            },
        );
        self.dirty.insert(chain);
        self.report.applied.push(e);
        Ok(true)
    }

    /// Applies the chain's held events that now follow its head, in seq order.
    fn promote(&mut self, chain: &ChainId) -> Result<(), EventLogError> {
        while self.pending_in(chain)? {
            let head = self.head(chain)?;
            let Some(e) = self.store.load(chain, head.seq + 1, Table::Pending)? else {
                break;
            };
            self.store.unhold(chain, e.seq)?;
            let r = e.event_ref();
            self.held.retain(|h| *h != r);
            if !self.apply(e)? {
                break;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Verification.

/// A stored event row as a backend decoded it: the event (its stored hash, unchecked) or, when a
/// field does not decode, the chain and seq when those do; and its local position.
pub(crate) struct VerifyRow {
    pub(crate) event: Result<Event, (Option<ChainId>, u64)>,
    pub(crate) pos: Option<u64>,
}

/// The verification walk. Feed it the recorded heads, then every event row of the tenant ordered
/// by `(node_id, incarnation, seq)`, then the recorded counters.
#[derive(Default)]
pub(crate) struct Verifier {
    report: VerifyReport,
    heads: HashMap<ChainId, (u64, EventHash)>,
    /// The chain being walked: its id, last seq and last hash.
    cur: Option<(ChainId, u64, EventHash)>,
    max_lamport: u64,
    max_pos: u64,
    seen_chains: HashSet<ChainId>,
}

impl Verifier {
    fn problem(&mut self, chain: Option<ChainId>, seq: u64, kind: ProblemKind) {
        self.report
            .problems
            .push(VerifyProblem { chain, seq, kind });
    }

    /// A recorded head; `None` fields did not decode.
    pub(crate) fn head(
        &mut self,
        chain: Option<ChainId>,
        seq: Option<u64>,
        hash: Option<[u8; 32]>,
    ) {
        match (chain, seq, hash) {
            (Some(c), Some(s), Some(h)) => {
                self.heads.insert(c, (s, EventHash::from_bytes(h)));
            }
            (c, _, _) => self.problem(c, 0, ProblemKind::HeadMismatch),
        }
    }

    fn finish_chain(&mut self) {
        if let Some((c, seq, hash)) = self.cur.take()
            && self.heads.remove(&c) != Some((seq, hash))
        {
            self.problem(Some(c), seq, ProblemKind::HeadMismatch);
        }
    }

    /// The next event row.
    pub(crate) fn row(&mut self, row: VerifyRow) {
        self.report.events += 1;
        match row.pos {
            Some(p) => self.max_pos = self.max_pos.max(p),
            None => {
                let chain = match &row.event {
                    Ok(e) => Some(e.chain()),
                    Err((c, _)) => *c,
                };
                self.problem(chain, 0, ProblemKind::Undecodable);
            }
        }
        let e = match row.event {
            Ok(e) => e,
            Err((chain, seq)) => {
                self.problem(chain, seq, ProblemKind::Undecodable);
                // Keep walking the chain as if this seq were present with an unknown hash.
                if let (Some(c), Some((cc, _, _))) = (chain, self.cur)
                    && c == cc
                {
                    self.cur = Some((c, seq, EventHash::ZERO));
                }
                return;
            }
        };
        self.max_lamport = self.max_lamport.max(e.lamport);
        let chain = e.chain();
        let (expect_seq, expect_prev) = match self.cur {
            Some((c, seq, hash)) if c == chain => (seq + 1, hash),
            _ => {
                self.finish_chain();
                if self.seen_chains.insert(chain) {
                    self.report.chains += 1;
                }
                (1, EventHash::ZERO)
            }
        };
        if e.seq != expect_seq {
            self.problem(Some(chain), e.seq, ProblemKind::SeqGap);
        } else if e.prev_hash != expect_prev {
            self.problem(Some(chain), e.seq, ProblemKind::BrokenLink);
        }
        if e.compute_hash() != e.hash {
            self.problem(Some(chain), e.seq, ProblemKind::HashMismatch);
        }
        self.cur = Some((chain, e.seq, e.hash));
    }

    /// Ends the walk with the tenant's recorded `(lamport, position)`: `None` when the tenant has
    /// no record, `Some((None, _))`-like values when a field does not decode.
    pub(crate) fn finish(mut self, counters: Option<(Option<u64>, Option<u64>)>) -> VerifyReport {
        self.finish_chain();
        let mut leftover: Vec<ChainId> = std::mem::take(&mut self.heads).into_keys().collect();
        leftover.sort();
        for c in leftover {
            self.problem(Some(c), 0, ProblemKind::HeadMismatch);
        }
        let counters_ok = match counters {
            None => self.report.events == 0,
            Some((Some(l), Some(p))) => {
                l >= self.max_lamport && p == self.max_pos && p == self.report.events
            }
            Some(_) => false,
        };
        if !counters_ok {
            self.problem(None, 0, ProblemKind::Counters);
        }
        self.report
    }
}

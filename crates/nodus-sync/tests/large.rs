//! A large bundle (100,000 events) exported and imported with bounded reads: the exporter and
//! the verifier never ask the log for more than one page, whatever the bundle's size.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use nodus_fabric::{
    ChainId, Cursor, Equivocation, Event, EventLogError, EventRef, IngestReport, NewEvent,
    NodeInfo, TenantEventLog, VerifyReport, VersionVector,
};
use nodus_policy::TenantId;
use nodus_sync::{Exporter, FixedClock, TrustStore};

/// Passes every call through and remembers the largest page asked for and returned.
struct Counting<'a> {
    inner: &'a dyn TenantEventLog,
    max_limit: AtomicUsize,
    max_returned: AtomicUsize,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a dyn TenantEventLog) -> Self {
        Counting {
            inner,
            max_limit: AtomicUsize::new(0),
            max_returned: AtomicUsize::new(0),
        }
    }
    fn saw(&self, limit: usize, got: usize) {
        self.max_limit.fetch_max(limit, Ordering::Relaxed);
        self.max_returned.fetch_max(got, Ordering::Relaxed);
    }
}

impl TenantEventLog for Counting<'_> {
    fn node(&self) -> NodeInfo {
        self.inner.node()
    }
    fn append(&self, t: &TenantId, e: Vec<NewEvent>) -> Result<Vec<Event>, EventLogError> {
        self.inner.append(t, e)
    }
    fn ingest(&self, t: &TenantId, e: Vec<Event>) -> Result<IngestReport, EventLogError> {
        self.inner.ingest(t, e)
    }
    fn read_chain(
        &self,
        t: &TenantId,
        c: ChainId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, EventLogError> {
        let r = self.inner.read_chain(t, c, from, limit)?;
        self.saw(limit, r.len());
        Ok(r)
    }
    fn read_tenant(
        &self,
        t: &TenantId,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<Cursor>), EventLogError> {
        let r = self.inner.read_tenant(t, cursor, limit)?;
        self.saw(limit, r.0.len());
        Ok(r)
    }
    fn high_water_marks(&self, t: &TenantId) -> Result<VersionVector, EventLogError> {
        self.inner.high_water_marks(t)
    }
    fn pending(&self, t: &TenantId) -> Result<Vec<EventRef>, EventLogError> {
        self.inner.pending(t)
    }
    fn quarantined(&self, t: &TenantId) -> Result<Vec<Equivocation>, EventLogError> {
        self.inner.quarantined(t)
    }
    fn verify(&self, t: &TenantId) -> Result<VerifyReport, EventLogError> {
        self.inner.verify(t)
    }
}

#[test]
fn hundred_thousand_events_in_pages() {
    const N: u64 = 100_000;
    let a = log_with(1, N);
    let b = Receiver::new(2, TrustStore::new().with(signer(1).trusted_key()));
    let counting_a = Counting::new(&a);
    let exporter = Exporter::new().clock(FixedClock(NOW - 60)).page_size(500);
    let (path, report) = export_with(
        &exporter,
        &counting_a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "large.noduspkg",
    );
    assert_eq!(report.events, N);
    assert_eq!(report.page_size, 500);
    assert_eq!(report.max_page_events, 500);
    assert!(counting_a.max_limit.load(Ordering::Relaxed) <= 500);
    assert!(counting_a.max_returned.load(Ordering::Relaxed) <= 500);
    // Compressed: well under the payload plaintext.
    assert!(report.file_len < report.payload_len / 3, "{report:?}");

    // The receiver already holds the first half: verification compares it page by page.
    let half: Vec<Event> = a
        .read_chain(&tenant(), a.node().chain(), 1, (N / 2) as usize)
        .unwrap();
    b.log.ingest(&tenant(), half).unwrap();
    let counting_b = Counting::new(&b.log);
    let summary = b.importer.verify(&counting_b, &tenant(), &path).unwrap();
    assert_eq!(summary.events, N);
    assert_eq!(summary.new_events, N / 2);
    assert!(counting_b.max_returned.load(Ordering::Relaxed) <= 1000);

    let staged = b.importer.stage(&counting_b, &tenant(), &path).unwrap();
    let act = b
        .importer
        .activate(
            &counting_b,
            &staged.summary.bundle_id,
            &nodus_sync::AdmitAll,
        )
        .unwrap();
    assert_eq!(act.applied, N / 2);
    assert!(counting_b.max_returned.load(Ordering::Relaxed) <= 1000);
    assert_eq!(
        b.log.high_water_marks(&tenant()).unwrap(),
        a.high_water_marks(&tenant()).unwrap()
    );
}

//! Making a bundle from a tenant's event log.

use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use flate2::Compression;
use flate2::write::DeflateEncoder;
use nodus_fabric::{ChainId, Event, EventHash, TenantEventLog, VersionVector};
use nodus_policy::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ExportError;
use crate::format::{
    BundleId, COMPRESSION, EntryKind, FORMAT_VERSION, Hex32, MAX_RECIPIENTS, Manifest,
    ManifestChain, ManifestEntry, ManifestSender, PAYLOAD_TYPE, encode_header, pae,
    recipient_fingerprint,
};
use crate::trust::{BundleSigner, Clock, SystemClock, check_key_id};

/// Events read from the log per call, by default.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// A chain's range in a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRange {
    /// The chain.
    pub chain: ChainId,
    /// First seq.
    pub from: u64,
    /// Last seq.
    pub to: u64,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// The bundle's id.
    pub bundle_id: BundleId,
    /// SHA-256 of the file written.
    pub file_sha256: [u8; 32],
    /// Bytes written.
    pub file_len: u64,
    /// Events in the bundle.
    pub events: u64,
    /// Each chain's range.
    pub chains: Vec<ChainRange>,
    /// Payload plaintext bytes (before compression).
    pub payload_len: u64,
    /// The page size used to read the log.
    pub page_size: usize,
    /// The most events held in memory at once (one page).
    pub max_page_events: usize,
}

/// Makes `.noduspkg` bundles. Cheap to build; holds options only.
///
/// Memory stays bounded by one page of events whatever the bundle's size: the log is read twice
/// in pages of [`page_size`](Self::page_size) (once to digest each entry for the manifest, which
/// precedes the payload, once to write it), and the payload is compressed and encrypted as a
/// stream.
#[derive(Clone)]
pub struct Exporter {
    page_size: usize,
    compression_level: u32,
    opaque: Vec<(EntryKind, Vec<u8>)>,
    clock: Arc<dyn Clock>,
    bundle_id: Option<BundleId>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("page_size", &self.page_size)
            .field("compression_level", &self.compression_level)
            .field("opaque_entries", &self.opaque.len())
            .finish_non_exhaustive()
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter::new()
    }
}

impl Exporter {
    /// Pages of [`DEFAULT_PAGE_SIZE`], DEFLATE level 6, the system clock, a random bundle id.
    pub fn new() -> Self {
        Exporter {
            page_size: DEFAULT_PAGE_SIZE,
            compression_level: 6,
            opaque: Vec::new(),
            clock: Arc::new(SystemClock),
            bundle_id: None,
        }
    }

    /// Events read from the log per call (at least 1).
    #[must_use]
    pub fn page_size(mut self, events: usize) -> Self {
        self.page_size = events.max(1);
        self
    }

    /// DEFLATE level, 0 (stored) to 9 (smallest).
    #[must_use]
    pub fn compression_level(mut self, level: u32) -> Self {
        self.compression_level = level.min(9);
        self
    }

    /// The clock giving `created_at`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a `trust` entry: the sender's **public** trust material (certificates, public keys),
    /// opaque to this crate. Never put private keys here: every recipient can read it.
    #[must_use]
    pub fn with_trust_material(mut self, bytes: Vec<u8>) -> Self {
        self.opaque.push((EntryKind::Trust, bytes));
        self
    }

    /// Adds a `crdt` entry (reserved for CRDT deltas; opaque bytes in this version).
    #[must_use]
    pub fn with_crdt_delta(mut self, bytes: Vec<u8>) -> Self {
        self.opaque.push((EntryKind::Crdt, bytes));
        self
    }

    /// Uses a fixed bundle id instead of a random one. Only for known-answer test vectors: a
    /// bundle id must never be reused, receivers refuse the second bundle with the same id.
    #[must_use]
    pub fn fixed_bundle_id(mut self, id: BundleId) -> Self {
        self.bundle_id = Some(id);
        self
    }

    /// Writes a bundle of every event of `tenant` that `since` (what the recipient acknowledged;
    /// empty: everything) does not cover, signed by `signer`, encrypted to `recipients`, valid for
    /// `expires_in`, to `writer`.
    ///
    /// # Errors
    /// [`ExportError`]; `writer` may then hold a partial file, to be discarded.
    #[allow(clippy::too_many_arguments)]
    pub fn export(
        &self,
        log: &dyn TenantEventLog,
        tenant: &TenantId,
        since: &VersionVector,
        signer: &dyn BundleSigner,
        recipients: &[age::x25519::Recipient],
        expires_in: Duration,
        writer: impl Write,
    ) -> Result<ExportReport, ExportError> {
        if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
            return Err(ExportError::Recipients(recipients.len()));
        }
        check_key_id(signer.key_id())?;
        let mut fingerprints: Vec<Hex32> = recipients
            .iter()
            .map(|r| Hex32(recipient_fingerprint(r)))
            .collect();
        fingerprints.sort();
        fingerprints.dedup();

        // The ranges: every chain the sender has beyond what the recipient acknowledged.
        let heads = log.high_water_marks(tenant)?;
        let mut plans = Vec::new();
        for (chain, head) in &heads {
            let acked = since.get(chain).map_or(0, |h| h.seq);
            if head.seq <= acked {
                continue;
            }
            let from = acked + 1;
            let prereq_hash = if from == 1 {
                EventHash::ZERO
            } else {
                let ev = log.read_chain(tenant, *chain, acked, 1)?;
                match ev.first() {
                    Some(e) if e.seq == acked => e.hash,
                    _ => return Err(ExportError::LogChanged(*chain)),
                }
            };
            plans.push(Plan {
                chain: *chain,
                from,
                to: head.seq,
                prereq_hash,
                head_hash: head.hash,
            });
        }

        // First pass: digest each chain's entry, one page at a time.
        let mut max_page = 0usize;
        let mut entries = Vec::new();
        let mut chains = Vec::new();
        let mut events = 0u64;
        for p in &plans {
            let mut h = DigestSink::default();
            self.stream_chain(log, tenant, p, &mut max_page, &mut h)?;
            let index = u32::try_from(entries.len())
                .map_err(|_| ExportError::Encode("too many entries".into()))?;
            entries.push(ManifestEntry {
                kind: EntryKind::Events,
                len: h.len,
                sha256: Hex32(h.hasher.finalize().into()),
            });
            chains.push(ManifestChain {
                entry: index,
                from: p.from,
                head_hash: p.head_hash,
                incarnation: p.chain.incarnation,
                node_id: p.chain.node_id,
                prereq_hash: p.prereq_hash,
                to: p.to,
            });
            events += p.to - p.from + 1;
        }
        for (kind, bytes) in &self.opaque {
            entries.push(ManifestEntry {
                kind: *kind,
                len: bytes.len() as u64,
                sha256: Hex32(Sha256::digest(bytes).into()),
            });
        }
        let payload_len = entries
            .iter()
            .map(|e| crate::format::FRAME_HEADER_LEN + e.len)
            .sum::<u64>();

        let bundle_id = match self.bundle_id {
            Some(id) => id,
            None => BundleId::random().map_err(ExportError::Random)?,
        };
        let created_at = self.clock.now_unix();
        let manifest = Manifest {
            bundle_id,
            chains,
            compression: COMPRESSION.to_owned(),
            created_at,
            entries: entries.clone(),
            expires_at: created_at.saturating_add(expires_in.as_secs().max(1)),
            format: FORMAT_VERSION,
            payload_len,
            recipients: fingerprints,
            sender: ManifestSender {
                key_id: signer.key_id().to_owned(),
                public_key: Hex32(signer.public_key()),
            },
            tenant: tenant.clone(),
        };
        let manifest_bytes = manifest
            .to_canonical()
            .map_err(|e| ExportError::Encode(e.to_string()))?;
        let manifest_len = u32::try_from(manifest_bytes.len())
            .map_err(|_| ExportError::Encode("manifest above 4 GiB".into()))?;
        let signature = signer.sign(&pae(PAYLOAD_TYPE, &manifest_bytes))?;

        let mut out = HashingWriter {
            inner: writer,
            hasher: Sha256::new(),
            len: 0,
        };
        out.write_all(&encode_header(manifest_len))?;
        out.write_all(&manifest_bytes)?;
        out.write_all(&signature)?;

        // Second pass: frame → DEFLATE → age, streamed.
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| ExportError::Encrypt(e.to_string()))?;
        let age_writer = encryptor.wrap_output(&mut out)?;
        let deflate = DeflateEncoder::new(age_writer, Compression::new(self.compression_level));
        let mut plain = BufWriter::with_capacity(64 * 1024, deflate);
        for (p, entry) in plans.iter().zip(&entries) {
            frame_header(&mut plain, EntryKind::Events, entry.len)?;
            let mut h = DigestSink::default();
            self.stream_chain(
                log,
                tenant,
                p,
                &mut max_page,
                &mut TeeSink(&mut h, &mut plain),
            )?;
            if h.len != entry.len || h.hasher.finalize().as_slice() != entry.sha256.0 {
                return Err(ExportError::LogChanged(p.chain));
            }
        }
        for (kind, bytes) in &self.opaque {
            frame_header(&mut plain, *kind, bytes.len() as u64)?;
            plain.write_all(bytes)?;
        }
        let deflate = plain.into_inner().map_err(|e| e.into_error())?;
        let age_writer = deflate.finish()?;
        age_writer.finish()?;
        out.flush()?;

        Ok(ExportReport {
            bundle_id,
            file_sha256: out.hasher.finalize().into(),
            file_len: out.len,
            events,
            chains: plans
                .iter()
                .map(|p| ChainRange {
                    chain: p.chain,
                    from: p.from,
                    to: p.to,
                })
                .collect(),
            payload_len,
            page_size: self.page_size,
            max_page_events: max_page,
        })
    }

    fn stream_chain(
        &self,
        log: &dyn TenantEventLog,
        tenant: &TenantId,
        p: &Plan,
        max_page: &mut usize,
        sink: &mut dyn RecordSink,
    ) -> Result<(), ExportError> {
        let mut seq = p.from;
        let mut prev = p.prereq_hash;
        while seq <= p.to {
            let want = usize::try_from(p.to - seq + 1)
                .unwrap_or(usize::MAX)
                .min(self.page_size);
            let page = log.read_chain(tenant, p.chain, seq, want)?;
            if page.is_empty() {
                return Err(ExportError::LogChanged(p.chain));
            }
            *max_page = (*max_page).max(page.len());
            for e in page.iter().take(want) {
                if e.seq != seq || e.prev_hash != prev {
                    return Err(ExportError::LogChanged(p.chain));
                }
                sink.record(e)?;
                prev = e.hash;
                seq += 1;
            }
        }
        if prev != p.head_hash {
            return Err(ExportError::LogChanged(p.chain));
        }
        Ok(())
    }
}

struct Plan {
    chain: ChainId,
    from: u64,
    to: u64,
    prereq_hash: EventHash,
    head_hash: EventHash,
}

fn frame_header(w: &mut impl Write, kind: EntryKind, len: u64) -> io::Result<()> {
    w.write_all(&[kind.tag()])?;
    w.write_all(&len.to_be_bytes())
}

/// Where the encoded records of an `events` entry go.
trait RecordSink {
    fn record(&mut self, e: &Event) -> Result<(), ExportError>;
}

#[derive(Default)]
struct DigestSink {
    hasher: Sha256,
    len: u64,
}

pub(crate) fn encode_record(e: &Event) -> Result<(Vec<u8>, [u8; 4]), ExportError> {
    let bytes = e.canonical_bytes();
    let n =
        u32::try_from(bytes.len()).map_err(|_| ExportError::Encode("event above 4 GiB".into()))?;
    Ok((bytes, n.to_be_bytes()))
}

impl RecordSink for DigestSink {
    fn record(&mut self, e: &Event) -> Result<(), ExportError> {
        let (bytes, len) = encode_record(e)?;
        self.hasher.update(len);
        self.hasher.update(&bytes);
        self.len += 4 + bytes.len() as u64;
        Ok(())
    }
}

struct TeeSink<'a, W: Write>(&'a mut DigestSink, &'a mut W);

impl<W: Write> RecordSink for TeeSink<'_, W> {
    fn record(&mut self, e: &Event) -> Result<(), ExportError> {
        let (bytes, len) = encode_record(e)?;
        self.0.hasher.update(len);
        self.0.hasher.update(&bytes);
        self.0.len += 4 + bytes.len() as u64;
        self.1.write_all(&len)?;
        self.1.write_all(&bytes)?;
        Ok(())
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.hasher.update(done);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

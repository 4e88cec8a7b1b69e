//! The checks, in their documented order, streamed over one read of the file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use flate2::bufread::DeflateDecoder;
use nodus_fabric::{ChainId, Event, EventHash, TenantEventLog};
use nodus_policy::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{RejectReason, Rejection};
use crate::format::{
    BundleId, COMPRESSION, EntryKind, FORMAT_VERSION, FRAME_HEADER_LEN, HEADER_LEN, MAGIC,
    MAX_RECIPIENTS, Manifest, PAYLOAD_TYPE, SIGNATURE_LEN, pae,
};
use crate::trust::{TrustStore, check_key_id};

/// Size caps, checked before anything large is parsed. The defaults suit bundles of a few
/// million events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bundle file, in bytes (default 2 GiB).
    pub max_file: u64,
    /// Largest manifest, in bytes (default 1 MiB).
    pub max_manifest: u64,
    /// Largest `events` entry, in bytes of plaintext (default 1 GiB).
    pub max_entry: u64,
    /// Largest `crdt` or `trust` entry, in bytes; these are held in memory (default 16 MiB).
    pub max_opaque_entry: u64,
    /// Largest payload once decrypted and decompressed, in bytes (default 4 GiB).
    pub max_payload: u64,
    /// Largest single event record, in bytes (default 4 MiB + 64 KiB: the fabric's payload cap
    /// and room for the other fields).
    pub max_event: u32,
    /// Most chains in one manifest (default 4,096).
    pub max_chains: usize,
    /// Most entries in one manifest (default 8,192).
    pub max_entries: usize,
    /// Most events one activation ingests (they are held in memory for the single, atomic
    /// `ingest` call; default 2,000,000).
    pub max_activate_events: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file: 2 << 30,
            max_manifest: 1 << 20,
            max_entry: 1 << 30,
            max_opaque_entry: 16 << 20,
            max_payload: 4 << 30,
            max_event: (4 << 20) + (64 << 10),
            max_chains: 4096,
            max_entries: 8192,
            max_activate_events: 2_000_000,
        }
    }
}

/// What a verified bundle would do to one chain of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPlan {
    /// The chain.
    pub chain: ChainId,
    /// First seq in the bundle.
    pub from: u64,
    /// Last seq in the bundle.
    pub to: u64,
    /// The receiver's high-water mark for the chain when verified.
    pub have: u64,
    /// Events the receiver does not hold yet (`to − max(have, from − 1)`).
    pub new_events: u64,
}

/// One entry of a verified bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// Its kind.
    pub kind: EntryKind,
    /// Its length in bytes.
    pub len: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

/// What a verified bundle holds and would apply. Nothing in it is secret beyond what the manifest
/// already shows a courier, except the counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSummary {
    /// The bundle id.
    pub bundle_id: BundleId,
    /// The tenant.
    pub tenant: TenantId,
    /// SHA-256 of the file.
    pub file_sha256: [u8; 32],
    /// The file's length.
    pub file_len: u64,
    /// The sender's key id.
    pub sender_key_id: String,
    /// When it was made, unix seconds.
    pub created_at: u64,
    /// When it expires, unix seconds.
    pub expires_at: u64,
    /// Per chain: its range and what is new here.
    pub chains: Vec<ChainPlan>,
    /// Its entries.
    pub entries: Vec<EntryInfo>,
    /// Events in the bundle.
    pub events: u64,
    /// Events the receiver does not hold yet.
    pub new_events: u64,
}

/// A `crdt` or `trust` entry of an activated bundle, verified (its digest is the manifest's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpaqueEntry {
    /// `crdt` or `trust`.
    pub kind: EntryKind,
    /// The bytes.
    pub bytes: Vec<u8>,
}

pub(crate) struct Checks<'a> {
    pub limits: Limits,
    pub trust: &'a TrustStore,
    pub now: u64,
    pub skew: u64,
    pub identity: &'a age::x25519::Identity,
    pub fingerprint: [u8; 32],
    pub replayed: &'a dyn Fn(&BundleId) -> Result<bool, String>,
}

pub(crate) struct Verified {
    pub summary: BundleSummary,
    pub events: Vec<Event>,
    pub opaque: Vec<OpaqueEntry>,
}

/// The file as read: every byte goes through the SHA-256, so the rejection can name the file.
struct Src {
    inner: io::Take<File>,
    hasher: Sha256,
    read: u64,
}

impl Read for Src {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.read += n as u64;
        Ok(n)
    }
}

impl Src {
    /// Reads what is left (bounded by the take) so the digest covers the whole file.
    fn finish(mut self) -> ([u8; 32], u64) {
        let _ = io::copy(&mut self, &mut io::sink());
        (self.hasher.finalize().into(), self.read)
    }
}

/// Verifies the file at `path` for `tenant` against the receiver's `log`. With `collect`, keeps
/// the events and opaque entries (for activation).
pub(crate) fn verify_file(
    checks: &Checks<'_>,
    path: &Path,
    tenant: &TenantId,
    log: &dyn TenantEventLog,
    collect: bool,
) -> Result<Verified, Rejection> {
    let reject0 = |reason| Rejection {
        reason,
        bundle_id: None,
        file_sha256: [0; 32],
    };
    let file = File::open(path).map_err(|e| reject0(RejectReason::Io(e.to_string())))?;
    let size = file
        .metadata()
        .map_err(|e| reject0(RejectReason::Io(e.to_string())))?
        .len();
    let mut src = Src {
        inner: file.take(checks.limits.max_file.saturating_add(1)),
        hasher: Sha256::new(),
        read: 0,
    };
    if size > checks.limits.max_file {
        // Not read at all: hashing an arbitrarily large file is the endless-data attack again.
        return Err(reject0(RejectReason::FileTooLarge {
            size,
            max: checks.limits.max_file,
        }));
    }
    let mut bundle_id = None;
    let result = run(checks, &mut src, size, tenant, log, collect, &mut bundle_id);
    let (sha, read) = src.finish();
    let result = match result {
        Ok(v) if read > checks.limits.max_file => Err(RejectReason::FileTooLarge {
            size: read,
            max: checks.limits.max_file,
        })
        .map(|()| v),
        Ok(v) if read != size => Err(RejectReason::Io(
            "the file changed while it was read".into(),
        ))
        .map(|()| v),
        other => other,
    };
    match result {
        Ok(mut v) => {
            v.summary.file_sha256 = sha;
            v.summary.file_len = read;
            Ok(v)
        }
        Err(reason) => Err(Rejection {
            reason,
            bundle_id,
            file_sha256: sha,
        }),
    }
}

fn malformed(s: impl Into<String>) -> RejectReason {
    RejectReason::Malformed(s.into())
}

fn read_exact_or(src: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), RejectReason> {
    src.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            malformed(format!("the file ends inside the {what}"))
        } else {
            RejectReason::Io(e.to_string())
        }
    })
}

#[allow(clippy::too_many_lines)]
fn run(
    checks: &Checks<'_>,
    src: &mut Src,
    size: u64,
    tenant: &TenantId,
    log: &dyn TenantEventLog,
    collect: bool,
    bundle_id_out: &mut Option<BundleId>,
) -> Result<Verified, RejectReason> {
    let limits = &checks.limits;
    // 1. Size caps: header, manifest length, then the manifest's declared sizes.
    let mut header = [0u8; HEADER_LEN];
    read_exact_or(src, &mut header, "header")?;
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err(malformed("the file does not start with `NODUSPKG`"));
    }
    let (ver, rest) = rest.split_at(2);
    let (reserved, len) = rest.split_at(2);
    let version = u16::from_be_bytes([
        ver.first().copied().unwrap_or(0),
        ver.get(1).copied().unwrap_or(0),
    ]);
    if version != FORMAT_VERSION {
        return Err(RejectReason::UnsupportedVersion(version));
    }
    if reserved != [0, 0] {
        return Err(malformed("reserved header bytes are not zero"));
    }
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(len);
    let manifest_len = u64::from(u32::from_be_bytes(len4));
    if manifest_len > limits.max_manifest {
        return Err(RejectReason::ManifestTooLarge {
            len: manifest_len,
            max: limits.max_manifest,
        });
    }
    if HEADER_LEN as u64 + manifest_len + SIGNATURE_LEN as u64 > size {
        return Err(malformed("the file is shorter than its header declares"));
    }
    let mut manifest_bytes = vec![0u8; usize::try_from(manifest_len).unwrap_or(0)];
    read_exact_or(src, &mut manifest_bytes, "manifest")?;
    let mut sig = [0u8; SIGNATURE_LEN];
    read_exact_or(src, &mut sig, "signature")?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| malformed(format!("the manifest is not valid: {e}")))?;
    *bundle_id_out = Some(manifest.bundle_id);
    if manifest.to_canonical().ok().as_deref() != Some(manifest_bytes.as_slice()) {
        return Err(malformed("the manifest is not in canonical form"));
    }
    if manifest.chains.len() > limits.max_chains {
        return Err(RejectReason::TooMany {
            what: "chains",
            count: manifest.chains.len(),
            max: limits.max_chains,
        });
    }
    if manifest.entries.len() > limits.max_entries {
        return Err(RejectReason::TooMany {
            what: "entries",
            count: manifest.entries.len(),
            max: limits.max_entries,
        });
    }
    if manifest.recipients.len() > MAX_RECIPIENTS {
        return Err(RejectReason::TooMany {
            what: "recipients",
            count: manifest.recipients.len(),
            max: MAX_RECIPIENTS,
        });
    }
    for (index, e) in manifest.entries.iter().enumerate() {
        let max = match e.kind {
            EntryKind::Events => limits.max_entry,
            EntryKind::Crdt | EntryKind::Trust => limits.max_opaque_entry,
        };
        if e.len > max {
            return Err(RejectReason::EntryTooLarge {
                index,
                len: e.len,
                max,
            });
        }
    }
    if manifest.payload_len > limits.max_payload {
        return Err(RejectReason::PayloadTooLarge {
            len: manifest.payload_len,
            max: limits.max_payload,
        });
    }
    check_structure(&manifest)?;

    // 2. Sender trusted, not revoked, not expired.
    let key_id = &manifest.sender.key_id;
    let Some(key) = checks.trust.get(key_id) else {
        return Err(RejectReason::UntrustedKey {
            key_id: key_id.clone(),
        });
    };
    if key.public_key != manifest.sender.public_key.0 {
        return Err(RejectReason::UntrustedKey {
            key_id: key_id.clone(),
        });
    }
    if key.revoked {
        return Err(RejectReason::RevokedKey {
            key_id: key_id.clone(),
        });
    }
    if let Some(not_after) = key.not_after
        && checks.now > not_after
    {
        return Err(RejectReason::KeyExpired {
            key_id: key_id.clone(),
            not_after,
        });
    }
    if let Some(tenants) = &key.tenants
        && !tenants.contains(manifest.tenant.as_str())
    {
        return Err(RejectReason::KeyNotForTenant {
            key_id: key_id.clone(),
            tenant: manifest.tenant.to_string(),
        });
    }

    // 3. Signature over PAE(type, manifest).
    let vk = VerifyingKey::from_bytes(&key.public_key).map_err(|_| RejectReason::BadSignature)?;
    vk.verify_strict(
        &pae(PAYLOAD_TYPE, &manifest_bytes),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| RejectReason::BadSignature)?;

    // 4. Expiry and creation time.
    if checks.now >= manifest.expires_at {
        return Err(RejectReason::Expired {
            expires_at: manifest.expires_at,
            now: checks.now,
        });
    }
    if manifest.created_at > checks.now.saturating_add(checks.skew) {
        return Err(RejectReason::CreatedInFuture {
            created_at: manifest.created_at,
            now: checks.now,
        });
    }

    // 5. Replay ledger.
    if (checks.replayed)(&manifest.bundle_id).map_err(RejectReason::Storage)? {
        return Err(RejectReason::Replayed);
    }

    // 6. Tenant and recipient.
    if &manifest.tenant != tenant {
        return Err(RejectReason::WrongTenant {
            expected: tenant.clone(),
            found: manifest.tenant.clone(),
        });
    }
    if !manifest
        .recipients
        .iter()
        .any(|r| r.0 == checks.fingerprint)
    {
        return Err(RejectReason::NotARecipient);
    }

    // Prerequisites and the receiver's side of equivocation are computed from the manifest and
    // the log now, but reported in their place in the order (after digests).
    let storage = |e: nodus_fabric::EventLogError| RejectReason::Storage(e.to_string());
    let hwm = log.high_water_marks(tenant).map_err(storage)?;
    let local = log.node().chain();
    let mut prereq_problem = None;
    let mut equivocation = None;
    let mut states = Vec::with_capacity(manifest.chains.len());
    let mut plans = Vec::with_capacity(manifest.chains.len());
    for c in &manifest.chains {
        let chain = ChainId {
            node_id: c.node_id,
            incarnation: c.incarnation,
        };
        let have = hwm.get(&chain).map_or(0, |h| h.seq);
        let need = c.from - 1;
        let mut prev_lamport = 0;
        if have < need {
            prereq_problem.get_or_insert(RejectReason::MissingPrerequisite { chain, need, have });
        } else if need > 0 {
            let ev = log.read_chain(tenant, chain, need, 1).map_err(storage)?;
            let held = ev.first().filter(|e| e.seq == need);
            match held {
                // The bundle's first event must then be later than the one it builds on.
                Some(e) if e.hash == c.prereq_hash => prev_lamport = e.lamport,
                _ => {
                    equivocation.get_or_insert(RejectReason::Equivocation { chain, seq: need });
                }
            }
        }
        if chain == local && c.to > have {
            equivocation.get_or_insert(RejectReason::LocalChain { chain });
        }
        let new_events = c.to.saturating_sub(have.max(need));
        plans.push(ChainPlan {
            chain,
            from: c.from,
            to: c.to,
            have,
            new_events,
        });
        states.push(ChainState {
            chain,
            to: c.to,
            head_hash: c.head_hash,
            next_seq: c.from,
            prev_hash: c.prereq_hash,
            last_lamport: prev_lamport,
            have,
            theirs: VecDeque::new(),
        });
    }
    let total_events: u64 = plans.iter().map(|p| p.to - p.from + 1).sum();
    if collect && total_events > limits.max_activate_events {
        return Err(RejectReason::TooMany {
            what: "events to activate",
            count: usize::try_from(total_events).unwrap_or(usize::MAX),
            max: usize::try_from(limits.max_activate_events).unwrap_or(usize::MAX),
        });
    }

    // 7. Decrypt (age, then DEFLATE), streamed; the plaintext is bounded by its declared length.
    let buffered = BufReader::with_capacity(64 * 1024, src);
    let decryptor =
        age::Decryptor::new_buffered(buffered).map_err(|e| RejectReason::Decrypt(e.to_string()))?;
    if decryptor.is_scrypt() {
        return Err(RejectReason::Decrypt(
            "the payload is passphrase-encrypted".into(),
        ));
    }
    let stream = decryptor
        .decrypt(std::iter::once(checks.identity as &dyn age::Identity))
        .map_err(|e| RejectReason::Decrypt(e.to_string()))?;
    let inflater = DeflateDecoder::new(BufReader::with_capacity(64 * 1024, stream));
    let mut plain = inflater.take(manifest.payload_len.saturating_add(1));

    // 8.–11. One pass: digests and lengths first in rank, then prerequisites, chains, equivocation.
    let mut entry_problem: Option<RejectReason> = None;
    let mut chain_problem: Option<RejectReason> = None;
    let skip_events = prereq_problem.is_some();
    let mut events = Vec::new();
    let mut opaque = Vec::new();
    let mut entry_chain = vec![None; manifest.entries.len()];
    for (i, c) in manifest.chains.iter().enumerate() {
        if let Some(slot) = entry_chain.get_mut(c.entry as usize) {
            *slot = Some(i);
        }
    }
    let mut record = Vec::new();
    for (index, e) in manifest.entries.iter().enumerate() {
        let mut fh = [0u8; FRAME_HEADER_LEN as usize];
        let got = read_full(&mut plain, &mut fh)?;
        let mut fh_kind = [0u8; 1];
        let mut fh_len = [0u8; 8];
        fh_kind.copy_from_slice(fh.get(..1).unwrap_or(&[0]));
        fh_len.copy_from_slice(fh.get(1..9).unwrap_or(&[0; 8]));
        let kind_ok = fh_kind[0] == e.kind.tag();
        let len_ok = u64::from_be_bytes(fh_len) == e.len;
        if got < fh.len() || !kind_ok || !len_ok {
            entry_problem = Some(RejectReason::EntryLength {
                index,
                detail: if got < fh.len() {
                    "the payload ends before it".into()
                } else if !kind_ok {
                    "its frame names another kind".into()
                } else {
                    "its frame declares another length".into()
                },
            });
            break;
        }
        let mut er = EntryReader {
            inner: &mut plain,
            remaining: e.len,
            hasher: Sha256::new(),
            short: false,
        };
        let parse = entry_problem.is_none() && chain_problem.is_none() && !skip_events;
        match e.kind {
            EntryKind::Events => {
                let state = entry_chain
                    .get(index)
                    .copied()
                    .flatten()
                    .and_then(|i| states.get_mut(i));
                if let (true, Some(state)) = (parse, state)
                    && let Err(p) = check_events(
                        &mut er,
                        state,
                        tenant,
                        log,
                        limits.max_event,
                        collect.then_some(&mut events),
                        &mut record,
                        &mut equivocation,
                    )?
                {
                    chain_problem = Some(p);
                }
            }
            EntryKind::Crdt | EntryKind::Trust => {
                if collect {
                    let mut bytes = Vec::new();
                    er.read_to_end(&mut bytes).map_err(decrypt_err)?;
                    opaque.push(OpaqueEntry {
                        kind: e.kind,
                        bytes,
                    });
                }
            }
        }
        io::copy(&mut er, &mut io::sink()).map_err(decrypt_err)?;
        if er.short {
            entry_problem = Some(RejectReason::EntryLength {
                index,
                detail: "the payload ends inside it".into(),
            });
            break;
        }
        if er.hasher.finalize().as_slice() != e.sha256.0 {
            entry_problem = Some(RejectReason::EntryDigest { index });
            // Keep reading: a later decrypt failure ranks first.
        }
    }
    // The plaintext must end where the manifest says, and the age stream right after DEFLATE.
    let mut one = [0u8; 1];
    if entry_problem.is_none() && read_full(&mut plain, &mut one)? != 0 {
        entry_problem = Some(RejectReason::EntryLength {
            index: manifest.entries.len(),
            detail: "bytes follow the last entry".into(),
        });
    }
    let mut inflater = plain.into_inner();
    io::copy(&mut inflater, &mut io::sink()).map_err(decrypt_err)?;
    let rest = inflater.get_mut();
    let extra = io::copy(rest, &mut io::sink()).map_err(decrypt_err)?;
    if extra != 0 && entry_problem.is_none() {
        entry_problem = Some(malformed("bytes follow the compressed payload"));
    }
    drop(inflater);

    if let Some(p) = entry_problem {
        return Err(p);
    }
    if let Some(p) = prereq_problem {
        return Err(p);
    }
    if let Some(p) = chain_problem {
        return Err(p);
    }
    if let Some(p) = equivocation {
        return Err(p);
    }

    let new_events = plans.iter().map(|p| p.new_events).sum();
    Ok(Verified {
        summary: BundleSummary {
            bundle_id: manifest.bundle_id,
            tenant: manifest.tenant.clone(),
            file_sha256: [0; 32],
            file_len: 0,
            sender_key_id: manifest.sender.key_id.clone(),
            created_at: manifest.created_at,
            expires_at: manifest.expires_at,
            chains: plans,
            entries: manifest
                .entries
                .iter()
                .map(|e| EntryInfo {
                    kind: e.kind,
                    len: e.len,
                    sha256: e.sha256.0,
                })
                .collect(),
            events: total_events,
            new_events,
        },
        events,
        opaque,
    })
}

fn decrypt_err(e: io::Error) -> RejectReason {
    RejectReason::Decrypt(e.to_string())
}

/// Reads until `buf` is full or the plaintext ends; an error below (age, DEFLATE, the file) is a
/// decryption failure.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, RejectReason> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(decrypt_err(e)),
        }
    }
    Ok(n)
}

fn check_structure(m: &Manifest) -> Result<(), RejectReason> {
    if m.format != FORMAT_VERSION {
        return Err(malformed("the manifest's format is not the header's"));
    }
    if m.compression != COMPRESSION {
        return Err(malformed(format!(
            "compression `{}` is not supported",
            m.compression.chars().take(32).collect::<String>()
        )));
    }
    check_key_id(&m.sender.key_id).map_err(|e| malformed(e.to_string()))?;
    if m.recipients.is_empty() {
        return Err(malformed("the manifest lists no recipient"));
    }
    if m.recipients.windows(2).any(|w| w.first() >= w.get(1)) {
        return Err(malformed("recipients are not sorted and unique"));
    }
    if m.expires_at <= m.created_at {
        return Err(malformed("the bundle expires before it was created"));
    }
    let total = m.entries.iter().try_fold(0u64, |acc, e| {
        acc.checked_add(FRAME_HEADER_LEN)?.checked_add(e.len)
    });
    if total != Some(m.payload_len) {
        return Err(malformed(
            "`payload_len` is not the sum of the entry frames",
        ));
    }
    let mut used = vec![false; m.entries.len()];
    let mut prev: Option<ChainId> = None;
    for c in &m.chains {
        let chain = ChainId {
            node_id: c.node_id,
            incarnation: c.incarnation,
        };
        if prev.is_some_and(|p| p >= chain) {
            return Err(malformed("chains are not sorted and unique"));
        }
        prev = Some(chain);
        if c.from == 0 || c.to < c.from || c.to > nodus_fabric::MAX_COUNTER {
            return Err(malformed(format!("chain `{chain}` has an invalid range")));
        }
        if (c.from == 1) != (c.prereq_hash == EventHash::ZERO) {
            return Err(malformed(format!(
                "chain `{chain}` has a prerequisite hash that does not fit its range"
            )));
        }
        let slot = used.get_mut(c.entry as usize);
        let kind = m.entries.get(c.entry as usize).map(|e| e.kind);
        match (slot, kind) {
            (Some(s), Some(EntryKind::Events)) if !*s => *s = true,
            _ => {
                return Err(malformed(format!(
                    "chain `{chain}` names entry `{}`, which is not a free `events` entry",
                    c.entry
                )));
            }
        }
    }
    for (i, e) in m.entries.iter().enumerate() {
        if e.kind == EntryKind::Events && !used.get(i).copied().unwrap_or(false) {
            return Err(malformed(format!(
                "`events` entry `{i}` belongs to no chain"
            )));
        }
    }
    Ok(())
}

struct ChainState {
    chain: ChainId,
    to: u64,
    head_hash: EventHash,
    next_seq: u64,
    prev_hash: EventHash,
    last_lamport: u64,
    have: u64,
    theirs: VecDeque<Event>,
}

/// An entry's bytes: bounded by its declared length, hashed as read.
struct EntryReader<'a, R: Read> {
    inner: &'a mut R,
    remaining: u64,
    hasher: Sha256,
    short: bool,
}

impl<R: Read> Read for EntryReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let Some(b) = buf.get_mut(..max) else {
            return Ok(0);
        };
        let n = self.inner.read(b)?;
        if n == 0 {
            self.short = true;
        }
        self.hasher.update(b.get(..n).unwrap_or_default());
        self.remaining -= n as u64;
        Ok(n)
    }
}

const PAGE: usize = 1000;

/// Decodes and checks one chain's events. `Ok(Err(p))`: a chain problem (the rest of the entry is
/// then only hashed); `Err`: a decryption failure.
#[allow(clippy::too_many_arguments)]
fn check_events<R: Read>(
    er: &mut EntryReader<'_, R>,
    st: &mut ChainState,
    tenant: &TenantId,
    log: &dyn TenantEventLog,
    max_event: u32,
    mut collect: Option<&mut Vec<Event>>,
    record: &mut Vec<u8>,
    equivocation: &mut Option<RejectReason>,
) -> Result<Result<(), RejectReason>, RejectReason> {
    let broken = |st: &ChainState, detail: &str| RejectReason::BrokenChain {
        chain: st.chain,
        seq: st.next_seq,
        detail: detail.to_owned(),
    };
    while er.remaining > 0 {
        let mut len = [0u8; 4];
        if read_full(er, &mut len)? < 4 {
            return Ok(Err(broken(st, "a record is cut")));
        }
        let n = u32::from_be_bytes(len);
        if n > max_event {
            return Ok(Err(broken(st, "a record is larger than the limit")));
        }
        record.resize(n as usize, 0);
        if read_full(er, record)? < record.len() {
            return Ok(Err(broken(st, "a record is cut")));
        }
        let e = match Event::decode(record) {
            Ok(e) => e,
            Err(err) => return Ok(Err(broken(st, &err.to_string()))),
        };
        if &e.tenant != tenant {
            return Ok(Err(broken(st, "an event of another tenant")));
        }
        if e.chain() != st.chain {
            return Ok(Err(broken(st, "an event of another chain")));
        }
        if e.seq != st.next_seq || e.seq > st.to {
            return Ok(Err(broken(st, "seqs are not contiguous within the range")));
        }
        if e.prev_hash != st.prev_hash {
            return Ok(Err(broken(
                st,
                "`prev_hash` is not the previous event's hash",
            )));
        }
        if e.lamport <= st.last_lamport || e.lamport > nodus_fabric::MAX_COUNTER {
            return Ok(Err(broken(st, "`lamport` does not increase")));
        }
        if e.seq <= st.have && equivocation.is_none() {
            if st.theirs.front().is_none_or(|t| t.seq != e.seq) {
                st.theirs = log
                    .read_chain(tenant, st.chain, e.seq, PAGE)
                    .map_err(|err| RejectReason::Storage(err.to_string()))?
                    .into();
            }
            match st.theirs.pop_front() {
                Some(t) if t.seq == e.seq && t.hash == e.hash => {}
                _ => {
                    *equivocation = Some(RejectReason::Equivocation {
                        chain: st.chain,
                        seq: e.seq,
                    });
                }
            }
        }
        st.prev_hash = e.hash;
        st.last_lamport = e.lamport;
        st.next_seq += 1;
        if let Some(v) = collect.as_deref_mut()
            && e.seq > st.have
        {
            v.push(e);
        }
    }
    if st.next_seq != st.to + 1 || st.prev_hash != st.head_hash {
        return Ok(Err(broken(st, "the range ends before the manifest's head")));
    }
    Ok(Ok(()))
}

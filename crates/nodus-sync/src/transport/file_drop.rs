//! [`FileDropTransport`]: batches as files in a shared, watched directory (a LAN share, a
//! synced folder): the connected variant of the air-gap courier.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodus_fabric::VersionVector;
use nodus_policy::TenantId;

use super::{Delivery, DiffTransport, SignedBatch, Subscription, TransportError};

/// The extension of a batch file.
pub const BATCH_EXTENSION: &str = "nlb";

/// A [`DiffTransport`] over a directory every node can read and write: `<root>/<tenant>/` holds
/// one file per batch, named `<unix ms, 16 digits>-<batch id, 64 hex>.nlb`, so names sort in
/// publication time and a name says which batch it is (the time part is strictly increasing
/// within a process: one publisher's batches sort in the order it published them, even within a
/// millisecond). A batch is written to a hidden temporary
/// file, flushed to disk and renamed into place, so a reader never sees half a batch. Readers
/// poll the directory. Files are kept (any node may catch up from them) until the host prunes
/// them with [`prune`](Self::prune).
#[derive(Clone, Debug)]
pub struct FileDropTransport {
    root: PathBuf,
    poll: Duration,
    ack_wait: Duration,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TransportError {
    TransportError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time part of a new batch file's name: the clock in milliseconds, but strictly greater than
/// the last one this process used, so two publishes in the same millisecond (or across a clock
/// step back) still sort in publication order.
fn name_ms() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev.saturating_add(1));
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => prev = seen,
        }
    }
}

impl FileDropTransport {
    /// A transport over `root` (created when missing), polling every 10 ms and redelivering what
    /// is not acknowledged within 5 s.
    ///
    /// # Errors
    /// [`TransportError::Io`] when `root` cannot be created.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, TransportError> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        Ok(FileDropTransport {
            root,
            poll: Duration::from_millis(10),
            ack_wait: Duration::from_secs(5),
        })
    }

    /// Polls the directory every `poll`.
    #[must_use]
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Redelivers what is not acknowledged within `ack_wait`.
    #[must_use]
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// The directory of `tenant`'s batches.
    pub fn tenant_path(&self, tenant: &TenantId) -> PathBuf {
        self.root.join(super::tenant_token(tenant))
    }

    /// Deletes `tenant`'s batch files published more than `older_than` ago; returns how many.
    /// Only safe once every peer has applied them (see `sync.status`): a node that catches up
    /// later gets the events by asking their authors again.
    ///
    /// # Errors
    /// [`TransportError::Io`].
    pub fn prune(&self, tenant: &TenantId, older_than: Duration) -> Result<usize, TransportError> {
        let cutoff = now_ms().saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(0));
        let mut n = 0;
        for name in list(&self.tenant_path(tenant))? {
            if name_time(&name).is_some_and(|t| t < cutoff) {
                let p = self.tenant_path(tenant).join(&name);
                fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The batch file names of a directory (not hidden, `.nlb`), sorted.
fn list(dir: &Path) -> Result<Vec<String>, TransportError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
            && name.ends_with(BATCH_EXTENSION)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn name_time(name: &str) -> Option<u64> {
    name.split('-').next().and_then(|t| t.parse().ok())
}

impl DiffTransport for FileDropTransport {
    fn publish(&self, tenant: &TenantId, batch: &SignedBatch) -> Result<(), TransportError> {
        let dir = self.tenant_path(tenant);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let id = batch.id();
        let name = format!("{:016}-{id}.{BATCH_EXTENSION}", name_ms());
        let tmp = dir.join(format!(".tmp-{id}"));
        let path = dir.join(&name);
        let written = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(batch.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(&path, e)
        })
    }

    fn subscribe(
        &self,
        tenant: &TenantId,
        _subscriber: &str,
        from: &VersionVector,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        let dir = self.tenant_path(tenant);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(Box::new(FileSubscription {
            dir,
            poll: self.poll,
            ack_wait: self.ack_wait,
            started_ms: now_ms(),
            from: from.clone(),
            done: BTreeSet::new(),
            names: Vec::new(),
            unacked: BTreeMap::new(),
            queue: Vec::new(),
        }))
    }
}

struct FileSubscription {
    dir: PathBuf,
    poll: Duration,
    ack_wait: Duration,
    started_ms: u64,
    from: VersionVector,
    /// Names acknowledged or skipped.
    done: BTreeSet<String>,
    /// Token → name.
    names: Vec<String>,
    /// Token → when delivered.
    unacked: BTreeMap<usize, Instant>,
    /// Names listed and not yet delivered, in reverse order (pop from the end).
    queue: Vec<String>,
}

impl FileSubscription {
    fn deliver(
        &mut self,
        token: usize,
        redelivered: bool,
    ) -> Result<Option<Delivery>, TransportError> {
        let Some(name) = self.names.get(token) else {
            return Ok(None);
        };
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                self.unacked.insert(token, Instant::now());
                Ok(Some(Delivery {
                    batch: SignedBatch::from_bytes(bytes),
                    token: token as u64,
                    redelivered,
                }))
            }
            // Pruned meanwhile: nothing to deliver.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.done.insert(name.clone());
                self.unacked.remove(&token);
                Ok(None)
            }
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

impl Subscription for FileSubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            let overdue = self
                .unacked
                .iter()
                .find(|(_, at)| now.duration_since(**at) >= self.ack_wait)
                .map(|(t, _)| *t);
            if let Some(t) = overdue
                && let Some(d) = self.deliver(t, true)?
            {
                return Ok(Some(d));
            }
            if self.queue.is_empty() {
                let pending: BTreeSet<&String> = self
                    .unacked
                    .keys()
                    .filter_map(|t| self.names.get(*t))
                    .collect();
                let mut fresh: Vec<String> = list(&self.dir)?
                    .into_iter()
                    .filter(|n| !self.done.contains(n) && !pending.contains(n))
                    .collect();
                fresh.reverse();
                self.queue = fresh;
            }
            while let Some(name) = self.queue.pop() {
                if self.done.contains(&name) {
                    continue;
                }
                let history = name_time(&name).is_some_and(|t| t < self.started_ms);
                if history {
                    let path = self.dir.join(&name);
                    let covered = fs::read(&path)
                        .map(|b| SignedBatch::from_bytes(b).covered_by(&self.from))
                        .unwrap_or(true);
                    if covered {
                        self.done.insert(name);
                        continue;
                    }
                }
                let token = self.names.len();
                self.names.push(name);
                if let Some(d) = self.deliver(token, false)? {
                    return Ok(Some(d));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(self.poll.min(deadline - now));
        }
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        if let Ok(t) = usize::try_from(delivery.token)
            && self.unacked.remove(&t).is_some()
            && let Some(name) = self.names.get(t)
        {
            self.done.insert(name.clone());
        }
        Ok(())
    }
}

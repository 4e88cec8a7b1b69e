//! Polling a policy directory for changes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::error::PolicyErrors;
use crate::source::PolicySources;
use crate::store::{PolicyStore, ReloadReport};

/// Watches a policy directory on a thread it owns, polling file modification times and sizes
/// every `interval`, and calls back when something changed. Stops and joins on
/// [`PolicyWatcher::stop`] or drop (from any thread but its own: a callback that drops the last
/// owner of its watcher lets the thread end on its own).
///
/// The baseline is the directory as it is when the watcher is made, so an edit made right after
/// `spawn` returns is seen even if the thread starts late. Files are followed through symlinks (an
/// edit of the target counts); directories are never entered through one, so a symlink loop
/// cannot make the watcher spin.
///
/// `nodus-core` instances watch through `Nodus::watch_policy`, which reloads through the audited
/// path; [`PolicyWatcher::reloading`] is for a store you own.
pub struct PolicyWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyWatcher")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// Every file under `dir` with its modification time and size, sorted; an entry whose metadata
/// cannot be read (a dangling symlink) is listed without a time.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => {
                    if !is_link {
                        stack.push(p);
                    }
                }
                Ok(m) => out.push((p, m.modified().ok(), m.len())),
                Err(_) => out.push((p, None, u64::MAX)),
            }
        }
    }
    out.sort();
    out
}

impl PolicyWatcher {
    /// Starts polling `dir` every `interval`; calls `on_change` after each change it sees. The
    /// watcher stops when `on_change` returns `false`.
    ///
    /// # Errors
    /// The error of spawning the thread.
    pub fn spawn<F>(
        dir: impl AsRef<Path>,
        interval: Duration,
        mut on_change: F,
    ) -> std::io::Result<Self>
    where
        F: FnMut() -> bool + Send + 'static,
    {
        let dir = dir.as_ref().to_path_buf();
        let (stop, stopped) = mpsc::channel::<()>();
        let mut last = fingerprint(&dir);
        let thread = std::thread::Builder::new()
            .name("nodus-policy-watch".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = fingerprint(&dir);
                    if now != last {
                        last = now;
                        if !on_change() {
                            return;
                        }
                    }
                }
            })?;
        Ok(PolicyWatcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Watches `dir` and reloads `store` from it on every change; each attempt's result goes to
    /// `on_reload`. For a store you own: an instance's store is changed only through its audited
    /// reload path (`Nodus::watch_policy`).
    ///
    /// # Errors
    /// The error of spawning the thread.
    pub fn reloading<F>(
        store: Arc<PolicyStore>,
        dir: impl AsRef<Path>,
        interval: Duration,
        on_reload: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(Result<ReloadReport, PolicyErrors>) + Send + 'static,
    {
        let d = dir.as_ref().to_path_buf();
        Self::spawn(dir, interval, move || {
            on_reload(PolicySources::from_dir(&d).and_then(|src| store.reload(src)));
            true
        })
    }

    /// Stops polling and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        // Disconnecting wakes the thread at once.
        self.stop = None;
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.halt();
    }
}

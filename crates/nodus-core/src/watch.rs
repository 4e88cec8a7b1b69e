//! `Nodus::watch_policy`: reload the policy directory when its files change, through the same
//! audited, published reload path as the `policy.reload` built-ins.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{RecvTimeoutError, Sender};

/// The watcher thread an instance owns; stopped and joined by `shutdown()`.
pub(crate) struct PolicyWatch {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl PolicyWatch {
    pub(crate) fn spawn(
        dir: PathBuf,
        interval: Duration,
        on_change: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        // The baseline is taken now, on the caller's thread: an edit made right after
        // `watch_policy` returns is a change even if the thread starts late.
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
        Ok(PolicyWatch { stop, thread })
    }

    /// Stops the thread and joins it, unless called from the thread itself (the watcher may hold
    /// the last handle while it reloads; then it exits on its own right after).
    pub(crate) fn stop(self) {
        let _ = self.stop.try_send(());
        if self.thread.thread().id() != std::thread::current().id() {
            let _ = self.thread.join();
        }
    }
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// Every file under `dir` with its modification time and size, sorted; unreadable entries are
/// left out (the reload that follows reports them).
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            // Files are seen through symlinks (an edit of the target counts); directories are
            // never entered through one, so a symlink loop cannot make the watcher spin.
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

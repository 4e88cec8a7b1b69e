//! A coarse clock owned by one `Nodus` instance, so the hot path reads an atomic instead of the
//! system clock. A thread the instance owns advances it every millisecond and is joined on
//! shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// How often the clock advances.
pub(crate) const TICK: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct Shared {
    mono_ns: AtomicU64,
    unix_ms: AtomicU64,
    stop: AtomicBool,
}

/// A millisecond-resolution clock read with one atomic load.
#[derive(Debug)]
pub(crate) struct CoarseClock {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CoarseClock {
    /// Starts the ticking thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            mono_ns: AtomicU64::new(0),
            unix_ms: AtomicU64::new(unix_ms_now()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let origin = Instant::now();
        let thread = std::thread::Builder::new()
            .name("nodus-clock".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    s.mono_ns
                        .store(origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    s.unix_ms.store(unix_ms_now(), Ordering::Relaxed);
                }
            })?;
        Ok(CoarseClock {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Monotonic nanoseconds since the clock started (advances in ~1 ms steps).
    #[inline]
    pub(crate) fn mono_ns(&self) -> u64 {
        self.shared.mono_ns.load(Ordering::Relaxed)
    }

    /// Unix time in milliseconds (advances in ~1 ms steps).
    #[inline]
    pub(crate) fn unix_ms(&self) -> u64 {
        self.shared.unix_ms.load(Ordering::Relaxed)
    }

    /// Stops and joins the thread (idempotent).
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for CoarseClock {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_and_stops() {
        let c = CoarseClock::start().unwrap();
        let a = c.mono_ns();
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.mono_ns() > a);
        assert!(c.unix_ms() > 1_700_000_000_000);
        c.stop();
        c.stop();
    }
}

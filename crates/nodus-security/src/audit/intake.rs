//! The audit writer's intake: one bounded lock-free queue per *lane*, drained by the writer thread.
//!
//! A single shared queue makes every recording thread write the same tail index and the same
//! counters, so two threads recording at once spend their time passing cache lines back and forth.
//! Here each thread is given a lane (round-robin, once per thread) and records into that lane's
//! queue and counters only; threads on different lanes share nothing on the hot path. Records of
//! one thread stay in order (one lane); records of different threads are ordered by the writer,
//! which is the order the log gives them anyway.
//!
//! Waking the writer: it parks only after finding every lane empty, setting an `idle` flag first.
//! A recording thread reads that flag (a read-mostly line) and unparks the writer when it is set.
//! The check is deliberately not a full Dekker handshake (that would put a fence on every record):
//! in the rare race the writer sleeps until its timeout, never longer than the checkpoint interval.
//! Nothing waits on that — `flush` and `shutdown` wake the writer themselves, and a blocked
//! recorder (overflow `Block`) wakes it on every retry.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use super::record::AuditRecord;

/// Counters written only by the threads of one lane (and read by `stats` and the writer).
pub(crate) struct LaneCounters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) pending_drops: AtomicU64,
    /// The earliest drop time not yet covered by a gap record (`u64::MAX`: none).
    pub(crate) first_drop_ms: AtomicU64,
    /// The latest drop time not yet covered by a gap record (0: none).
    pub(crate) last_drop_ms: AtomicU64,
    pub(crate) max_depth: AtomicU64,
    /// `record()` calls between their `closed` check and their push: `shutdown` waits for these
    /// to finish so that no accepted record is pushed after the writer's last drain.
    pub(crate) in_flight: AtomicU64,
}

impl Default for LaneCounters {
    fn default() -> Self {
        LaneCounters {
            enqueued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending_drops: AtomicU64::new(0),
            first_drop_ms: AtomicU64::new(u64::MAX),
            last_drop_ms: AtomicU64::new(0),
            max_depth: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
}

pub(crate) struct Lane {
    pub(crate) queue: ArrayQueue<AuditRecord>,
    pub(crate) counters: CachePadded<LaneCounters>,
}

/// Drops not yet covered by a gap record, summed over every lane.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingDrops {
    pub(crate) count: u64,
    pub(crate) first_ms: u64,
    pub(crate) last_ms: u64,
}

pub(crate) struct Intake {
    lanes: Box<[CachePadded<Lane>]>,
    mask: usize,
    idle: CachePadded<AtomicBool>,
    writer: OnceLock<Thread>,
}

/// Hands each thread its lane number, once. A lane number is only a spreading hint, never shared
/// state: two instances give a thread the same lane index, which is harmless.
static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LANE: usize = NEXT_LANE.fetch_add(1, Ordering::Relaxed);
}

impl Intake {
    /// An intake with one lane per core (a power of two, 2 to 16), `capacity` records split
    /// evenly across them (at least 1 per lane).
    pub(crate) fn new(capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let lanes = cores.next_power_of_two().clamp(2, 16);
        Self::with_lanes(capacity, lanes)
    }

    /// An intake with `lanes` lanes (rounded up to a power of two).
    pub(crate) fn with_lanes(capacity: usize, lanes: usize) -> Self {
        let lanes = lanes.max(1).next_power_of_two();
        let per_lane = capacity.max(1).div_ceil(lanes).max(1);
        let lanes: Box<[CachePadded<Lane>]> = (0..lanes)
            .map(|_| {
                CachePadded::new(Lane {
                    queue: ArrayQueue::new(per_lane),
                    counters: CachePadded::new(LaneCounters::default()),
                })
            })
            .collect();
        Intake {
            mask: lanes.len() - 1,
            lanes,
            idle: CachePadded::new(AtomicBool::new(false)),
            writer: OnceLock::new(),
        }
    }

    /// Tells the intake which thread to wake.
    pub(crate) fn set_writer(&self, thread: Thread) {
        let _ = self.writer.set(thread);
    }

    /// The calling thread's lane (`None` never happens: the index is masked to the lane count).
    #[inline]
    pub(crate) fn lane(&self) -> Option<&Lane> {
        let i = LANE.try_with(|l| *l).unwrap_or(0) & self.mask;
        self.lanes.get(i).map(|l| &**l)
    }

    /// Every lane.
    pub(crate) fn lanes(&self) -> &[CachePadded<Lane>] {
        &self.lanes
    }

    /// Wakes the writer if it said it is about to sleep.
    #[inline]
    pub(crate) fn nudge(&self) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Wakes the writer unconditionally (flush, shutdown, a blocked recorder).
    pub(crate) fn wake(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Called by the writer before it parks: announces it and re-checks. Returns `true` when it may
    /// park (every lane is still empty).
    pub(crate) fn prepare_to_park(&self) -> bool {
        self.idle.store(true, Ordering::SeqCst);
        let empty = self.is_empty();
        if !empty {
            self.idle.store(false, Ordering::Relaxed);
        }
        empty
    }

    /// Called by the writer after it wakes.
    pub(crate) fn unparked(&self) {
        self.idle.store(false, Ordering::Relaxed);
    }

    /// `true` when no lane holds a record.
    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.queue.is_empty())
    }

    /// Records queued now, over every lane.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lanes.iter().map(|l| l.queue.len()).sum()
    }

    /// Moves up to `max` records into `out`, taking from every lane in turn starting at `start`.
    /// Returns how many were moved.
    pub(crate) fn drain_into(&self, out: &mut Vec<AuditRecord>, max: usize, start: usize) -> usize {
        let n = self.lanes.len();
        let before = out.len();
        let mut progress = true;
        while progress && out.len() - before < max {
            progress = false;
            for k in 0..n {
                let Some(lane) = self.lanes.get((start + k) & self.mask) else {
                    continue;
                };
                // Take a run from each lane (keeps each lane's records together, cheap pops).
                let room = max - (out.len() - before);
                let take = room.div_ceil(n).max(1).min(room);
                for _ in 0..take {
                    match lane.queue.pop() {
                        Some(r) => {
                            out.push(r);
                            progress = true;
                        }
                        None => break,
                    }
                }
                if out.len() - before >= max {
                    break;
                }
            }
        }
        out.len() - before
    }

    /// Takes the drops not yet covered by a gap record from every lane. `now_ms` bounds the time
    /// range of a drop whose time an earlier gap record already absorbed (a drop racing the take:
    /// its count lands here, its time may have gone into the previous range).
    pub(crate) fn take_pending_drops(&self, now_ms: u64) -> PendingDrops {
        let mut p = PendingDrops {
            count: 0,
            first_ms: u64::MAX,
            last_ms: 0,
        };
        for lane in self.lanes.iter() {
            let c = &lane.counters;
            let count = c.pending_drops.swap(0, Ordering::AcqRel);
            if count == 0 {
                continue;
            }
            // A drop publishes its times before its count, so this range covers every drop counted.
            let first = c.first_drop_ms.swap(u64::MAX, Ordering::AcqRel);
            let last = c.last_drop_ms.swap(0, Ordering::AcqRel);
            p.count += count;
            p.first_ms = p.first_ms.min(first);
            p.last_ms = p.last_ms.max(last);
        }
        if p.count > 0 {
            if p.first_ms == u64::MAX {
                p.first_ms = now_ms.max(1);
            }
            if p.last_ms == 0 {
                p.last_ms = now_ms.max(p.first_ms);
            }
        } else {
            p.first_ms = 0;
        }
        p
    }

    /// `true` when no `record()` is between its `closed` check and its push.
    pub(crate) fn quiescent(&self) -> bool {
        self.lanes
            .iter()
            .all(|l| l.counters.in_flight.load(Ordering::SeqCst) == 0)
    }

    /// Sums a counter over every lane.
    pub(crate) fn sum(&self, f: impl Fn(&LaneCounters) -> &AtomicU64) -> u64 {
        self.lanes
            .iter()
            .map(|l| f(&l.counters).load(Ordering::Relaxed))
            .sum()
    }

    /// The deepest any lane has been (sampled).
    pub(crate) fn max_depth(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.counters.max_depth.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

impl Lane {
    /// Counts a record dropped at `time_ms` under `DropWithMarker`.
    #[inline]
    pub(crate) fn count_drop(&self, time_ms: u64) {
        let c = &self.counters;
        c.dropped.fetch_add(1, Ordering::Relaxed);
        c.first_drop_ms.fetch_min(time_ms.max(1), Ordering::AcqRel);
        c.last_drop_ms.fetch_max(time_ms.max(1), Ordering::AcqRel);
        // Last, so the writer never sees a count without its time range.
        c.pending_drops.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts an accepted record; samples the lane's depth every 64th.
    #[inline]
    pub(crate) fn count_enqueued(&self) {
        let c = &self.counters;
        if c.enqueued
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(64)
        {
            c.max_depth
                .fetch_max(self.queue.len() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;

    fn rec(i: u64) -> AuditRecord {
        let mut r = AuditRecord::new("test", Outcome::Allowed);
        r.policy_epoch = i;
        r
    }

    #[test]
    fn capacity_is_split_across_lanes() {
        let intake = Intake::with_lanes(10, 3);
        assert_eq!(intake.lanes().len(), 4);
        assert!(intake.lanes().iter().all(|l| l.queue.capacity() == 3));
        let tiny = Intake::with_lanes(1, 4);
        assert!(tiny.lanes().iter().all(|l| l.queue.capacity() == 1));
    }

    #[test]
    fn one_thread_keeps_its_order_and_drain_respects_max() {
        let intake = Intake::with_lanes(128, 4);
        for i in 0..20 {
            intake.lane().unwrap().queue.push(rec(i)).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(intake.drain_into(&mut out, 7, 0), 7);
        assert_eq!(intake.drain_into(&mut out, 100, 1), 13);
        let epochs: Vec<u64> = out.iter().map(|r| r.policy_epoch).collect();
        assert_eq!(epochs, (0..20).collect::<Vec<_>>());
        assert!(intake.is_empty());
    }

    #[test]
    fn threads_spread_over_lanes_and_nothing_is_lost() {
        let intake = std::sync::Arc::new(Intake::with_lanes(4096, 4));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let intake = intake.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let lane = intake.lane().unwrap();
                        lane.queue.push(rec(t * 1000 + i)).unwrap();
                        lane.count_enqueued();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(intake.len(), 2000);
        assert_eq!(intake.sum(|c| &c.enqueued), 2000);
        let mut out = Vec::new();
        let mut start = 0;
        while intake.drain_into(&mut out, 333, start) > 0 {
            start += 1;
        }
        assert_eq!(out.len(), 2000);
        // Per thread, records come out in the order they went in.
        for t in 0..4u64 {
            let mine: Vec<u64> = out
                .iter()
                .map(|r| r.policy_epoch)
                .filter(|e| e / 1000 == t)
                .collect();
            assert_eq!(mine, (0..500).map(|i| t * 1000 + i).collect::<Vec<_>>());
        }
    }

    #[test]
    fn drops_are_summed_with_their_time_range() {
        let intake = Intake::with_lanes(4, 2);
        intake.lane().unwrap().count_drop(50);
        intake.lane().unwrap().count_drop(20);
        intake.lane().unwrap().count_drop(70);
        let p = intake.take_pending_drops(99);
        assert_eq!(
            p,
            PendingDrops {
                count: 3,
                first_ms: 20,
                last_ms: 70
            }
        );
        assert_eq!(intake.take_pending_drops(99).count, 0);
        // A count whose time went into an earlier range is bounded by `now`.
        intake
            .lane()
            .unwrap()
            .counters
            .pending_drops
            .fetch_add(1, Ordering::AcqRel);
        let p = intake.take_pending_drops(99);
        assert_eq!((p.count, p.first_ms, p.last_ms), (1, 99, 99));
        assert_eq!(intake.sum(|c| &c.dropped), 3);
    }
}

//! The simulator's queue of timed events: a calendar of one-millisecond buckets over the next
//! ~65 simulated seconds, and a heap for what lies beyond.
//!
//! Events pop in the order of their time, and those of one time in the order they were
//! queued, exactly as a binary heap on (time, sequence) pops them; each run is the same event
//! for event. What it saves is the heap's cost at scale: most events (wake-ups, fetch
//! completions, have answers) fall within a few seconds, so each lands in its bucket in O(1),
//! and a bucket of a few dozen events is sorted when the clock reaches it, within the cache,
//! instead of every pop sifting through a heap of hundreds of thousands.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Microseconds of simulated time.
type Us = u64;

/// Width of a bucket.
const BUCKET: Us = 1_000;
/// Buckets in the ring: 65.5 s of simulated time ahead of the clock.
const RING: u64 = 1 << 16;

/// An event at its time, and its place among those of the same time.
struct Item<E> {
    at: Us,
    seq: u64,
    ev: E,
}

impl<E> Item<E> {
    const fn key(&self) -> (Us, u64) {
        (self.at, self.seq)
    }
}

/// Beyond the ring: a min-heap on (time, sequence).
struct Far<E>(Item<E>);

impl<E> PartialEq for Far<E> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl<E> Eq for Far<E> {}

impl<E> PartialOrd for Far<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Far<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key().cmp(&other.0.key())
    }
}

/// The queue (see the module's docs).
pub(crate) struct Queue<E> {
    seq: u64,
    /// The bucket the clock is in.
    bucket: u64,
    /// The current bucket's events, latest first (popped from the end).
    current: Vec<Item<E>>,
    /// Buckets `bucket + 1 ..= bucket + RING - 1`, each at `index % RING`, unsorted.
    ring: Vec<Vec<Item<E>>>,
    /// Events in `ring`.
    in_ring: usize,
    far: BinaryHeap<Reverse<Far<E>>>,
}

impl<E> Queue<E> {
    pub(crate) fn new() -> Self {
        Self {
            seq: 0,
            bucket: 0,
            current: Vec::new(),
            ring: (0..RING).map(|_| Vec::new()).collect(),
            in_ring: 0,
            far: BinaryHeap::new(),
        }
    }

    /// Queues `ev` at `at`.
    pub(crate) fn push(&mut self, at: Us, ev: E) {
        self.seq += 1;
        let item = Item { at, seq: self.seq, ev };
        let b = at / BUCKET;
        if b <= self.bucket {
            // Latest first: its place is after every later one.
            let key = item.key();
            let i = self.current.partition_point(|x| x.key() > key);
            self.current.insert(i, item);
        } else if b - self.bucket < RING {
            self.ring[(b % RING) as usize].push(item);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(Far(item)));
        }
    }

    /// The earliest event, with its time.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<(Us, E)> {
        loop {
            if let Some(item) = self.current.pop() {
                return Some((item.at, item.ev));
            }
            self.advance()?;
        }
    }

    /// The earliest event, with its time, if it is before `end`.
    pub(crate) fn pop_before(&mut self, end: Us) -> Option<(Us, E)> {
        loop {
            if let Some(item) = self.current.last() {
                if item.at >= end {
                    return None;
                }
                return self.current.pop().map(|item| (item.at, item.ev));
            }
            self.advance()?;
        }
    }

    /// The time of the earliest event, if any.
    pub(crate) fn next_at(&mut self) -> Option<Us> {
        loop {
            if let Some(item) = self.current.last() {
                return Some(item.at);
            }
            self.advance()?;
        }
    }

    /// Moves the clock to the next bucket that holds anything; `None` when nothing is left.
    fn advance(&mut self) -> Option<()> {
        let next_far = self.far.peek().map(|Reverse(Far(i))| i.at / BUCKET);
        if self.in_ring == 0 {
            // Nothing within the ring: straight to the first far event's bucket.
            self.bucket = next_far?;
        } else {
            self.bucket += 1;
            // Taken whole, leaving the slot without memory: a bucket's room is kept only
            // while it is in use, not 65 536 times over.
            let slot = &mut self.ring[(self.bucket % RING) as usize];
            self.in_ring -= slot.len();
            self.current = std::mem::take(slot);
        }
        while let Some(Reverse(Far(i))) = self.far.peek()
            && i.at / BUCKET <= self.bucket
        {
            if let Some(Reverse(Far(item))) = self.far.pop() {
                self.current.push(item);
            }
        }
        self.current.sort_unstable_by_key(|i| Reverse(i.key()));
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pops in (time, order queued) whatever the mix of near, far and same-time events, and
    /// events queued while popping land in their place; `next_at` tells the earliest, and
    /// `pop_before` pops it only before its bound.
    #[test]
    fn pops_in_time_then_queue_order_like_a_heap() {
        let mut q = Queue::new();
        let mut reference = BinaryHeap::new();
        let mut seq = 0u64;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut draw = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut now = 0;
        let mut popped = Vec::new();
        let mut expected = Vec::new();
        for round in 0..20_000u64 {
            // Near (same bucket, same time), mid (within the ring) and far (beyond it).
            let at = match draw(4) {
                0 => now,
                1 => now + draw(2_000),
                2 => now + draw(70_000_000),
                _ => now + draw(300_000_000),
            };
            seq += 1;
            q.push(at, round);
            reference.push(Reverse((at, seq, round)));
            if draw(3) == 0 {
                let next = q.next_at().unwrap();
                assert!(q.pop_before(next).is_none(), "nothing before the earliest");
                let (t, ev) = if draw(2) == 0 { q.pop().unwrap() } else { q.pop_before(next + 1).unwrap() };
                assert_eq!(t, next);
                let Reverse((rt, _, rev)) = reference.pop().unwrap();
                now = t;
                popped.push((t, ev));
                expected.push((rt, rev));
            }
        }
        while let Some((t, ev)) = q.pop() {
            popped.push((t, ev));
        }
        while let Some(Reverse((rt, _, rev))) = reference.pop() {
            expected.push((rt, rev));
        }
        assert_eq!(popped.len(), 20_000);
        assert_eq!(popped, expected);
    }
}

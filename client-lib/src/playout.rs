//! Playout: what a track's driver has verified and what it hands over next, in play order.
//!
//! Public so that the network simulator (`chorus-sim`) drives the very code a client runs.
//!
//! Plain state, free of I/O: the driver feeds it verified segments as they arrive (in any
//! order, some twice when a hedge's loser answers too) and takes them out strictly in order.
//! It decides when a rendition's init chunk goes with a segment (the first segment, after a
//! seek, and at switches when the handle re-initialises its decoder), counts the edge attempts
//! per segment against the give-up limit, and knows when the end has been reached. A seek
//! starts a new generation: answers from before it are recognised as stale and dropped.

use std::collections::BTreeMap;

/// A segment ready to be handed over.
#[derive(Debug, PartialEq, Eq)]
pub struct Out<T> {
    /// Its index.
    pub index: usize,
    /// The rung (index into the handle's renditions) it was fetched in.
    pub rung: usize,
    /// Whether the rung's init chunk goes with it.
    pub with_init: bool,
    /// What the driver stored with it (bytes and source).
    pub payload: T,
}

/// Playout state of one track handle.
#[derive(Debug)]
pub struct Playout<T> {
    /// Segments at or beyond this are never fetched (a preload's end, else the track's).
    end: usize,
    next_out: usize,
    /// Verified segments not yet handed over: index → (rung, payload).
    done: BTreeMap<usize, (usize, T)>,
    /// Segments verified in this generation (a hedge's loser may still answer).
    have: Vec<bool>,
    /// Edge attempts per segment, and the limit past which the track gives up.
    attempts: Vec<u32>,
    max_attempts: u32,
    last_rung: Option<usize>,
    init_on_switch: bool,
    generation: u64,
    end_sent: bool,
}

impl<T> Playout<T> {
    /// Playout of `end` segments; a segment gives up after `max_attempts` edge attempts;
    /// `init_on_switch`: hand over the init chunk at every rendition switch (not needed within
    /// one decoder configuration, where it would only repeat the `moov` in the byte stream).
    pub fn new(end: usize, max_attempts: u32, init_on_switch: bool) -> Self {
        Self {
            end,
            next_out: 0,
            done: BTreeMap::new(),
            have: vec![false; end],
            attempts: vec![0; end],
            max_attempts,
            last_rung: None,
            init_on_switch,
            generation: 0,
            end_sent: false,
        }
    }

    /// The current generation (bumped by each seek).
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// The index of the next segment to hand over.
    #[cfg(test)]
    pub const fn next_out(&self) -> usize {
        self.next_out
    }

    /// Whether segments remain to be handed over.
    pub const fn playing(&self) -> bool {
        self.next_out < self.end
    }

    /// The first segment not to fetch yet: at most `read_ahead` beyond the one waiting.
    pub fn fetch_limit(&self, read_ahead: usize) -> usize {
        (self.next_out + read_ahead).min(self.end)
    }

    /// Counts a request for `segment`; only edge requests count toward giving up (a peer that
    /// is busy, gone or lying costs a retry, and the edge is always there after it). Returns
    /// false once the segment is past its limit: the track then fails.
    pub fn attempt(&mut self, segment: usize, from_edge: bool) -> bool {
        let Some(n) = self.attempts.get_mut(segment) else { return true };
        if from_edge {
            *n += 1;
        }
        *n <= self.max_attempts
    }

    /// Whether an answer for `segment` sent in `generation` is still wanted: not from before a
    /// seek, and not a second copy of a segment already verified.
    pub fn wanted(&self, generation: u64, segment: usize) -> bool {
        generation == self.generation && !self.have.get(segment).copied().unwrap_or(true)
    }

    /// `segment` arrived verified in `rung`.
    pub fn completed(&mut self, segment: usize, rung: usize, payload: T) {
        if let Some(h) = self.have.get_mut(segment) {
            *h = true;
        }
        if segment >= self.next_out {
            self.done.insert(segment, (rung, payload));
        }
    }

    /// Whether the next segment is here to be handed over.
    pub fn deliverable(&self) -> bool {
        self.done.contains_key(&self.next_out)
    }

    /// Takes the next segment out, if it is here.
    pub fn take(&mut self) -> Option<Out<T>> {
        let (rung, payload) = self.done.remove(&self.next_out)?;
        let with_init = match self.last_rung {
            None => true,
            Some(last) => last != rung && self.init_on_switch,
        };
        self.last_rung = Some(rung);
        let index = self.next_out;
        self.next_out += 1;
        Some(Out { index, rung, with_init, payload })
    }

    /// Whether the end was just reached: everything handed over, the end not yet announced.
    /// [`Playout::end_sent`] records that it has been.
    pub fn at_end(&self) -> bool {
        self.next_out >= self.end && !self.end_sent && self.done.is_empty()
    }

    /// The end has been announced to the handle.
    pub fn end_sent(&mut self) {
        self.end_sent = true;
    }

    /// Continues from `segment` in a new `generation`: nothing verified so far is kept, the
    /// next segment goes with its init chunk, attempts start from zero.
    pub fn seek(&mut self, generation: u64, segment: usize) {
        self.generation = generation;
        self.done.clear();
        self.next_out = segment.min(self.end);
        self.last_rung = None;
        self.attempts.iter_mut().for_each(|a| *a = 0);
        self.have.iter_mut().for_each(|h| *h = false);
        self.end_sent = false;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::abr::Quality;
    use crate::scheduler::{Action, Scheduler, SchedulerConfig, SegmentInfo, SourceId};

    #[test]
    fn segments_go_out_in_order_once_with_init_at_start_and_switches() {
        let mut p: Playout<&str> = Playout::new(4, 8, true);
        p.completed(1, 0, "s1");
        assert!(!p.deliverable(), "segment 1 must wait for 0");
        p.completed(0, 0, "s0");
        assert!(!p.wanted(0, 0), "a hedge's second copy is not wanted");
        assert_eq!(p.take(), Some(Out { index: 0, rung: 0, with_init: true, payload: "s0" }));
        assert_eq!(p.take(), Some(Out { index: 1, rung: 0, with_init: false, payload: "s1" }));
        assert_eq!(p.take(), None);
        p.completed(2, 1, "s2");
        assert!(p.take().is_some_and(|o| o.with_init), "a switch re-initialises");
        p.completed(3, 1, "s3");
        assert!(!p.at_end());
        assert!(p.take().is_some_and(|o| !o.with_init));
        assert!(p.at_end());
        p.end_sent();
        assert!(!p.at_end(), "the end is announced once");
    }

    #[test]
    fn one_decoder_sends_init_only_first() {
        let mut p: Playout<()> = Playout::new(2, 8, false);
        p.completed(0, 0, ());
        p.completed(1, 2, ());
        assert!(p.take().is_some_and(|o| o.with_init));
        assert!(p.take().is_some_and(|o| !o.with_init));
    }

    #[test]
    fn a_seek_drops_what_came_before_and_restarts_the_count() {
        let mut p: Playout<u8> = Playout::new(10, 2, true);
        assert!(p.attempt(5, true) && p.attempt(5, true));
        assert!(p.attempt(5, false), "peer attempts do not count");
        assert!(!p.attempt(5, true), "the third edge attempt is past the limit");
        p.completed(0, 0, 0);
        p.completed(3, 0, 3);
        p.seek(1, 3);
        assert!(!p.wanted(0, 4), "an answer from before the seek is stale");
        assert!(p.wanted(1, 3));
        assert!(!p.deliverable(), "segment 3 from before the seek was dropped");
        assert!(p.attempt(5, true));
        p.completed(3, 1, 33);
        assert_eq!(p.take(), Some(Out { index: 3, rung: 1, with_init: true, payload: 33 }));
        assert_eq!(p.fetch_limit(4), 8);
        p.seek(2, 99);
        assert_eq!(p.next_out(), 10, "a seek past the end ends");
        assert!(p.at_end() && !p.playing());
    }

    /// The driver loop on a virtual clock: the scheduler decides, every request takes 40 ms
    /// (the startup race's loser 90 ms), answers arrive out of order, and playout hands every
    /// segment over once, in order, within the read-ahead bound.
    #[test]
    fn with_the_scheduler_on_a_virtual_clock_every_segment_goes_out_once_in_order() {
        let t0 = Instant::now();
        let segments: Vec<SegmentInfo> =
            (0..12).map(|_| SegmentInfo { duration: Duration::from_secs(2), sizes: vec![4_000, 16_000] }).collect();
        let cfg = SchedulerConfig { quality: Quality::Auto { cap: 1 }, ..SchedulerConfig::default() };
        let mut sched = Scheduler::new(cfg, vec![16_000, 64_000], segments, 2, t0);
        let mut p: Playout<(usize, SourceId)> = Playout::new(12, 16, true);
        let read_ahead = 3;
        // (arrival time, segment, rung, source) of requests in flight.
        let mut flight: Vec<(Instant, usize, usize, SourceId)> = Vec::new();
        let mut now = t0;
        let mut out = Vec::new();
        let mut fetched_beyond_bound = false;
        for _ in 0..10_000 {
            sched.set_limit(p.fetch_limit(read_ahead));
            for a in sched.poll(now) {
                match a {
                    Action::Fetch { segment, rendition, source, .. } => {
                        assert!(p.attempt(segment, true));
                        fetched_beyond_bound |= segment >= p.next_out() + read_ahead;
                        let took = if source.0 == 1 && segment == 0 { 90 } else { 40 };
                        flight.push((now + Duration::from_millis(took), segment, rendition, source));
                    }
                    Action::Cancel { segment, source } => flight.retain(|f| (f.1, f.3) != (segment, source)),
                }
            }
            // The reader takes whatever is ready at once.
            while let Some(o) = p.take() {
                out.push(o.index);
            }
            if p.at_end() {
                p.end_sent();
                break;
            }
            // Advance the clock to the next arrival or scheduler wakeup.
            flight.sort_by_key(|f| std::cmp::Reverse(f.0));
            let wake = sched.next_wakeup(now);
            match (flight.last().map(|f| f.0), wake) {
                (Some(a), Some(w)) if w < a => now = w,
                (Some(_), _) => {
                    let (at, segment, rung, source) = flight.pop().unwrap();
                    now = at;
                    if p.wanted(p.generation(), segment) {
                        let cancels = sched.on_complete(now, segment, source, 4_000, Duration::from_millis(40));
                        for c in cancels {
                            if let Action::Cancel { segment, source } = c {
                                flight.retain(|f| (f.1, f.3) != (segment, source));
                            }
                        }
                        p.completed(segment, rung, (segment, source));
                    }
                }
                (None, Some(w)) => now = w.max(now + Duration::from_millis(1)),
                (None, None) => now += Duration::from_millis(100),
            }
        }
        assert_eq!(out, (0..12).collect::<Vec<_>>());
        assert!(!fetched_beyond_bound, "a request went past the read-ahead bound");
        assert_eq!(sched.stats().stalls, 0);
    }
}

//! What crosses the network between a listener and the hub (the edges and trackers) or
//! another listener: every interaction between two of them is a message that arrives later,
//! after its share of their round trip.
//!
//! That is what lets a run use several cores (`par.rs`): each partition of listeners, and the
//! hub, runs alone through a window of simulated time no longer than the shortest one-way
//! delay, since nothing sent within it can arrive within it. Messages are delivered between
//! windows in an order that does not depend on how listeners are partitioned ([`canonical`]),
//! so a run is the same on any number of threads.

use crate::Us;

/// The sender id of the hub (listeners are `0..listeners`).
pub(crate) const HUB: u32 = u32::MAX;

/// A message and when it arrives.
#[derive(Debug)]
pub(crate) struct Mail {
    pub(crate) at: Us,
    /// Who sent it: a listener, or [`HUB`].
    pub(crate) from: u32,
    pub(crate) msg: Msg,
}

/// What a peer holds of a track, in a have answer.
#[derive(Debug)]
pub(crate) enum Held {
    /// Nothing.
    None,
    /// Every segment, at rung `r - 1` (a track held from before the run).
    Whole(u8),
    /// Per segment, the rung + 1 (0: not held).
    Some(Vec<u8>),
}

impl Held {
    /// Calls `f(segment, rung)` for each segment held of a track of `n` segments.
    pub(crate) fn each(&self, n: usize, mut f: impl FnMut(usize, usize)) {
        match self {
            Self::None => {}
            Self::Whole(r) => (0..n).for_each(|k| f(k, usize::from(r.saturating_sub(1)))),
            Self::Some(h) => {
                for (k, r) in h.iter().enumerate().take(n) {
                    if *r > 0 {
                        f(k, usize::from(*r - 1));
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
pub(crate) enum Msg {
    /// To the hub: `l` asks its edge for a segment of `track`, sent at `sent`.
    EdgeGet { l: u32, edge: u32, fetch: u64, track: u32, segment: u16, rung: u8, sent: Us },
    /// To the hub: `l` asks the tracker for peers of `track` for its play `p`.
    Query { l: u32, p: u64, track: u32, sent: Us },
    /// To the hub: `l` announces; `reply`: it waits for which held tracks went unlisted.
    Announce { l: u32, version: u64, tracks: Vec<u32>, held: Vec<u32>, dropped: Vec<u32>, reply: bool, sent: Us },
    /// To `l`: the edge's answer to its fetch.
    Fetched { l: u32, fetch: u64 },
    /// To `l`: the tracker's answer for play `p`.
    Listed { l: u32, p: u64, peers: Vec<u32> },
    /// To `l`: its announce was taken (the held tracks left unlisted), or refused (`None`).
    Taken { l: u32, unlisted: Option<Vec<u32>> },
    /// To `u`: `l` (having dialled it, if `dialled`) asks what it holds of `track`, answered at
    /// `answer_at`; `join`: the answer is in time for `l`'s search.
    Have { u: u32, l: u32, p: u64, track: u32, dialled: bool, join: bool, answer_at: Us },
    /// To `l`: `u`'s answer (`online`: whether there was anyone to answer).
    Holds { l: u32, p: u64, u: u32, online: bool, dialled: bool, join: bool, held: Held },
    /// To `u`: `l` asks for `size` bytes (its fetch `fetch`), sent at `sent`.
    Request { u: u32, l: u32, fetch: u64, size: u64, sent: Us },
    /// To `l`: `u` served its fetch, or refused or failed it.
    Served { l: u32, fetch: u64, ok: bool },
    /// To `u`: `l` no longer wants its fetch `fetch`.
    Cancel { u: u32, l: u32, fetch: u64 },
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum To {
    Hub,
    Listener(u32),
}

impl Msg {
    pub(crate) const fn to(&self) -> To {
        match self {
            Self::EdgeGet { .. } | Self::Query { .. } | Self::Announce { .. } => To::Hub,
            Self::Fetched { l, .. }
            | Self::Listed { l, .. }
            | Self::Taken { l, .. }
            | Self::Holds { l, .. }
            | Self::Served { l, .. } => To::Listener(*l),
            Self::Have { u, .. } | Self::Request { u, .. } | Self::Cancel { u, .. } => To::Listener(*u),
        }
    }
}

/// Puts mail for one partition (gathered from every partition, in any order) in the order it
/// is delivered: by arrival, then sender; one sender's mail of one time stays in the order it
/// was sent (the sort is stable, and a sender's mail comes from one partition, in order).
pub(crate) fn canonical(mail: &mut [Mail]) {
    mail.sort_by_key(|m| (m.at, m.from));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_order_does_not_depend_on_the_order_mail_was_gathered() {
        let mail = |at, from, fetch| Mail { at, from, msg: Msg::Fetched { l: 0, fetch } };
        // Two partitions' outboxes: sender 3's two mails of time 10 in the order sent.
        let a = || vec![mail(10, 3, 1), mail(10, 3, 2), mail(5, 3, 3)];
        let b = || vec![mail(10, 1, 4), mail(5, HUB, 5)];
        let order = |mut m: Vec<Mail>| {
            canonical(&mut m);
            m.iter().map(|m| if let Msg::Fetched { fetch, .. } = m.msg { fetch } else { 0 }).collect::<Vec<_>>()
        };
        let ab = order(a().into_iter().chain(b()).collect());
        let ba = order(b().into_iter().chain(a()).collect());
        assert_eq!(ab, vec![3, 5, 4, 1, 2]);
        assert_eq!(ab, ba);
    }
}

//! A set of (segment, rendition) pairs as one bitmap per rendition: what a peer holds, what the
//! local cache holds. The scheduler asks "does it hold segment `i` in rendition `r`" for every
//! source and segment each time it plans, so this is a bit test, not a hash.

/// (segment, rendition) pairs, segments below `segments` and renditions below `renditions`
/// (others are ignored: they name nothing of this track).
#[derive(Debug, Clone)]
pub(super) struct Pairs {
    segments: usize,
    renditions: usize,
    /// One bitmap per rendition, one after the other (`segments.div_ceil(64)` words each);
    /// allocated when the first pair is inserted.
    bits: Vec<u64>,
}

impl Pairs {
    pub(super) const fn new(segments: usize, renditions: usize) -> Self {
        Self { segments, renditions, bits: Vec::new() }
    }

    const fn words(&self) -> usize {
        self.segments.div_ceil(64)
    }

    /// Adds `(segment, rendition)`; false when it is out of range (and ignored).
    pub(super) fn insert(&mut self, segment: usize, rendition: usize) -> bool {
        if segment >= self.segments || rendition >= self.renditions {
            return false;
        }
        if self.bits.is_empty() {
            self.bits.resize(self.words() * self.renditions, 0);
        }
        let w = rendition * self.words() + segment / 64;
        self.bits[w] |= 1 << (segment % 64);
        true
    }

    pub(super) fn contains(&self, segment: usize, rendition: usize) -> bool {
        segment < self.segments
            && rendition < self.renditions
            && self.bits.get(rendition * self.words() + segment / 64).is_some_and(|w| w & (1 << (segment % 64)) != 0)
    }

    /// The segments for which `f` says true, as a bitmap for [`Pairs::holds_any`].
    pub(super) fn segments_where(segments: usize, f: impl Fn(usize) -> bool) -> Vec<u64> {
        let mut bits = vec![0u64; segments.div_ceil(64)];
        for i in (0..segments).filter(|&i| f(i)) {
            bits[i / 64] |= 1 << (i % 64);
        }
        bits
    }

    /// Whether a segment of `segments` (from [`Pairs::segments_where`]) is held in some
    /// rendition.
    pub(super) fn holds_any(&self, segments: &[u64]) -> bool {
        let words = self.words().max(1);
        self.bits.chunks(words).any(|bitmap| bitmap.iter().zip(segments).any(|(w, s)| w & s != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_in_range_are_kept_and_found() {
        let mut p = Pairs::new(130, 2);
        assert!(!p.contains(0, 0));
        assert!(p.insert(0, 0) && p.insert(129, 1) && p.insert(64, 1));
        assert!(p.contains(0, 0) && p.contains(129, 1) && p.contains(64, 1));
        assert!(!p.contains(0, 1) && !p.contains(129, 0) && !p.contains(65, 1));
        // Out of range: ignored, whatever a peer claims.
        assert!(!p.insert(130, 0) && !p.insert(usize::MAX, 0) && !p.insert(0, 2));
        assert!(!p.contains(130, 0) && !p.contains(usize::MAX, 1) && !p.contains(0, 9));
        let only = |k: usize| Pairs::segments_where(130, move |i| i == k);
        assert!(p.holds_any(&only(129)) && p.holds_any(&only(64)) && p.holds_any(&only(0)));
        assert!(!p.holds_any(&only(1)) && !p.holds_any(&only(128)));
        assert!(!p.holds_any(&Pairs::segments_where(130, |_| false)));
        assert!(!Pairs::new(130, 2).holds_any(&Pairs::segments_where(130, |_| true)));
    }
}

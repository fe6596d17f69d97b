//! Values in flight by a small id that is reused once its value is taken: the simulator's
//! fetches, looked up at each answer. A vector indexed by id, not a hash map: one load, and
//! the ids of a run stay as few as the fetches in flight at once.

/// Values by id; an id is free again once its value is taken.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u64>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), free: Vec::new() }
    }
}

impl<T> Slab<T> {
    /// Stores `value`; returns its id.
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        if let Some(id) = self.free.pop()
            && let Some(slot) = usize::try_from(id).ok().and_then(|i| self.slots.get_mut(i))
        {
            *slot = Some(value);
            return id;
        }
        self.slots.push(Some(value));
        (self.slots.len() - 1) as u64
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.slots.get_mut(usize::try_from(id).ok()?)?.as_mut()
    }

    /// Takes the value of `id` out; the id is free for the next insert.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let value = self.slots.get_mut(usize::try_from(id).ok()?)?.take()?;
        self.free.push(id);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn ids_are_reused_only_once_taken() {
        let mut s = Slab::default();
        let (a, b) = (s.insert("a"), s.insert("b"));
        assert_ne!(a, b);
        assert_eq!(s.get_mut(a), Some(&mut "a"));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "taken twice");
        assert_eq!(s.get_mut(a), None);
        let c = s.insert("c");
        assert_eq!(c, a, "the free id is reused");
        assert_eq!(s.get_mut(b), Some(&mut "b"));
        assert_eq!(s.get_mut(99), None);
        assert_eq!(s.remove(99), None);
    }
}

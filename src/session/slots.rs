//! The per-document slots of one socket, as a small vector.
//!
//! A socket nearly always carries one or two documents, and a node holds tens of thousands of
//! sockets: a `HashMap` allocates room for four entries (~400 bytes) on the first insert, this
//! allocates exactly what is used. Lookups are linear, which for a handful of names is also
//! faster than hashing them.

use std::sync::Arc;

use super::Slot;

#[derive(Default)]
pub(super) struct Slots(Vec<(Arc<str>, Slot)>);

impl Slots {
    fn position(&self, address: &str) -> Option<usize> {
        self.0.iter().position(|(a, _)| &**a == address)
    }

    pub(super) fn get(&self, address: &str) -> Option<&Slot> {
        self.0.iter().find(|(a, _)| &**a == address).map(|(_, s)| s)
    }

    pub(super) fn get_mut(&mut self, address: &str) -> Option<&mut Slot> {
        self.0
            .iter_mut()
            .find(|(a, _)| &**a == address)
            .map(|(_, s)| s)
    }

    pub(super) fn get_key_value(&self, address: &str) -> Option<(&Arc<str>, &Slot)> {
        self.0
            .iter()
            .find(|(a, _)| &**a == address)
            .map(|(a, s)| (a, s))
    }

    pub(super) fn contains_key(&self, address: &str) -> bool {
        self.position(address).is_some()
    }

    /// Sets the slot of `address`, returning the one it replaces.
    pub(super) fn insert(&mut self, address: Arc<str>, slot: Slot) -> Option<Slot> {
        match self.position(&address) {
            Some(i) => Some(std::mem::replace(&mut self.0[i].1, slot)),
            None => {
                self.0.reserve_exact(1);
                self.0.push((address, slot));
                None
            }
        }
    }

    /// Adds a slot for an address that has none yet and returns it.
    pub(super) fn insert_new(&mut self, address: Arc<str>, slot: Slot) -> &mut Slot {
        self.insert(address, slot);
        let last = self.0.len() - 1;
        &mut self.0[last].1
    }

    pub(super) fn remove(&mut self, address: &str) -> Option<Slot> {
        let i = self.position(address)?;
        let (_, slot) = self.0.swap_remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new(); // give the memory back: the socket may idle for hours
        }
        Some(slot)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Slot> {
        self.0.iter().map(|(_, s)| s)
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, Slot)> + '_ {
        self.0.drain(..)
    }
}

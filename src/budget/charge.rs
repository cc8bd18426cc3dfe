//! A charge that lives as long as what it stands for.

use std::sync::Arc;

use super::{Holder, MemoryBudget};

/// Memory charged to one holder while this lives; its size can follow what it stands for.
pub struct Charge {
    budget: Arc<MemoryBudget>,
    holder: Holder,
    bytes: usize,
}

impl Charge {
    pub fn new(budget: &Arc<MemoryBudget>, holder: Holder) -> Self {
        Charge {
            budget: Arc::clone(budget),
            holder,
            bytes: 0,
        }
    }

    /// Makes the charge `bytes`, charging or releasing the difference.
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget.charge(self.holder, bytes - self.bytes);
        } else {
            self.budget.release(self.holder, self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.holder, self.bytes);
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({} {})", self.holder.as_str(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn a_charge_follows_its_size_and_goes_with_its_owner() {
        let budget = MemoryBudget::unmetered(100 * MIB);
        let mut charge = Charge::new(&budget, Holder::Awareness);
        charge.set(3 * MIB);
        charge.set(MIB);
        assert_eq!(budget.used_by(Holder::Awareness), MIB);
        drop(charge);
        assert_eq!(budget.used(), 0);
    }
}

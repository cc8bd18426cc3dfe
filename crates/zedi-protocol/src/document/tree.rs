//! The document as the firewall sees it: where the ids an update refers to already sit.

use std::collections::HashMap;

use yrs::{ClientID, ID, NestingLookup, Store};

use crate::firewall::{self, Placement, Tree};

/// The document as the firewall sees it: where ids an update refers to already sit.
pub(super) struct StoreTree<'a> {
    pub(super) store: &'a Store,
    pub(super) cap: u32,
    pub(super) cache: HashMap<usize, u32>,
}

impl Tree for StoreTree<'_> {
    fn placement(&mut self, id: firewall::Id) -> Placement {
        // The firewall only passes ids below 2^53, which `ClientID::new` represents exactly.
        let id = ID::new(ClientID::new(id.client), id.clock);
        match self.store.nesting_of(&id, self.cap, &mut self.cache) {
            NestingLookup::Missing => Placement::Missing,
            NestingLookup::Collected => Placement::Collected,
            NestingLookup::Item {
                parent_depth,
                is_type,
                is_deleted,
            } => Placement::Item {
                parent_depth,
                is_type,
                is_deleted,
            },
        }
    }
}

//! zedi-sync addition (not upstream): how deep an integrated block sits in the tree of nested
//! shared types.
//!
//! Some yrs code paths recurse once per nesting level (`to_json` still does; delete and GC did
//! until PATCHES.md #11), so a client that can nest types without bound can overflow a
//! thread's stack, which aborts the whole process. zedi-sync bounds nesting in its own validator *before* an
//! update reaches yrs; for items an update attaches to blocks that are already in the document it
//! needs the depth of those blocks, which only the store knows. This is that one read-only query.

use std::collections::HashMap;

use crate::block::{Block, ID};
use crate::branch::{Branch, BranchPtr};
use crate::store::Store;
use crate::types::TypePtr;

/// Where a block sits, as seen by a validator that must bound nesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestingLookup {
    /// No integrated block holds this id (it may be pending, never sent, or inside a Skip:
    /// the hole yrs leaves before a struct it integrated out of order).
    Missing,
    /// A garbage-collected range: whatever attaches to it is collected as well, so it adds no
    /// nesting.
    Collected,
    /// An integrated item. `parent_depth` counts the nested types above it (0 = directly inside
    /// a root type), capped at the `cap` given to the query; `is_type` tells whether the item
    /// itself is a shared type (so children of it sit at `parent_depth + 1`); `is_deleted`
    /// whether its content is gone (a deleted type's children are collected with it).
    Item {
        parent_depth: u32,
        is_type: bool,
        is_deleted: bool,
    },
}

impl Store {
    /// Looks up the block holding `id` and counts the nested types above it.
    ///
    /// Work is bounded: the walk stops at `cap` levels, and `cache` (keyed by branch address,
    /// valid for as long as the store is not mutated) lets a caller that asks about many ids of
    /// one update walk each branch once.
    pub fn nesting_of(&self, id: &ID, cap: u32, cache: &mut HashMap<usize, u32>) -> NestingLookup {
        let Some(block) = self.blocks.get_block(id) else {
            return NestingLookup::Missing;
        };
        match block.as_ref() {
            Block::GC(_) => NestingLookup::Collected,
            Block::Skip(_) => NestingLookup::Missing,
            Block::Item(item) => {
                let is_type = matches!(item.content, crate::block::ItemContent::Type(_));
                let is_deleted = matches!(item.content, crate::block::ItemContent::Deleted(_));
                let parent_depth = match &item.parent {
                    TypePtr::Branch(branch) => branch_depth(*branch, cap, cache),
                    // An integrated item always has a branch parent; anything else is treated as
                    // top level (it cannot be nested under anything this store knows).
                    _ => 0,
                };
                NestingLookup::Item {
                    parent_depth,
                    is_type,
                    is_deleted,
                }
            }
        }
    }
}

fn branch_key(branch: &Branch) -> usize {
    branch as *const Branch as usize
}

/// Depth of a branch: 0 for a root type, 1 + the depth of the branch holding its item otherwise,
/// saturating at `cap`. Iterative, so the query itself cannot recurse deeply.
fn branch_depth(start: BranchPtr, cap: u32, cache: &mut HashMap<usize, u32>) -> u32 {
    // Branches walked, from `start` upwards, whose depth is not known yet.
    let mut chain: Vec<usize> = Vec::new();
    let mut current = start;
    // Depth of the branch just above the last one in `chain`, when the walk met a known one.
    let above = loop {
        let key = branch_key(&current);
        if let Some(&known) = cache.get(&key) {
            break Some(known);
        }
        chain.push(key);
        if chain.len() as u64 > u64::from(cap) {
            for key in chain {
                cache.insert(key, cap);
            }
            return cap;
        }
        let parent = current.item.as_ref().and_then(|item| match &item.parent {
            TypePtr::Branch(parent) => Some(*parent),
            _ => None,
        });
        match parent {
            Some(parent) => current = parent,
            // `current` is a root type: the last entry of `chain`, at depth 0.
            None => break None,
        }
    };
    let mut walked = chain.iter().rev();
    let mut depth = match above {
        Some(known) => known,
        None => {
            if let Some(root) = walked.next() {
                cache.insert(*root, 0);
            }
            0
        }
    };
    for key in walked {
        depth = depth.saturating_add(1).min(cap);
        cache.insert(*key, depth);
    }
    depth
}

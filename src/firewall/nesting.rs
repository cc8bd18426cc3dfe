//! How deep each shared type of an update would sit once integrated, without recursion.
//!
//! A type item's depth is one more than the depth of the type it is placed in. Where that is
//! depends on references: an explicit parent id, or an origin whose item's parent is inherited.
//! Those references lead into the same update or into the document (asked through [`Tree`]).
//! Following them is a walk along chains, memoized, so the cost is linear in the update; a
//! chain that comes back to itself is a cycle no honest client can write.

use std::collections::HashMap;

use super::Refusal;
use super::structs::{Anchor, Id, ParsedUpdate, StructKind};

/// What the document knows about an id an update refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Not in the document (yet).
    Missing,
    /// In a garbage-collected range: whatever is placed relative to it is collected too.
    Collected,
    /// An integrated item, `parent_depth` types deep; `is_type` if it is a shared type itself.
    Item { parent_depth: u32, is_type: bool },
}

/// Read access to the document an update is about to be applied to.
pub trait Tree {
    fn placement(&mut self, id: Id) -> Placement;
}

/// A document with nothing in it (and the answer for updates checked on their own).
pub struct EmptyTree;

impl Tree for EmptyTree {
    fn placement(&mut self, _: Id) -> Placement {
        Placement::Missing
    }
}

/// How one item's parent depth is found.
enum Link {
    /// Known outright (`None`: the reference leads nowhere known).
    Known(Option<u32>),
    /// The parent depth of another item of this update, plus 0 or 1.
    Node(usize, u32),
}

struct Index<'a> {
    update: &'a ParsedUpdate,
    /// Client id → position in `update.clients`.
    clients: HashMap<u64, usize>,
    /// Flat node number of each client's first struct.
    first_node: Vec<usize>,
}

impl<'a> Index<'a> {
    fn new(update: &'a ParsedUpdate) -> Self {
        let mut clients = HashMap::with_capacity(update.clients.len());
        let mut first_node = Vec::with_capacity(update.clients.len());
        let mut next = 0;
        for (i, c) in update.clients.iter().enumerate() {
            clients.insert(c.client, i);
            first_node.push(next);
            next += c.structs.len();
        }
        Index {
            update,
            clients,
            first_node,
        }
    }

    /// The struct of this update holding `id`, as (flat node number, kind).
    fn find(&self, id: Id) -> Option<(usize, &'a StructKind)> {
        let &ci = self.clients.get(&id.client)?;
        let structs = &self.update.clients[ci].structs;
        // Structs are contiguous in clock order: the last one starting at or before the clock.
        let pos = structs.partition_point(|s| s.id.clock <= id.clock);
        let s = structs.get(pos.checked_sub(1)?)?;
        let end = u64::from(s.id.clock) + u64::from(s.len);
        (u64::from(id.clock) < end).then(|| (self.first_node[ci] + pos - 1, &s.kind))
    }
}

fn link(index: &Index<'_>, tree: &mut dyn Tree, anchor: &Anchor) -> Link {
    let (id, as_parent) = match anchor {
        Anchor::Root => return Link::Known(Some(0)),
        Anchor::Parent(id) => (*id, true),
        Anchor::Beside(id) => (*id, false),
    };
    // The document first: yrs skips re-sent structs it already has, so its copy is what counts.
    match tree.placement(id) {
        Placement::Item {
            parent_depth,
            is_type,
        } => {
            return Link::Known(Some(match (as_parent, is_type) {
                (false, _) => parent_depth,
                (true, true) => parent_depth.saturating_add(1),
                // Placed inside something that is not a type: yrs collects it.
                (true, false) => 0,
            }));
        }
        Placement::Collected => return Link::Known(Some(0)),
        Placement::Missing => {}
    }
    match index.find(id) {
        Some((node, StructKind::Item { is_type, .. })) => match (as_parent, is_type) {
            (false, _) => Link::Node(node, 0),
            (true, true) => Link::Node(node, 1),
            (true, false) => Link::Known(Some(0)),
        },
        Some((_, StructKind::Gc)) => Link::Known(Some(0)),
        Some((_, StructKind::Skip)) | None => Link::Known(None),
    }
}

/// Refuses an update whose shared types would nest deeper than `max_depth`, whose nested types
/// hang from parents that exist nowhere, or whose references form a cycle.
pub fn check_nesting(
    update: &ParsedUpdate,
    tree: &mut dyn Tree,
    max_depth: u32,
) -> Result<(), Refusal> {
    let index = Index::new(update);
    let nodes: Vec<&StructKind> = update
        .clients
        .iter()
        .flat_map(|c| c.structs.iter().map(|s| &s.kind))
        .collect();
    let mut resolved: Vec<Option<Option<u32>>> = vec![None; nodes.len()];
    let mut visiting = vec![false; nodes.len()];
    let mut path: Vec<(usize, u32)> = Vec::new();
    for start in 0..nodes.len() {
        if resolved[start].is_some() {
            continue;
        }
        path.clear();
        let mut current = start;
        let mut value = loop {
            if let Some(known) = resolved[current] {
                break known;
            }
            if visiting[current] {
                return Err(Refusal::CyclicReference);
            }
            visiting[current] = true;
            let anchor = match nodes[current] {
                StructKind::Item { anchor, .. } => anchor,
                // GC and skip structs have no parent; nothing refers to them as a parent chain.
                StructKind::Gc | StructKind::Skip => {
                    resolved[current] = Some(Some(0));
                    break Some(0);
                }
            };
            match link(&index, tree, anchor) {
                Link::Known(known) => {
                    resolved[current] = Some(known);
                    break known;
                }
                Link::Node(next, plus) => {
                    path.push((current, plus));
                    current = next;
                }
            }
        };
        for &(node, plus) in path.iter().rev() {
            value = value.map(|v| v.saturating_add(plus));
            resolved[node] = Some(value);
        }
    }
    for (node, kind) in nodes.iter().enumerate() {
        if let StructKind::Item { is_type: true, .. } = kind {
            match resolved[node].flatten() {
                None => return Err(Refusal::UnknownParent),
                Some(parent_depth) => {
                    let depth = u64::from(parent_depth) + 1;
                    if depth > u64::from(max_depth) {
                        return Err(Refusal::NestingTooDeep { at: 0, depth });
                    }
                }
            }
        }
    }
    Ok(())
}

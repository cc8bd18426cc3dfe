//! How deep each shared type of an update would sit once integrated, without recursion.
//!
//! A type item's depth is one more than the depth of the type it is placed in. Where that is
//! depends on references: an explicit parent id, or an origin whose item's parent is inherited.
//! Those references lead into the same update or into the document (asked through [`Tree`]).
//! Following them is a walk along chains, memoized, so the cost is linear in the update; a
//! chain that comes back to itself (a cycle no honest client writes) leads nowhere known.

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
    /// An integrated item, `parent_depth` types deep; `is_type` if it is a shared type itself,
    /// `is_deleted` if its content is gone.
    Item {
        parent_depth: u32,
        is_type: bool,
        is_deleted: bool,
    },
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

/// The structs of the update and of what the document holds pending, numbered as one list of
/// nodes (the update's first). The update is searched first: its structs are what yrs is
/// about to integrate.
struct Index<'a> {
    layers: Vec<&'a ParsedUpdate>,
    /// Per layer: client id → (position in that layer's `clients`, node number of its first
    /// struct).
    clients: Vec<HashMap<u64, (usize, usize)>>,
}

impl<'a> Index<'a> {
    fn new(layers: Vec<&'a ParsedUpdate>) -> Self {
        let mut next = 0;
        let clients = layers
            .iter()
            .map(|layer| {
                let mut map = HashMap::with_capacity(layer.clients.len());
                for (i, c) in layer.clients.iter().enumerate() {
                    map.insert(c.client, (i, next));
                    next += c.structs.len();
                }
                map
            })
            .collect();
        Index { layers, clients }
    }

    fn nodes(&self) -> Vec<&'a StructKind> {
        self.layers
            .iter()
            .flat_map(|layer| layer.clients.iter())
            .flat_map(|c| c.structs.iter().map(|s| &s.kind))
            .collect()
    }

    /// The struct holding `id`, as (node number, kind).
    fn find(&self, id: Id) -> Option<(usize, &'a StructKind)> {
        self.layers
            .iter()
            .zip(&self.clients)
            .find_map(|(layer, clients)| {
                let &(ci, first) = clients.get(&id.client)?;
                let structs = &layer.clients[ci].structs;
                // Contiguous in clock order: the last struct starting at or before the clock.
                let pos = structs.partition_point(|s| s.id.clock <= id.clock);
                let s = structs.get(pos.checked_sub(1)?)?;
                let end = u64::from(s.id.clock) + u64::from(s.len);
                (u64::from(id.clock) < end).then(|| (first + pos - 1, &s.kind))
            })
    }
}

fn link(index: &Index<'_>, tree: &mut dyn Tree, anchor: &Anchor) -> Result<Link, Refusal> {
    let (id, as_parent) = match anchor {
        Anchor::Root => return Ok(Link::Known(Some(0))),
        Anchor::Parent(id) => (*id, true),
        Anchor::Beside(id) => (*id, false),
    };
    // The document first: yrs skips re-sent structs it already has, so its copy is what counts.
    match tree.placement(id) {
        Placement::Item {
            parent_depth,
            is_type,
            is_deleted,
        } => {
            return match (as_parent, is_type, is_deleted) {
                (false, _, _) => Ok(Link::Known(Some(parent_depth))),
                (true, true, _) => Ok(Link::Known(Some(parent_depth.saturating_add(1)))),
                // Inside a deleted type: collected with it.
                (true, false, true) => Ok(Link::Known(Some(0))),
                (true, false, false) => Err(Refusal::ParentNotAType),
            };
        }
        Placement::Collected => return Ok(Link::Known(Some(0))),
        Placement::Missing => {}
    }
    Ok(match index.find(id) {
        Some((
            node,
            StructKind::Item {
                is_type,
                is_deleted,
                ..
            },
        )) => match (as_parent, is_type, is_deleted) {
            (false, _, _) => Link::Node(node, 0),
            (true, true, _) => Link::Node(node, 1),
            (true, false, true) => Link::Known(Some(0)),
            // Neither Yjs nor yrs can place an item inside plain content: yrs refuses to
            // decode the document's encoding afterwards, and Yjs throws on it.
            (true, false, false) => return Err(Refusal::ParentNotAType),
        },
        Some((_, StructKind::Gc)) => Link::Known(Some(0)),
        Some((_, StructKind::Skip)) | None => Link::Known(None),
    })
}

/// Refuses an update whose shared types would nest deeper than `max_depth`, or whose nested
/// types hang from parents that exist nowhere or from a reference cycle. References are
/// followed through the update, the document (`tree`) and what the document holds pending
/// (`pending`), so a type placed beside a pending struct is judged by where that one goes.
pub fn check_nesting(
    update: &ParsedUpdate,
    pending: Option<&ParsedUpdate>,
    tree: &mut dyn Tree,
    max_depth: u32,
) -> Result<(), Refusal> {
    let index = Index::new(std::iter::once(update).chain(pending).collect());
    let nodes = index.nodes();
    let update_nodes: usize = update.clients.iter().map(|c| c.structs.len()).sum();
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
                // A reference cycle: no struct on it can ever be placed (yrs, like Yjs, keeps
                // them pending). Harmless for plain content, so only a nested type on such a
                // chain is refused below, as having no known parent.
                break None;
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
            match link(&index, tree, anchor)? {
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
    // Depth is the new update's business: pending types were checked when they arrived.
    for (node, kind) in nodes.iter().enumerate().take(update_nodes) {
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

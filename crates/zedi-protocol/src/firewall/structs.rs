//! The two halves of a Yjs v1 update — structs per client, then the delete set — read strictly,
//! remembering just enough about each item to check what it refers to.

use std::collections::HashSet;

use super::Refusal;
use super::content::read_content;
use super::reader::StrictReader;

/// A Yjs id: (client, clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id {
    pub client: u64,
    pub clock: u32,
}

/// Where an item hangs in the tree, as its encoding says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// Directly in a root type (named by key).
    Root,
    /// Explicitly inside the shared type created by the item at this id.
    Parent(Id),
    /// Next to this item, so in the same parent as it (origin, or right origin if no origin).
    Beside(Id),
}

/// One struct of the update.
#[derive(Debug, Clone)]
pub struct Struct {
    pub id: Id,
    pub len: u32,
    pub kind: StructKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StructKind {
    /// Garbage-collected range: anything placed relative to it is collected too.
    Gc,
    /// A gap in a merged update.
    Skip,
    Item {
        anchor: Anchor,
        is_type: bool,
        /// Its content is ContentDeleted: what is placed inside it is collected.
        is_deleted: bool,
    },
}

/// The structs of one client, contiguous in clock order.
#[derive(Debug, Clone)]
pub struct ClientStructs {
    pub client: u64,
    pub structs: Vec<Struct>,
}

/// What a well-formed update holds.
#[derive(Debug, Default)]
pub struct ParsedUpdate {
    pub clients: Vec<ClientStructs>,
    /// Number of delete-set ranges.
    pub deletes: usize,
}

const INFO_ORIGIN: u8 = 0x80;
const INFO_RIGHT_ORIGIN: u8 = 0x40;
const INFO_PARENT_SUB: u8 = 0x20;
const CONTENT_MASK: u8 = 0x1f;
const STRUCT_GC: u8 = 0;
const STRUCT_SKIP: u8 = 10;

fn read_id(r: &mut StrictReader<'_>) -> Result<Id, Refusal> {
    let client = r.read_client()?;
    let clock = r.read_u32()?;
    Ok(Id { client, clock })
}

pub fn parse_update(bytes: &[u8], max_depth: u32) -> Result<ParsedUpdate, Refusal> {
    let mut r = StrictReader::new(bytes);
    let mut update = ParsedUpdate::default();
    // A client section is at least 4 bytes: count, client, clock, one struct byte... except an
    // empty one (3 bytes), which is the bound used.
    let client_count = r.read_count(3)?;
    let mut seen = HashSet::new();
    for _ in 0..client_count {
        let at = r.position();
        // Each struct takes at least two bytes (info + one more).
        let struct_count = r.read_count(2)?;
        let client = r.read_client()?;
        if !seen.insert(client) {
            // yrs keeps one list per client and would silently drop one of the two.
            return Err(Refusal::DuplicateClient { at, client });
        }
        let mut clock = r.read_u32()?;
        let mut structs = Vec::new();
        for _ in 0..struct_count {
            let s = read_struct(&mut r, client, clock, max_depth)?;
            clock = clock
                .checked_add(s.len)
                .ok_or(Refusal::ClockOverflow { at: r.position() })?;
            structs.push(s);
        }
        update.clients.push(ClientStructs { client, structs });
    }
    update.deletes = read_delete_set(&mut r)?;
    if !r.is_empty() {
        return Err(Refusal::TrailingBytes {
            at: r.position(),
            count: r.remaining(),
        });
    }
    Ok(update)
}

fn read_struct(
    r: &mut StrictReader<'_>,
    client: u64,
    clock: u32,
    max_depth: u32,
) -> Result<Struct, Refusal> {
    let at = r.position();
    let info = r.read_u8()?;
    let id = Id { client, clock };
    let kind_bits = info & CONTENT_MASK;
    if kind_bits == STRUCT_GC || kind_bits == STRUCT_SKIP {
        if info != kind_bits {
            return Err(Refusal::NonCanonical {
                at,
                what: "flags on a GC or skip struct",
            });
        }
        let len = r.read_u32()?;
        if len == 0 {
            return Err(Refusal::EmptyItem { at });
        }
        let kind = if kind_bits == STRUCT_GC {
            StructKind::Gc
        } else {
            StructKind::Skip
        };
        return Ok(Struct { id, len, kind });
    }
    let origin = (info & INFO_ORIGIN != 0).then(|| read_id(r)).transpose()?;
    let right_origin = (info & INFO_RIGHT_ORIGIN != 0)
        .then(|| read_id(r))
        .transpose()?;
    let anchor = match (origin, right_origin) {
        (Some(beside), _) | (None, Some(beside)) => Anchor::Beside(beside),
        (None, None) => {
            let parent_at = r.position();
            let anchor = match r.read_var_uint()? {
                1 => {
                    r.read_string()?;
                    Anchor::Root
                }
                0 => Anchor::Parent(read_id(r)?),
                _ => {
                    return Err(Refusal::NonCanonical {
                        at: parent_at,
                        what: "parent info other than 0 or 1",
                    });
                }
            };
            if info & INFO_PARENT_SUB != 0 {
                r.read_string()?;
            }
            anchor
        }
    };
    // Every reference an honest client writes points at something that existed before this
    // item, so never into this item's own client at or after its own clock: such a reference
    // is a loop that yrs's integration does not expect.
    for reference in [origin, right_origin, anchor_parent(&anchor)]
        .into_iter()
        .flatten()
    {
        if reference.client == client && reference.clock >= clock {
            return Err(Refusal::SelfReference { at });
        }
    }
    let len = read_content(r, kind_bits, max_depth)?;
    let is_type = kind_bits == super::content::CONTENT_TYPE;
    let is_deleted = kind_bits == super::content::CONTENT_DELETED;
    Ok(Struct {
        id,
        len,
        kind: StructKind::Item {
            anchor,
            is_type,
            is_deleted,
        },
    })
}

fn anchor_parent(anchor: &Anchor) -> Option<Id> {
    match anchor {
        Anchor::Parent(id) => Some(*id),
        _ => None,
    }
}

/// The delete set: per client, ranges (clock, len). Returns the number of ranges.
fn read_delete_set(r: &mut StrictReader<'_>) -> Result<usize, Refusal> {
    let client_count = r.read_count(2)?;
    let mut ranges = 0;
    for _ in 0..client_count {
        r.read_client()?;
        let range_count = r.read_count(2)?;
        for _ in 0..range_count {
            let at = r.position();
            let clock = r.read_u32()?;
            let len = r.read_u32()?;
            if len == 0 {
                return Err(Refusal::EmptyItem { at });
            }
            clock
                .checked_add(len)
                .ok_or(Refusal::ClockOverflow { at })?;
            ranges += 1;
        }
    }
    Ok(ranges)
}

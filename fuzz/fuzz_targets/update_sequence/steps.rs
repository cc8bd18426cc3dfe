//! What each step of a sequence sends.

use zedi_protocol::document::DocumentState;

use super::generator::World;
use super::input::Src;

/// The update of the next step, chosen by its op byte (the module doc of `update_sequence.rs`
/// gives the layout): raw bytes from the input, an earlier update again, the document's own full
/// state, a mutated generated update or a generated one.
pub(crate) fn next_update(
    src: &mut Src,
    world: &mut World,
    state: &DocumentState,
    history: &[Vec<u8>],
) -> Vec<u8> {
    let op = src.u8();
    match op {
        240..=255 => {
            let len = match src.u8() {
                255 => usize::from(src.u16()),
                len => usize::from(len),
            };
            src.bytes(len).to_vec()
        }
        224..=239 if !history.is_empty() => history[src.below(history.len())].clone(),
        216..=223 => match state.encode_state() {
            Ok(full) => full,
            Err(_) => world.update(src),
        },
        192..=215 => {
            let update = world.update(src);
            mutate(src, update)
        }
        _ => world.update(src),
    }
}

/// 1–3 raw byte mutations of an encoded update.
fn mutate(src: &mut Src, mut update: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + src.below(3) {
        let at = src.below(update.len() + 1);
        match src.pick(&[4, 2, 2, 2, 1, 1]) {
            0 if at < update.len() => update[at] = src.u8(),
            1 if at < update.len() => update[at] ^= 1 << src.below(8),
            2 => update.insert(at, src.u8()),
            3 if at < update.len() => {
                update.remove(at);
            }
            4 => update.truncate(at),
            _ => {
                let end = (at + 1 + src.below(4)).min(update.len());
                let slice = update[at.min(end)..end].to_vec();
                update.splice(at..at, slice);
            }
        }
    }
    update
}

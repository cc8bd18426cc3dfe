//! Crafting hostile updates (lib0 encoding, Yjs update v1) and reading updates without trusting them.

use super::*;

pub(super) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub(super) fn var_uint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(super) fn var_string(out: &mut Vec<u8>, s: &str) {
    var_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// `depth` Y.Maps each nested in the previous one (the first under root `root`), all from
/// `client`, with the outermost deleted in the same update's delete set: deleting it recurses
/// through every level.
pub(super) fn nested_maps_update(client: u64, depth: u64, root: &str) -> Vec<u8> {
    let mut u = Vec::new();
    var_uint(&mut u, 1); // clients
    var_uint(&mut u, depth); // structs of that client
    var_uint(&mut u, client);
    var_uint(&mut u, 0); // first clock
    for clock in 0..depth {
        // ContentType (7) with a parentSub key (0x20): a map entry; no origins, so the parent
        // is written out.
        u.push(0x07 | 0x20);
        if clock == 0 {
            var_uint(&mut u, 1); // parent is a root type, by name
            var_string(&mut u, root);
        } else {
            var_uint(&mut u, 0); // parent is the type held by the item with this ID
            var_uint(&mut u, client);
            var_uint(&mut u, clock - 1);
        }
        var_string(&mut u, "k"); // parentSub
        var_uint(&mut u, 1); // type ref YMap
    }
    // Delete set: client, one range, the outermost map (clock 0, length 1).
    var_uint(&mut u, 1);
    var_uint(&mut u, client);
    var_uint(&mut u, 1);
    var_uint(&mut u, 0);
    var_uint(&mut u, 1);
    u
}

/// An ordinary insert of `text` into Y.Text "default" by `client`, written by hand because yrs
/// itself refuses (debug-asserts on) client ids of 2^53 and more.
pub(super) fn text_insert_by(client: u64, text: &str) -> Vec<u8> {
    let mut u = Vec::new();
    var_uint(&mut u, 1);
    var_uint(&mut u, 1);
    var_uint(&mut u, client);
    var_uint(&mut u, 0);
    u.push(0x04); // ContentString, no origins
    var_uint(&mut u, 1);
    var_string(&mut u, "default");
    var_string(&mut u, text);
    var_uint(&mut u, 0); // empty delete set
    u
}

// ---------------------------------------------------------------------------------------------
// Reading updates without trusting them
// ---------------------------------------------------------------------------------------------

/// Client ids an update carries structs or deletions of. yrs may panic on hostile bytes (it
/// does on ids ≥ 2^53 in debug builds), which counts as undecodable.
pub(super) fn client_ids(update: &[u8]) -> Result<Vec<u64>, String> {
    let decoded = catch_unwind(|| Update::decode_v1(update))
        .map_err(|_| "yrs panicked decoding it".to_string())?
        .map_err(|e| e.to_string())?;
    let mut ids: Vec<u64> = decoded
        .state_vector()
        .iter()
        .map(|(client, _)| client.get())
        .chain(decoded.delete_set().client_ids().map(|c| c.get()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The Y.Text "default" of a document made from `update`, or why it could not be made.
pub(super) fn try_render(update: &[u8]) -> Result<String, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("default");
        let mut txn = doc.transact_mut();
        let decoded = Update::decode_v1(update).map_err(|e| format!("undecodable: {e}"))?;
        txn.apply_update(decoded)
            .map_err(|e| format!("does not apply: {e}"))?;
        Ok(text.get_string(&txn))
    }))
    .unwrap_or_else(|_| Err("yrs panicked applying it".into()))
}

/// A text for messages: long documents are cut.
pub(super) fn short(s: &str) -> String {
    if s.len() <= 80 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(60).collect();
    format!("{head:?}… ({} bytes)", s.len())
}

/// Refused updates so far. The daemon creates this series at the first refusal, so until then
/// it is absent and reads 0.
pub(super) fn invalid_updates(daemon: &Daemon) -> f64 {
    let (name, labels) = INVALID_UPDATE;
    daemon.metrics().get(name, labels).unwrap_or(0.0)
}

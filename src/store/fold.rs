//! Folding a snapshot and log entries into one Yjs state update.

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// Applies `snapshot` then `updates` to a fresh document and encodes the result.
///
/// Through a document rather than `merge_updates`, so deleted content is garbage-collected and
/// the snapshot stays as small as the live document. Updates still waiting for missing
/// predecessors (pending) are kept in the encoding, so nothing is lost by folding early.
/// A log entry that does not decode is an error: the caller keeps the log as it is.
pub fn fold_updates<'a>(
    snapshot: Option<&'a [u8]>,
    updates: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, String> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for bytes in snapshot.into_iter().chain(updates) {
            let update =
                Update::decode_v1(bytes).map_err(|e| format!("undecodable update: {e}"))?;
            txn.apply_update(update)
                .map_err(|e| format!("update does not apply: {e}"))?;
        }
    }
    // yrs can panic while merging pending updates into the encoding: a corrupt log entry must
    // make the fold fail (the log is kept), not take the process down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }))
    .map_err(|_| "the folded document cannot be encoded".to_string())
}

/// The encoded state vector of a folded state, stored beside it so a peer's diff can later be
/// computed without decoding the whole snapshot. Empty when the state does not decode.
pub fn state_vector_of(state: &[u8]) -> Vec<u8> {
    use yrs::updates::encoder::Encode;
    Update::decode_v1(state)
        .map(|u| u.state_vector().encode_v1())
        .unwrap_or_default()
}

//! The single-writer rule every store applies before it replaces a snapshot: a write carrying
//! a fencing token older than the one stored with the document comes from an owner that has
//! since been replaced (a cluster node whose lease was taken over), and is refused. One
//! function, so the three stores cannot disagree on the comparison or on the error.

use super::StoreError;

/// `Ok` when a write with token `offered` may replace a snapshot written with token `stored`
/// (equal is the same owner writing again); [`StoreError::Fenced`] when `offered` is older.
pub fn check_fence(stored: u64, offered: u64) -> Result<(), StoreError> {
    if offered < stored {
        return Err(StoreError::Fenced { offered, stored });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_token_is_refused_and_the_same_or_a_newer_one_passes() {
        assert!(check_fence(0, 0).is_ok(), "a document never compacted");
        assert!(check_fence(5, 5).is_ok(), "the same owner again");
        assert!(check_fence(5, 6).is_ok(), "a newer owner");
        match check_fence(5, 4) {
            Err(StoreError::Fenced { offered, stored }) => assert_eq!((offered, stored), (4, 5)),
            other => panic!("a stale token must be refused, got {other:?}"),
        }
    }
}

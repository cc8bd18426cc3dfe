//! Finding the key a request presents, in time that does not depend on where it differs from a
//! configured one.

use super::ApiKey;

/// `true` when equal; the time depends only on the lengths, not on the bytes.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from short-circuiting the fold.
    std::hint::black_box(difference) == 0
}

/// The configured key equal to `presented`. Every key is compared, found or not.
pub(super) fn find<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    let mut found = None;
    for key in keys {
        if constant_time_eq(key.secret.as_bytes(), presented.as_bytes()) && found.is_none() {
            found = Some(key);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KeyAccess;

    fn key(name: &str, secret: &str) -> ApiKey {
        ApiKey {
            name: name.into(),
            access: KeyAccess::ReadOnly,
            secret: secret.into(),
        }
    }

    #[test]
    fn only_the_exact_secret_matches() {
        let keys = [key("a", "0123456789abcdef"), key("b", "fedcba9876543210")];
        assert_eq!(
            find(&keys, "fedcba9876543210").map(|k| k.name.as_str()),
            Some("b")
        );
        for wrong in [
            "",
            "0123456789abcde",
            "0123456789abcdeF",
            "0123456789abcdef0",
        ] {
            assert!(find(&keys, wrong).is_none(), "{wrong}");
        }
    }
}

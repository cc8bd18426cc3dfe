//! What became of one token: the `result` label of `zedi_auth_results_total` and the log
//! field. One enum, so that the series registered at start and the ones counted cannot drift.

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no token")]
    MissingToken,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong token use")]
    WrongTokenUse,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("signing keys unavailable")]
    JwksUnavailable,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 11] = [
        AuthFailure::MissingToken,
        AuthFailure::Malformed,
        AuthFailure::AlgorithmNotAllowed,
        AuthFailure::BadSignature,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::WrongIssuer,
        AuthFailure::WrongAudience,
        AuthFailure::WrongTokenUse,
        AuthFailure::UnknownKey,
        AuthFailure::JwksUnavailable,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::Malformed => "malformed",
            AuthFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::WrongTokenUse => "wrong_token_use",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::JwksUnavailable => "jwks_unavailable",
        }
    }
}

/// The outcome of one Auth (or token refresh) for one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    ReadWrite,
    ReadOnly,
    /// A valid token that the policy does not let open this document.
    DeniedPolicy,
    Failed(AuthFailure),
    /// The provider did not answer a token refresh in time.
    RefreshFailed,
}

impl AuthResult {
    /// Every result, in the order the metric's series are registered.
    pub fn all() -> impl Iterator<Item = AuthResult> {
        [
            AuthResult::ReadWrite,
            AuthResult::ReadOnly,
            AuthResult::DeniedPolicy,
        ]
        .into_iter()
        .chain(AuthFailure::ALL.map(AuthResult::Failed))
        .chain([AuthResult::RefreshFailed])
    }

    pub fn label(&self) -> &'static str {
        match self {
            AuthResult::ReadWrite => "read_write",
            AuthResult::ReadOnly => "readonly",
            AuthResult::DeniedPolicy => "denied_policy",
            AuthResult::Failed(failure) => failure.label(),
            AuthResult::RefreshFailed => "refresh_failed",
        }
    }

    /// Whether the document was opened (read-write or read-only).
    pub fn is_granted(&self) -> bool {
        matches!(self, AuthResult::ReadWrite | AuthResult::ReadOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_has_its_own_label() {
        let mut labels: Vec<&str> = AuthResult::all().map(|r| r.label()).collect();
        let count = labels.len();
        assert_eq!(count, 3 + AuthFailure::ALL.len() + 1);
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), count, "two results share a label");
    }
}

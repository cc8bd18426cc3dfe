//! Token verification with `jsonwebtoken`: HS256 with a shared secret, RS256 with Cognito's
//! JWKS. The algorithm is taken from the header only to pick *which configured verifier* runs;
//! each verifier accepts exactly its own algorithm, so `none` and RS/HS confusion (an HS256
//! token "signed" with the RSA public key) are refused.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::AuthFailure;
use super::jwks::JwksCache;

/// Settings of the RS256 (Cognito) verifier.
pub struct Rs256 {
    pub issuer: String,
    pub jwks: JwksCache,
    /// App client ids accepted: `aud` of id tokens, `client_id` of access tokens. Empty: any.
    pub audiences: Vec<String>,
    /// "id" or "access" to accept only that kind of Cognito token; `None`: both.
    pub token_use: Option<super::TokenUse>,
}

pub struct Verifier {
    pub hs256: Option<DecodingKey>,
    pub rs256: Option<Rs256>,
    pub leeway: Duration,
}

/// A verified token: its claims and when it stops being valid.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Value,
    pub expires_at: Option<SystemTime>,
}

fn failure(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthFailure::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            AuthFailure::Malformed
        }
        _ => AuthFailure::Malformed,
    }
}

/// Latest NumericDate honoured: 9999-12-31T23:59:59Z. A later `exp` (up to 2^64 or 1e300, both
/// valid JSON numbers) is treated as this one, so `UNIX_EPOCH + exp` cannot overflow
/// `SystemTime` on any platform; a timer that far out is clamped by tokio (about 30 years).
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// An RFC 7519 NumericDate claim (`exp`, `nbf`) as whole seconds since the epoch: `None` when
/// absent. It may be fractional (`1700000000.5`): the fraction is dropped (floor), which for
/// `exp` makes the token expire up to a second early, never late. Negative numbers and
/// non-numbers are malformed (JSON has no NaN or infinity); dates past [`MAX_NUMERIC_DATE`]
/// saturate to it.
pub fn numeric_date(claims: &Value, name: &str) -> Result<Option<u64>, AuthFailure> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(AuthFailure::Malformed);
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(secs.min(MAX_NUMERIC_DATE)));
    }
    match n.as_f64() {
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            // `as` saturates for floats above u64::MAX; min() then caps it.
            Ok(Some((secs.floor() as u64).min(MAX_NUMERIC_DATE)))
        }
        // Negative (integers below zero arrive here too), NaN or infinite.
        _ => Err(AuthFailure::Malformed),
    }
}

/// The time claims of a token whose signature was already verified, at `now` (seconds since
/// the epoch): `exp` is required, `exp` and `nbf` are checked with `leeway`. Returns `exp`.
pub fn check_times(claims: &Value, now: u64, leeway: u64) -> Result<u64, AuthFailure> {
    let exp = numeric_date(claims, "exp")?.ok_or(AuthFailure::Malformed)?;
    // Same comparisons as jsonwebtoken's own (valid through `exp + leeway`), without underflow.
    if exp.saturating_add(leeway) < now {
        return Err(AuthFailure::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(AuthFailure::NotYetValid);
    }
    Ok(exp)
}

/// When a token with this `exp` stops being valid: `exp + leeway` (whole seconds), capped at
/// [`MAX_NUMERIC_DATE`] like `exp` itself. `None` only if the platform's `SystemTime` cannot
/// hold year 9999, which would mean such a token gets no expiry timer rather than a panic.
pub fn expires_at(exp: u64, leeway: Duration) -> Option<SystemTime> {
    let secs = exp.saturating_add(leeway.as_secs()).min(MAX_NUMERIC_DATE);
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn unix_now() -> u64 {
    // A clock before 1970 is a broken host, not a client's doing: every token looks unexpired
    // by `exp` then, as it would to jsonwebtoken's own check.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Verifier {
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        // `exp`/`nbf` are checked by `check_times` after the signature: jsonwebtoken reads them
        // as u64 only (a fractional date is rounded, one past 2^64 is "malformed") while the
        // expiry timer needs the same reading as the check, so one function does both.
        v.validate_exp = false;
        v.validate_nbf = false;
        // Audience rules differ between Cognito id and access tokens: checked below.
        v.validate_aud = false;
        v.required_spec_claims = HashSet::new();
        v
    }

    pub async fn verify(&self, token: &str) -> Result<Verified, AuthFailure> {
        if token.is_empty() {
            return Err(AuthFailure::MissingToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                AuthFailure::AlgorithmNotAllowed
            }
            _ => AuthFailure::Malformed,
        })?;
        let claims: Value = match header.alg {
            Algorithm::HS256 => {
                let key = self
                    .hs256
                    .as_ref()
                    .ok_or(AuthFailure::AlgorithmNotAllowed)?;
                jsonwebtoken::decode::<Value>(token, key, &self.validation(Algorithm::HS256))
                    .map_err(|e| failure(e.kind()))?
                    .claims
            }
            Algorithm::RS256 => {
                let rs = self
                    .rs256
                    .as_ref()
                    .ok_or(AuthFailure::AlgorithmNotAllowed)?;
                let kid = header.kid.as_deref().ok_or(AuthFailure::UnknownKey)?;
                let key = rs.jwks.key(kid).await?;
                let mut validation = self.validation(Algorithm::RS256);
                validation.set_issuer(&[rs.issuer.as_str()]);
                jsonwebtoken::decode::<Value>(token, &key, &validation)
                    .map_err(|e| failure(e.kind()))?
                    .claims
            }
            _ => return Err(AuthFailure::AlgorithmNotAllowed),
        };
        let exp = check_times(&claims, unix_now(), self.leeway.as_secs())?;
        // After the time checks, as before they moved out of jsonwebtoken: an expired token is
        // reported as expired whatever its audience.
        if let Some(rs) = self
            .rs256
            .as_ref()
            .filter(|_| header.alg == Algorithm::RS256)
        {
            check_cognito_claims(rs, &claims)?;
        }
        Ok(Verified {
            expires_at: expires_at(exp, self.leeway),
            claims,
        })
    }
}

/// `token_use` and the audience the Cognito way: id tokens carry `aud`, access tokens
/// `client_id`.
fn check_cognito_claims(rs: &Rs256, claims: &Value) -> Result<(), AuthFailure> {
    let token_use = claims.get("token_use").and_then(Value::as_str);
    if let Some(required) = &rs.token_use
        && token_use != Some(required.as_str())
    {
        return Err(AuthFailure::WrongTokenUse);
    }
    if rs.audiences.is_empty() {
        return Ok(());
    }
    let accepted = |v: &str| rs.audiences.iter().any(|a| a == v);
    let ok = if token_use == Some("access") {
        claims
            .get("client_id")
            .and_then(Value::as_str)
            .is_some_and(accepted)
    } else {
        match claims.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
            _ => claims
                .get("client_id")
                .and_then(Value::as_str)
                .is_some_and(accepted),
        }
    };
    if ok {
        Ok(())
    } else {
        Err(AuthFailure::WrongAudience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_dates_may_be_fractional_and_are_floored() {
        let c = json!({"exp": 1_700_000_000.5, "nbf": 1_699_999_999.999, "iat": 5});
        assert_eq!(numeric_date(&c, "exp"), Ok(Some(1_700_000_000)));
        assert_eq!(numeric_date(&c, "nbf"), Ok(Some(1_699_999_999)));
        assert_eq!(numeric_date(&c, "missing"), Ok(None));
        assert_eq!(numeric_date(&json!({"exp": 0.25}), "exp"), Ok(Some(0)));
        assert_eq!(numeric_date(&json!({"exp": 42}), "exp"), Ok(Some(42)));
    }

    #[test]
    fn negative_and_non_numeric_dates_are_malformed() {
        for bad in [
            json!(-1),
            json!(-0.5),
            json!(i64::MIN),
            json!("1700000000"),
            json!(null),
            json!(true),
            json!([1]),
        ] {
            assert_eq!(
                numeric_date(&json!({ "exp": bad }), "exp"),
                Err(AuthFailure::Malformed),
                "{bad}"
            );
        }
        // JSON cannot carry NaN or infinity (serde_json turns them into null); a Value built
        // from one in code is still refused.
        let nan = Value::from(f64::NAN);
        assert_eq!(
            numeric_date(&json!({ "exp": nan }), "exp"),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn far_future_dates_saturate_instead_of_overflowing() {
        for far in [
            json!(9.2e18),
            json!(9_223_372_036_854_775_807_u64),
            json!(9_223_372_036_854_775_808_u64),
            json!(u64::MAX),
            json!(1e300),
            json!(f64::MAX),
        ] {
            let c = json!({ "exp": far });
            assert_eq!(numeric_date(&c, "exp"), Ok(Some(MAX_NUMERIC_DATE)), "{far}");
            let exp = check_times(&c, 1_700_000_000, u64::MAX).expect("far future is valid");
            let at = expires_at(exp, Duration::from_secs(u64::MAX)).expect("representable");
            assert!(at > SystemTime::now());
            // The session turns it into a timer with duration_since: no overflow either.
            assert!(at.duration_since(SystemTime::now()).is_ok());
        }
    }

    #[test]
    fn times_are_checked_with_leeway() {
        let now = 1_700_000_000;
        // A fractional exp half a second ago (floored: one second ago) is expired, without
        // leeway and past a leeway shorter than that.
        let past = json!({"exp": (now - 1) as f64 + 0.5});
        assert_eq!(check_times(&past, now, 0), Err(AuthFailure::Expired));
        assert_eq!(check_times(&past, now, 1), Ok(now - 1));
        let future = json!({"exp": now as f64 + 30.9});
        assert_eq!(check_times(&future, now, 0), Ok(now + 30));
        assert_eq!(
            check_times(&json!({"sub": "u"}), now, 60),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            check_times(&json!({"exp": -5, "sub": "u"}), now, 60),
            Err(AuthFailure::Malformed)
        );
        let early = json!({"exp": now + 600, "nbf": now as f64 + 300.5});
        assert_eq!(check_times(&early, now, 60), Err(AuthFailure::NotYetValid));
        assert_eq!(check_times(&early, now, 300), Ok(now + 600));
        let bad_nbf = json!({"exp": now + 600, "nbf": -1});
        assert_eq!(check_times(&bad_nbf, now, 0), Err(AuthFailure::Malformed));
        // Boundaries that would underflow or overflow with plain arithmetic.
        assert_eq!(check_times(&json!({"exp": 0}), 0, 0), Ok(0));
        assert_eq!(
            check_times(&json!({"exp": 0, "nbf": u64::MAX}), u64::MAX, u64::MAX),
            Ok(0)
        );
    }

    #[test]
    fn expiry_of_a_fractional_exp_is_its_floor_plus_leeway() {
        let exp = check_times(&json!({"exp": 4_000_000_000.75}), 1_700_000_000, 0).unwrap();
        assert_eq!(
            expires_at(exp, Duration::from_secs(10)),
            Some(UNIX_EPOCH + Duration::from_secs(4_000_000_010))
        );
        // Leeway cannot push it past the cap either.
        assert_eq!(
            expires_at(MAX_NUMERIC_DATE - 5, Duration::from_secs(3600)),
            Some(UNIX_EPOCH + Duration::from_secs(MAX_NUMERIC_DATE))
        );
    }
}

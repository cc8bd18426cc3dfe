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
    pub token_use: Option<String>,
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

impl Verifier {
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        // Audience rules differ between Cognito id and access tokens: checked below.
        v.validate_aud = false;
        v.required_spec_claims = HashSet::from(["exp".to_string()]);
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
                let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
                    .map_err(|e| failure(e.kind()))?
                    .claims;
                check_cognito_claims(rs, &claims)?;
                claims
            }
            _ => return Err(AuthFailure::AlgorithmNotAllowed),
        };
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| UNIX_EPOCH + Duration::from_secs(exp) + self.leeway);
        Ok(Verified { claims, expires_at })
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

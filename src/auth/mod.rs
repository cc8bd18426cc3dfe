//! Who may open which document.
//!
//! `off`: every token is accepted with read-write access (the laptop default; the startup log
//! says so loudly). `jwt`: the token of the provider's Auth message is verified (HS256 with a
//! shared secret, RS256 with Cognito's JWKS, see [`jwt`]) and the [`policy`] maps its claims
//! and the document name to deny / read-only / read-write. The session only ever sees a
//! [`Decision`]; the token itself is never logged.

pub mod jwks;
pub mod jwt;
pub mod policy;
mod result;
mod settings;

use std::sync::Arc;
use std::time::SystemTime;

pub use policy::{Access, DefaultAccess, Policy};
pub use result::{AuthFailure, AuthResult};
pub use settings::{AuthMode, AuthSettings, TokenUse};

/// The answer for one (token, document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub access: Access,
    /// When the token stops being valid (with leeway); the session asks for a fresh one then.
    pub expires_at: Option<SystemTime>,
    /// What the `auth_results_total` metric and the log say of it.
    pub result: AuthResult,
    /// The verified token's claims (`None` with auth off, or when refused): the `context` of
    /// this connection's webhooks.
    pub claims: Option<std::sync::Arc<serde_json::Value>>,
}

struct Inner {
    mode: AuthMode,
    verifier: Option<jwt::Verifier>,
    policy: Policy,
}

/// Cheap to clone; shared by every session of the node.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

impl Authorizer {
    /// No checks at all: every connection gets read-write.
    pub fn off() -> Self {
        Authorizer {
            inner: Arc::new(Inner {
                mode: AuthMode::Off,
                verifier: None,
                policy: Policy::allow_all(),
            }),
        }
    }

    pub fn from_settings(s: &AuthSettings) -> Result<Self, String> {
        let mode = s.effective_mode();
        if mode == AuthMode::Off {
            return Ok(Self::off());
        }
        let hs256 = s
            .jwt_secret
            .as_ref()
            .map(|secret| jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()));
        let rs256 = match s.effective_issuer() {
            Some(issuer) => {
                let url = s
                    .jwks_url
                    .clone()
                    .unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
                let jwks = jwks::JwksCache::new(
                    url,
                    s.jwks_timeout,
                    s.jwks_min_refresh_interval,
                    s.jwks_max_age,
                )?;
                Some(jwt::Rs256 {
                    issuer,
                    jwks,
                    audiences: s.audiences.clone(),
                    token_use: s.token_use,
                })
            }
            None => None,
        };
        let policy = Policy {
            default_access: s.default_access,
            documents_claim: s.documents_claim.clone(),
            groups_claim: s.groups_claim.clone(),
            readonly_groups: s.readonly_groups.clone(),
            readonly_claim: s.readonly_claim.clone(),
        };
        Ok(Authorizer {
            inner: Arc::new(Inner {
                mode,
                verifier: Some(jwt::Verifier {
                    hs256,
                    rs256,
                    leeway: s.leeway,
                }),
                policy,
            }),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// Where RS256 keys come from, for the startup log.
    pub fn jwks_url(&self) -> Option<&str> {
        self.inner
            .verifier
            .as_ref()?
            .rs256
            .as_ref()
            .map(|r| r.jwks.url())
    }

    /// Decides access to `document` for a connection that presented `token`.
    pub async fn decide(&self, token: &str, document: &str) -> Decision {
        let Some(verifier) = &self.inner.verifier else {
            return Decision {
                access: Access::ReadWrite,
                expires_at: None,
                result: AuthResult::ReadWrite,
                claims: None,
            };
        };
        match verifier.verify(token).await {
            Err(failure) => Decision {
                access: Access::Denied {
                    reason: format!("permission-denied: {failure}"),
                },
                expires_at: None,
                result: AuthResult::Failed(failure),
                claims: None,
            },
            Ok(verified) => {
                let access = self.inner.policy.decide(&verified.claims, document);
                let result = match &access {
                    Access::ReadWrite => AuthResult::ReadWrite,
                    Access::ReadOnly => AuthResult::ReadOnly,
                    Access::Denied { .. } => AuthResult::DeniedPolicy,
                };
                Decision {
                    access,
                    expires_at: verified.expires_at,
                    result,
                    claims: Some(std::sync::Arc::new(verified.claims)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use std::time::Duration;

    fn settings(secret: &str) -> AuthSettings {
        // The compiled-in defaults' [auth] table, without the rest of the configuration.
        let defaults: toml::Table =
            toml::from_str(include_str!("../../config/default.toml")).expect("default.toml parses");
        let mut s: AuthSettings = defaults["auth"]
            .clone()
            .try_into()
            .expect("[auth] defaults");
        s.mode = AuthMode::Jwt;
        s.jwt_secret = Some(secret.parse().expect("infallible"));
        s
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hs256_tokens_are_verified() {
        let auth = Authorizer::from_settings(&settings("s3cret")).unwrap();
        let ok = hs("s3cret", json!({"sub": "u", "exp": now() + 60}));
        let d = auth.decide(&ok, "doc").await;
        assert_eq!(d.access, Access::ReadWrite);
        assert!(d.expires_at.is_some());
        let wrong = hs("other", json!({"sub": "u", "exp": now() + 60}));
        assert_eq!(
            auth.decide(&wrong, "doc").await.result.label(),
            "bad_signature"
        );
        let expired = hs("s3cret", json!({"sub": "u", "exp": now() - 120}));
        assert_eq!(auth.decide(&expired, "doc").await.result.label(), "expired");
        let no_exp = hs("s3cret", json!({"sub": "u"}));
        assert_eq!(
            auth.decide(&no_exp, "doc").await.result.label(),
            "malformed"
        );
        let future = hs(
            "s3cret",
            json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}),
        );
        assert_eq!(
            auth.decide(&future, "doc").await.result.label(),
            "not_yet_valid"
        );
        assert_eq!(auth.decide("", "doc").await.result.label(), "missing_token");
        assert_eq!(
            auth.decide("not.a.jwt", "doc").await.result.label(),
            "malformed"
        );
    }

    #[tokio::test]
    async fn fractional_and_far_future_expiries_are_honoured_without_panicking() {
        let auth = Authorizer::from_settings(&settings("s3cret")).unwrap();
        let leeway = settings("s3cret").leeway;
        // Fractional NumericDates are valid (RFC 7519): one in the past is expired, one in
        // the future gets an expiry (its floor plus leeway), so the refresh timer runs.
        let past = hs(
            "s3cret",
            json!({"sub": "u", "exp": (now() - 600) as f64 + 0.5}),
        );
        assert_eq!(auth.decide(&past, "doc").await.result.label(), "expired");
        let exp = now() + 600;
        let future = hs("s3cret", json!({"sub": "u", "exp": exp as f64 + 0.5}));
        let d = auth.decide(&future, "doc").await;
        assert_eq!(d.result.label(), "read_write");
        assert_eq!(
            d.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp) + leeway)
        );
        // Far-future expiries saturate; SystemTime and the session's timer do not overflow.
        for far in [
            json!(9.2e18),
            json!(9_223_372_036_854_775_808_u64),
            json!(1e300),
        ] {
            let t = hs("s3cret", json!({"sub": "u", "exp": far}));
            let d = auth.decide(&t, "doc").await;
            assert_eq!(d.result.label(), "read_write", "{far}");
            let at = d.expires_at.expect("an expiry");
            assert!(at.duration_since(SystemTime::now()).is_ok());
        }
        let negative = hs("s3cret", json!({"sub": "u", "exp": -1}));
        assert_eq!(
            auth.decide(&negative, "doc").await.result.label(),
            "malformed"
        );
        let bad_nbf = hs("s3cret", json!({"sub": "u", "exp": exp, "nbf": "soon"}));
        assert_eq!(
            auth.decide(&bad_nbf, "doc").await.result.label(),
            "malformed"
        );
    }

    #[tokio::test]
    async fn alg_none_and_unconfigured_algorithms_are_refused() {
        let auth = Authorizer::from_settings(&settings("s3cret")).unwrap();
        // {"alg":"none","typ":"JWT"} . {"sub":"u","exp":<far future>} . (no signature)
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(format!(r#"{{"sub":"u","exp":{}}}"#, now() + 60))
        );
        assert!(matches!(
            auth.decide(&none, "d").await.access,
            Access::Denied { .. }
        ));
        // RS256 is not configured here (no issuer), so an RS256 header is refused outright.
        let rs = format!(
            "{}.{}.c2ln",
            b64.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k"}"#),
            b64.encode(format!(r#"{{"sub":"u","exp":{}}}"#, now() + 60))
        );
        assert_eq!(
            auth.decide(&rs, "d").await.result.label(),
            "algorithm_not_allowed"
        );
    }

    #[tokio::test]
    async fn policy_applies_after_verification() {
        let mut s = settings("k");
        s.documents_claim = Some("zedi:documents".into());
        s.readonly_groups = vec!["viewers".into()];
        let auth = Authorizer::from_settings(&s).unwrap();
        let t = hs(
            "k",
            json!({"exp": now() + 60, "zedi:documents": ["a/*"], "cognito:groups": ["viewers"]}),
        );
        assert_eq!(auth.decide(&t, "a/1").await.access, Access::ReadOnly);
        assert_eq!(auth.decide(&t, "b/1").await.result.label(), "denied_policy");
    }

    #[tokio::test]
    async fn off_allows_everything() {
        let d = Authorizer::off().decide("", "x").await;
        assert_eq!(d.access, Access::ReadWrite);
    }
}

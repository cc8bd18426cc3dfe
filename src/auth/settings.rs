//! `[auth]`: how tokens are verified (HS256 secret, Cognito / RS256 issuer) and the access
//! policy applied to verified claims.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DefaultAccess;
use crate::values::{InvalidSetting, Secret, comma_list, millis, optional, require, secs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Auto,
    Off,
    Jwt,
}

/// Which Cognito token a connection must present (`token_use` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    Id,
    Access,
}

impl TokenUse {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Id => "id",
            TokenUse::Access => "access",
        }
    }
}

impl std::str::FromStr for TokenUse {
    type Err = &'static str;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "id" => Ok(TokenUse::Id),
            "access" => Ok(TokenUse::Access),
            _ => Err("must be \"id\", \"access\" or empty"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub mode: AuthMode,
    #[serde(with = "optional")]
    pub jwt_secret: Option<Secret>,
    #[serde(with = "optional")]
    pub cognito_user_pool_id: Option<String>,
    #[serde(with = "optional")]
    pub cognito_region: Option<String>,
    #[serde(with = "optional")]
    pub issuer: Option<String>,
    #[serde(with = "optional")]
    pub jwks_url: Option<String>,
    #[serde(with = "comma_list")]
    pub audiences: Vec<String>,
    #[serde(with = "optional")]
    pub token_use: Option<TokenUse>,
    #[serde(rename = "leeway_secs", with = "secs")]
    pub leeway: Duration,
    #[serde(rename = "jwks_timeout_ms", with = "millis")]
    pub jwks_timeout: Duration,
    #[serde(rename = "jwks_min_refresh_interval_ms", with = "millis")]
    pub jwks_min_refresh_interval: Duration,
    #[serde(rename = "jwks_max_age_secs", with = "secs")]
    pub jwks_max_age: Duration,
    #[serde(rename = "refresh_grace_ms", with = "millis")]
    pub refresh_grace: Duration,
    pub default_access: DefaultAccess,
    #[serde(with = "optional")]
    pub documents_claim: Option<String>,
    pub groups_claim: String,
    #[serde(with = "comma_list")]
    pub readonly_groups: Vec<String>,
    #[serde(with = "optional")]
    pub readonly_claim: Option<String>,
}

impl AuthSettings {
    /// `auto` resolved: JWT as soon as any way to verify a token is configured, so the old task
    /// definition (which sets JWT_SECRET / COGNITO_*) never runs without auth by accident.
    pub fn effective_mode(&self) -> AuthMode {
        match self.mode {
            AuthMode::Auto if self.jwt_secret.is_some() || self.effective_issuer().is_some() => {
                AuthMode::Jwt
            }
            AuthMode::Auto => AuthMode::Off,
            other => other,
        }
    }

    /// The RS256 issuer: explicit, or Cognito's from region + pool id.
    pub fn effective_issuer(&self) -> Option<String> {
        if let Some(issuer) = &self.issuer {
            return Some(issuer.trim_end_matches('/').to_string());
        }
        let pool = self.cognito_user_pool_id.as_deref()?;
        // Pool ids look like "eu-west-1_AbCdEf": the region is the part before '_'.
        let region = self
            .cognito_region
            .as_deref()
            .unwrap_or_else(|| pool.split('_').next().unwrap_or_default());
        Some(format!("https://cognito-idp.{region}.amazonaws.com/{pool}"))
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            self.mode != AuthMode::Jwt
                || self.jwt_secret.is_some()
                || self.effective_issuer().is_some(),
            "auth.mode",
            "is \"jwt\" but neither auth.jwt_secret (JWT_SECRET) nor a Cognito pool / auth.issuer is set",
        )?;
        require(
            !self.jwks_min_refresh_interval.is_zero() && !self.jwks_timeout.is_zero(),
            "auth.jwks_min_refresh_interval_ms",
            "JWKS intervals and timeouts must be > 0",
        )
    }
}

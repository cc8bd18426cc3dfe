//! Per-document decisions from verified claims: pure code, no keys, no network.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a connection may do with one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    Denied { reason: String },
}

/// The configured default for a valid token that no rule says anything about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultAccess {
    ReadWrite,
    #[serde(rename = "readonly")]
    ReadOnly,
    Deny,
}

/// The rules, from `[auth]` in the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub default_access: DefaultAccess,
    /// Claim holding the document-name patterns (`*` matches any run of characters) this token
    /// may open, e.g. `"zedi:documents": ["team-1/*", "shared"]`. A token without the claim falls
    /// back to `default_access`.
    pub documents_claim: Option<String>,
    /// Claim holding the user's groups (Cognito: `cognito:groups`).
    pub groups_claim: String,
    /// Membership in any of these groups makes every document read-only.
    pub readonly_groups: Vec<String>,
    /// A boolean claim that, when true, makes every document read-only.
    pub readonly_claim: Option<String>,
}

impl Policy {
    /// Everything read-write, as auth `off` and today's Hocuspocus deployment behave.
    pub fn allow_all() -> Self {
        Policy {
            default_access: DefaultAccess::ReadWrite,
            documents_claim: None,
            groups_claim: "cognito:groups".into(),
            readonly_groups: Vec::new(),
            readonly_claim: None,
        }
    }

    pub fn decide(&self, claims: &Value, document: &str) -> Access {
        if let Some(claim) = &self.documents_claim
            && let Some(patterns) = claims.get(claim)
        {
            let allowed = match patterns {
                Value::String(p) => glob_match(p, document),
                Value::Array(list) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|p| glob_match(p, document)),
                _ => false,
            };
            if !allowed {
                return Access::Denied {
                    reason: "document not allowed for this token".into(),
                };
            }
            return self.scope(claims, Access::ReadWrite);
        }
        match self.default_access {
            DefaultAccess::Deny => Access::Denied {
                reason: "no rule grants access to this document".into(),
            },
            DefaultAccess::ReadOnly => Access::ReadOnly,
            DefaultAccess::ReadWrite => self.scope(claims, Access::ReadWrite),
        }
    }

    /// Applies the read-only rules to an access that was granted.
    fn scope(&self, claims: &Value, granted: Access) -> Access {
        let readonly_flag = self
            .readonly_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
        let in_readonly_group = match claims.get(&self.groups_claim) {
            Some(Value::Array(groups)) => groups
                .iter()
                .filter_map(Value::as_str)
                .any(|g| self.readonly_groups.iter().any(|r| r == g)),
            Some(Value::String(g)) => self.readonly_groups.iter().any(|r| r == g),
            _ => false,
        };
        if readonly_flag || in_readonly_group || self.default_access == DefaultAccess::ReadOnly {
            Access::ReadOnly
        } else {
            granted
        }
    }
}

/// `*` matches any run of characters (including `/`); everything else literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            default_access: DefaultAccess::ReadWrite,
            documents_claim: Some("zedi:documents".into()),
            groups_claim: "cognito:groups".into(),
            readonly_groups: vec!["viewers".into()],
            readonly_claim: Some("zedi:readonly".into()),
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("team-1/*", "team-1/notes"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abde"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn document_patterns_allow_and_deny_per_document() {
        let claims = json!({"zedi:documents": ["team-1/*", "shared"]});
        assert_eq!(policy().decide(&claims, "team-1/plan"), Access::ReadWrite);
        assert_eq!(policy().decide(&claims, "shared"), Access::ReadWrite);
        assert!(matches!(
            policy().decide(&claims, "team-2/plan"),
            Access::Denied { .. }
        ));
    }

    #[test]
    fn groups_and_flags_grant_read_only() {
        let viewer = json!({"cognito:groups": ["staff", "viewers"]});
        assert_eq!(policy().decide(&viewer, "x"), Access::ReadOnly);
        let flagged = json!({"zedi:readonly": true, "zedi:documents": "x"});
        assert_eq!(policy().decide(&flagged, "x"), Access::ReadOnly);
        assert_eq!(policy().decide(&json!({}), "x"), Access::ReadWrite);
    }

    #[test]
    fn default_access_applies_without_rules() {
        let mut p = policy();
        p.default_access = DefaultAccess::Deny;
        assert!(matches!(p.decide(&json!({}), "x"), Access::Denied { .. }));
        assert_eq!(
            p.decide(&json!({"zedi:documents": ["x"]}), "x"),
            Access::ReadWrite
        );
        p.default_access = DefaultAccess::ReadOnly;
        assert_eq!(p.decide(&json!({}), "x"), Access::ReadOnly);
    }
}

//! `[webhooks]`: where document events are POSTed, signed as `@hocuspocus/extension-webhook`
//! signs them, and how hard a failing receiver is retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WebhookEvent;
use crate::backoff::BackoffPolicy;
use crate::values::{InvalidSetting, Secret, SecretUrl, comma_list, millis, optional, require};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Receiver of every event; `None`: webhooks are off. A `SecretUrl` because a receiver
    /// behind basic auth carries its password here (check-config shows it redacted).
    #[serde(with = "optional")]
    pub url: Option<SecretUrl>,
    /// HMAC-SHA256 key of `X-Hocuspocus-Signature-256`; `None` signs with the empty key, as the
    /// extension does when no secret is configured.
    #[serde(with = "optional")]
    pub secret: Option<Secret>,
    /// The events sent; the others are never queued.
    #[serde(with = "comma_list")]
    pub events: Vec<WebhookEvent>,
    /// `change` is sent this long after a document's last change (the document actor
    /// debounces; this module only carries the value). Zero: every change at once.
    #[serde(rename = "debounce_ms", with = "millis")]
    pub debounce: Duration,
    /// ... but at the latest this long after the first change not yet sent.
    #[serde(rename = "max_debounce_ms", with = "millis")]
    pub max_debounce: Duration,
    /// One attempt (connect, send, response head) gives up after this long.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Attempts of one delivery, the first included, before it is given up.
    pub max_attempts: u32,
    #[serde(rename = "retry_initial_ms", with = "millis")]
    pub retry_initial: Duration,
    #[serde(rename = "retry_max_ms", with = "millis")]
    pub retry_max: Duration,
    /// Deliveries accepted and not finished (waiting, in flight or waiting for a retry); one
    /// more is dropped.
    pub max_queued: usize,
}

impl WebhookSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let Some(url) = &self.url {
            let parsed = reqwest::Url::parse(url.expose());
            require(
                matches!(parsed.as_ref().map(|u| u.scheme()), Ok("http" | "https")),
                "webhooks.url",
                "must be an http:// or https:// URL",
            )?;
        }
        require(
            self.max_debounce >= self.debounce,
            "webhooks.max_debounce_ms",
            "must be at least webhooks.debounce_ms",
        )?;
        require(
            !self.timeout.is_zero(),
            "webhooks.timeout_ms",
            "must be at least 1",
        )?;
        require(
            self.max_attempts >= 1,
            "webhooks.max_attempts",
            "must be at least 1",
        )?;
        require(
            !self.retry_initial.is_zero(),
            "webhooks.retry_initial_ms",
            "must be at least 1",
        )?;
        require(
            self.retry_max >= self.retry_initial,
            "webhooks.retry_max_ms",
            "must be at least webhooks.retry_initial_ms",
        )?;
        // A zero-capacity queue would drop everything (and tokio's semaphores are fine with
        // it, so nothing else would say so).
        require(
            self.max_queued >= 1,
            "webhooks.max_queued",
            "must be at least 1",
        )
    }

    pub fn backoff(&self) -> BackoffPolicy {
        BackoffPolicy::new(self.retry_initial, self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> WebhookSettings {
        crate::config::Settings::load_from(None, Vec::new())
            .unwrap()
            .webhooks
    }

    fn refused_key(settings: &WebhookSettings) -> &'static str {
        settings.validate().unwrap_err().key
    }

    #[test]
    fn defaults_are_off_and_the_extensions() {
        let s = defaults();
        assert!(s.url.is_none() && s.secret.is_none());
        assert_eq!(s.events, [WebhookEvent::Change]);
        assert_eq!(s.debounce, Duration::from_secs(2));
        assert_eq!(s.max_debounce, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!((s.max_attempts, s.max_queued), (10, 10000));
        assert_eq!(
            s.backoff(),
            BackoffPolicy::new(Duration::from_millis(500), Duration::from_secs(30))
        );
    }

    #[test]
    fn only_http_urls_and_sane_bounds_pass() {
        let mut s = defaults();
        for ok in ["http://127.0.0.1:9/x", "https://hooks.example/zedi?k=v"] {
            s.url = Some(ok.parse().unwrap());
            assert!(s.validate().is_ok(), "{ok}");
        }
        for bad in [
            "ftp://hooks.example/",
            "hooks.example/x",
            "https://",
            "http//x",
        ] {
            s.url = Some(bad.parse().unwrap());
            assert_eq!(refused_key(&s), "webhooks.url", "{bad}");
        }
        type Break = fn(&mut WebhookSettings);
        let bounds: [(&str, Break); 6] = [
            ("webhooks.timeout_ms", |s| s.timeout = Duration::ZERO),
            ("webhooks.max_attempts", |s| s.max_attempts = 0),
            ("webhooks.max_queued", |s| s.max_queued = 0),
            ("webhooks.retry_initial_ms", |s| {
                s.retry_initial = Duration::ZERO
            }),
            ("webhooks.retry_max_ms", |s| {
                s.retry_max = Duration::from_millis(499)
            }),
            ("webhooks.max_debounce_ms", |s| {
                s.max_debounce = Duration::from_millis(1999)
            }),
        ];
        for (key, break_it) in bounds {
            let mut s = defaults();
            break_it(&mut s);
            assert_eq!(refused_key(&s), key);
        }
        let mut s = defaults();
        s.debounce = Duration::ZERO;
        s.max_attempts = 1;
        assert!(s.validate().is_ok(), "no debounce, no retry");
    }
}

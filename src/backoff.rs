//! Exponential backoff for the loops that retry a store or Redis until it answers: one helper,
//! so that every such loop waits, doubles and caps the same way (and is tested once).

use std::time::Duration;

/// Where a retry loop starts and where its waits stop growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl BackoffPolicy {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        BackoffPolicy { initial, max }
    }
}

/// The state of one retry loop: the next wait, doubled after each, never above the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            next: policy.initial.min(policy.max),
        }
    }

    /// How long the next [`Self::wait`] sleeps (for logs and deadline checks).
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// Sleeps the current delay, then doubles it up to the cap.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.grow();
    }

    /// After a success: the next failure starts again from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.policy.initial.min(self.policy.max);
    }

    fn grow(&mut self) {
        self.next = self.next.saturating_mul(2).min(self.policy.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(BackoffPolicy::new(
            Duration::from_millis(50),
            Duration::from_millis(300),
        ));
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(b.delay().as_millis());
            b.grow();
        }
        assert_eq!(seen, [50, 100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(50));
    }

    #[test]
    fn an_initial_delay_above_the_cap_is_capped() {
        let b = Backoff::new(BackoffPolicy::new(
            Duration::from_secs(9),
            Duration::from_secs(1),
        ));
        assert_eq!(b.delay(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn wait_sleeps_at_least_the_delay_then_grows() {
        let mut b = Backoff::new(BackoffPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(15),
        ));
        let started = std::time::Instant::now();
        b.wait().await;
        assert!(started.elapsed() >= Duration::from_millis(10));
        assert_eq!(b.delay(), Duration::from_millis(15));
    }
}

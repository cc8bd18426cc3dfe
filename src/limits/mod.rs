//! Per-connection and per-node limits that keep one client from starving the rest: token
//! buckets for message and byte rates, connection counts per node and per client address, and
//! the client address itself behind the ALB (`X-Forwarded-For`, trusted only from known proxies).
//! Pure code apart from the counter's lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

mod settings;
pub use settings::Limits;

/// Classic token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes `cost` tokens if there are enough; false when the rate is exceeded.
    pub fn take(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Takes `cost` tokens even if that goes into debt, for a sender that is slowed down rather
    /// than refused: how long until the bucket is out of debt (zero if it is not in debt), or
    /// `Err` once the debt would pass `max_debt` tokens.
    pub fn take_with_debt(
        &mut self,
        cost: f64,
        now: Instant,
        max_debt: f64,
    ) -> Result<std::time::Duration, RateExceeded> {
        self.refill(now);
        if self.tokens - cost < -max_debt {
            return Err(RateExceeded);
        }
        self.tokens -= cost;
        Ok(if self.tokens >= 0.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64(-self.tokens / self.rate)
        })
    }
}

/// A sender far over its rate even with reading paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateExceeded;

/// An address range such as `10.0.0.0/8` or `::1/128`; a bare address is its own range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let net = match text.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => ipnet::IpNet::from(
                text.parse::<IpAddr>()
                    .map_err(|_| format!("`{text}` is not an address or CIDR range"))?,
            ),
        };
        Ok(Cidr(net))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left
/// were written by the client and cannot be believed).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for entry in header.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        last = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    last
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NodeFull,
    AddressFull,
}

#[derive(Debug, Default, Clone, Copy)]
struct PerAddress {
    connections: usize,
    /// Bytes the address's sockets hold before Auth, together.
    preauth_bytes: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, PerAddress>,
}

/// Open connections per node and per client address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_ip: usize,
    max_preauth_per_ip: usize,
}

/// Holds one connection's place; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
    /// This socket's part of the address's pre-auth bytes.
    preauth_bytes: usize,
}

impl ConnectionLimiter {
    /// `0` means no limit.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Self::with_preauth_share(max_total, max_per_ip, usize::MAX)
    }

    /// As [`Self::new`], with a bound on the bytes one address's sockets hold before Auth.
    pub fn with_preauth_share(
        max_total: usize,
        max_per_ip: usize,
        max_preauth_per_ip: usize,
    ) -> Arc<Self> {
        Arc::new(ConnectionLimiter {
            counts: Mutex::new(Counts::default()),
            max_total,
            max_per_ip,
            max_preauth_per_ip,
        })
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let mut counts = self.counts.lock();
        if self.max_total > 0 && counts.total >= self.max_total {
            return Err(Refused::NodeFull);
        }
        let per_ip = counts.per_ip.get(&ip).map_or(0, |a| a.connections);
        if self.max_per_ip > 0 && per_ip >= self.max_per_ip {
            return Err(Refused::AddressFull);
        }
        counts.total += 1;
        counts.per_ip.entry(ip).or_default().connections += 1;
        Ok(ConnectionSlot {
            limiter: Arc::clone(self),
            ip,
            preauth_bytes: 0,
        })
    }

    pub fn open(&self) -> usize {
        self.counts.lock().total
    }
}

impl ConnectionSlot {
    /// Adds `bytes` to what this address holds before Auth; `false` (nothing added) when that
    /// would pass the address's share.
    pub fn charge_preauth(&mut self, bytes: usize) -> bool {
        let mut counts = self.limiter.counts.lock();
        let Some(address) = counts.per_ip.get_mut(&self.ip) else {
            return false;
        };
        if address.preauth_bytes.saturating_add(bytes) > self.limiter.max_preauth_per_ip {
            return false;
        }
        address.preauth_bytes += bytes;
        self.preauth_bytes += bytes;
        true
    }

    /// Gives back pre-auth bytes (at most what this socket charged).
    pub fn release_preauth(&mut self, bytes: usize) {
        let bytes = bytes.min(self.preauth_bytes);
        self.preauth_bytes -= bytes;
        if let Some(address) = self.limiter.counts.lock().per_ip.get_mut(&self.ip) {
            address.preauth_bytes = address.preauth_bytes.saturating_sub(bytes);
        }
    }

    /// The client address this connection counts against.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(address) = counts.per_ip.get_mut(&self.ip) {
            address.connections = address.connections.saturating_sub(1);
            address.preauth_bytes = address.preauth_bytes.saturating_sub(self.preauth_bytes);
            if address.connections == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        assert!((0..20).all(|_| b.take(1.0, t0)));
        assert!(!b.take(1.0, t0));
        assert!(b.take(5.0, t0 + Duration::from_millis(500)));
        assert!(!b.take(1.0, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn a_bucket_in_debt_says_how_long_to_wait_and_refuses_far_over() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        assert_eq!(b.take_with_debt(10.0, t0, 100.0), Ok(Duration::ZERO));
        let wait = b.take_with_debt(5.0, t0, 100.0).unwrap();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take_with_debt(96.0, t0, 100.0), Err(RateExceeded));
        // A second later the debt of 5 is paid and 5 tokens are back.
        assert_eq!(
            b.take_with_debt(5.0, t0 + Duration::from_secs(1), 100.0),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn preauth_bytes_are_shared_by_the_sockets_of_one_address() {
        let limiter = ConnectionLimiter::with_preauth_share(0, 0, 1000);
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "2.2.2.2".parse().unwrap();
        let mut s1 = limiter.try_acquire(a).unwrap();
        let mut s2 = limiter.try_acquire(a).unwrap();
        let mut other = limiter.try_acquire(b).unwrap();
        assert!(s1.charge_preauth(600));
        assert!(!s2.charge_preauth(600), "the address's share is used up");
        assert!(
            other.charge_preauth(600),
            "another address has its own share"
        );
        drop(s1);
        assert!(
            s2.charge_preauth(600),
            "a closed socket gives its share back"
        );
        s2.release_preauth(600);
        assert!(s2.charge_preauth(1000));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(crate::values::comma_list::parse::<Cidr>("10.0.0.0/8, nope").is_err());
        assert_eq!(Cidr::parse("10.0.0.1"), Cidr::parse("10.0.0.1/32"));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let alb: IpAddr = "10.0.1.5".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(client_ip(alb, Some("203.0.113.7"), &trusted), client);
        // A client that forges the header only fools itself: its real address is right-most.
        assert_eq!(
            client_ip(alb, Some("1.2.3.4, 203.0.113.7"), &trusted),
            client
        );
        // A peer that is not a proxy is the client, whatever it claims.
        assert_eq!(client_ip(client, Some("1.2.3.4"), &trusted), client);
        assert_eq!(client_ip(alb, None, &trusted), alb);
        assert_eq!(client_ip(alb, Some("garbage"), &trusted), alb);
    }

    #[test]
    fn connection_limits_count_and_release() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "2.2.2.2".parse().unwrap();
        let s1 = limiter.try_acquire(a).unwrap();
        let _s2 = limiter.try_acquire(a).unwrap();
        assert_eq!(limiter.try_acquire(a).unwrap_err(), Refused::AddressFull);
        let _s3 = limiter.try_acquire(b).unwrap();
        assert_eq!(limiter.try_acquire(b).unwrap_err(), Refused::NodeFull);
        drop(s1);
        let again = limiter.try_acquire(a);
        assert!(again.is_ok(), "a released place can be taken again");
        assert_eq!(limiter.open(), 3);
    }
}

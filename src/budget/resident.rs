//! The process's resident memory, sampled, as a floor under the budget's charges.
//!
//! Why measure at all when every large holder charges: charges are what we know we hold, not
//! all we hold. Allocator slack and fragmentation, buffer capacity beyond what a holder counts,
//! SQLite's page cache and the estimate behind a document's charge can each be off, and the
//! container's limit counts resident pages, not charges. With the floor, the budget's fill is
//! never less than what the kernel sees, whichever of the two is wrong.
//!
//! Why sampled and not read on every charge: reading `/proc/self/status` is a system call and a
//! small parse; ten times a second from one thread costs nothing, and the charges between two
//! samples still act at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::MemoryBudget;

/// How often the resident size is read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// The process's resident set in bytes (`VmRSS`), or `None` where `/proc` does not have it.
pub fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:    12345 kB` in `/proc/PID/status` (the kernel always writes kB there).
fn parse_vm_rss(status: &str) -> Option<usize> {
    let kb: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Starts the sampling thread. It stops by itself once the budget is dropped, so tests that
/// build a budget do not leak it past their end for more than one interval.
pub fn spawn_sampler(budget: &Arc<MemoryBudget>) -> std::io::Result<()> {
    let weak: Weak<MemoryBudget> = Arc::downgrade(budget);
    std::thread::Builder::new()
        .name("zedi-rss".into())
        .spawn(move || {
            while let Some(budget) = weak.upgrade() {
                if let Some(bytes) = resident_bytes() {
                    budget.set_resident(bytes);
                }
                drop(budget);
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kilobytes() {
        let status = "Name:\tzedi-sync\nVmHWM:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("VmHWM:\t1 kB\n"), None, "no VmRSS line");
        assert_eq!(parse_vm_rss("VmRSS:\t x kB\n"), None);
        assert_eq!(parse_vm_rss(&format!("VmRSS: {} kB", usize::MAX)), None);
    }

    #[test]
    fn this_process_has_a_resident_size_where_proc_exists() {
        if std::path::Path::new("/proc/self/status").exists() {
            let bytes = resident_bytes().expect("VmRSS parses");
            assert!(
                bytes >= 1024 * 1024,
                "a test binary holds at least 1 MiB: {bytes}"
            );
        }
    }

    #[test]
    fn the_sampler_feeds_the_budget_and_stops_with_it() {
        if resident_bytes().is_none() {
            return; // no /proc: nothing to sample
        }
        let budget = MemoryBudget::unmetered_measuring(1 << 40);
        spawn_sampler(&budget).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while budget.resident() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(budget.resident() > 0, "sampled within 10 s");
        let weak = Arc::downgrade(&budget);
        drop(budget);
        // The thread holds the budget only while it samples.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(weak.upgrade().is_none(), "the sampler let the budget go");
    }
}

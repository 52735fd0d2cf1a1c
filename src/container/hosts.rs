//! Exclusive mode: which hosts talk to a container, and whether it is shared.
//!
//! A dongle passed through to several virtual machines at once (a USB device in "shared"
//! mode) would serve every guest from one license. The engine remembers the hosts (their
//! channel keys) it heard from within a window; two or more → it is shared and refuses
//! license operations to all of them, until one host has been alone for a whole window. A
//! dongle whose host changes often (hopping between guests to dodge the window) is locked
//! for a cooldown.

use std::collections::VecDeque;

/// Window and cooldown of the host tracker, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharePolicy {
    /// How long a host counts as present after it was last heard.
    pub window_ms: u64,
    /// Host changes within `hop_span_ms` that count as hopping.
    pub hop_limit: usize,
    /// The span in which `hop_limit` changes lock the dongle.
    pub hop_span_ms: u64,
    /// How long a hopping dongle stays locked.
    pub cooldown_ms: u64,
}

impl Default for SharePolicy {
    fn default() -> SharePolicy {
        SharePolicy {
            window_ms: 10_000,
            hop_limit: 6,
            hop_span_ms: 60_000,
            cooldown_ms: 120_000,
        }
    }
}

/// The hosts a container has heard from.
#[derive(Clone, Debug, Default)]
pub struct HostTracker {
    policy: SharePolicy,
    seen: Vec<([u8; 32], u64)>,
    last_host: Option<[u8; 32]>,
    switches: VecDeque<u64>,
    shared_until: u64,
    locked_until: u64,
}

impl HostTracker {
    /// A tracker with `policy`.
    pub fn new(policy: SharePolicy) -> HostTracker {
        HostTracker {
            policy,
            ..HostTracker::default()
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> SharePolicy {
        self.policy
    }

    /// Records that `host` spoke at `now_ms` (a monotonic millisecond clock).
    pub fn observe(&mut self, host: [u8; 32], now_ms: u64) {
        let w = self.policy.window_ms;
        self.seen.retain(|(_, t)| t.saturating_add(w) > now_ms);
        match self.seen.iter_mut().find(|(h, _)| *h == host) {
            Some(e) => e.1 = now_ms,
            None => self.seen.push((host, now_ms)),
        }
        if self.seen.len() >= 2 {
            // Shared until every other host has been silent for a window after now.
            self.shared_until = self.shared_until.max(now_ms.saturating_add(w));
        }
        if self.last_host.is_some_and(|h| h != host) {
            self.switches.push_back(now_ms);
            while self
                .switches
                .front()
                .is_some_and(|t| t.saturating_add(self.policy.hop_span_ms) < now_ms)
            {
                self.switches.pop_front();
            }
            if self.switches.len() >= self.policy.hop_limit {
                self.locked_until = now_ms.saturating_add(self.policy.cooldown_ms);
            }
        }
        self.last_host = Some(host);
    }

    /// Whether the container is shared (or locked for hopping) at `now_ms`.
    pub fn is_shared(&self, now_ms: u64) -> bool {
        let w = self.policy.window_ms;
        let present = self
            .seen
            .iter()
            .filter(|(_, t)| t.saturating_add(w) > now_ms)
            .count();
        present >= 2 || now_ms < self.shared_until || now_ms < self.locked_until
    }

    /// Whether the container is locked for hopping at `now_ms`.
    pub fn is_locked_for_hopping(&self, now_ms: u64) -> bool {
        now_ms < self.locked_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];

    fn policy() -> SharePolicy {
        SharePolicy {
            window_ms: 1000,
            hop_limit: 4,
            hop_span_ms: 10_000,
            cooldown_ms: 30_000,
        }
    }

    #[test]
    fn one_host_is_exclusive_two_are_shared_until_one_is_alone_for_a_window() {
        let mut t = HostTracker::new(policy());
        t.observe(A, 0);
        t.observe(A, 500);
        assert!(!t.is_shared(600));
        t.observe(B, 700);
        assert!(t.is_shared(700));
        t.observe(A, 900);
        assert!(
            t.is_shared(1500),
            "B heard at 700 is still within the window"
        );
        t.observe(A, 1800);
        assert!(
            t.is_shared(1800),
            "one window after the last overlap has not passed"
        );
        t.observe(A, 2000);
        assert!(!t.is_shared(2001), "A alone for a whole window");
    }

    #[test]
    fn a_dongle_hopping_between_hosts_is_locked_for_the_cooldown() {
        let mut t = HostTracker::new(policy());
        let mut now = 0;
        for i in 0..5 {
            t.observe(if i % 2 == 0 { A } else { B }, now);
            now += 1500; // each alone longer than the window
        }
        assert!(t.is_locked_for_hopping(now));
        assert!(t.is_shared(now + 20_000));
        assert!(!t.is_shared(now + 31_000));
    }
}

//! Token buckets, kept apart so that one kind of traffic cannot use up another's allowance:
//!
//! | bucket            | keyed by                         | charged for                               |
//! |-------------------|----------------------------------|-------------------------------------------|
//! | unauthenticated   | client address                   | requests to public endpoints, and to the others without an `Authorization` header |
//! | per principal     | device (device sessions), else API token | authenticated requests            |
//! | failed auth       | client address                   | each failed authentication                |
//! | health            | client address                   | `GET /healthz`, and nothing else          |
//!
//! A bad-token flood empties its address's failed-auth bucket; after that, requests from that
//! address whose token has not been seen to succeed are refused without a database lookup, while
//! tokens that have succeeded (a device behind the same NAT) carry on, limited by their own
//! bucket.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::LimitsConfig;

/// Buckets kept before idle (full) ones are dropped.
const MAX_TRACKED: usize = 100_000;

/// Allows `rate` requests per second per key with bursts of `burst`.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter.
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst),
            buckets: Mutex::default(),
        }
    }

    /// Runs `f` on `key`'s refilled token count.
    fn with_bucket<T>(&self, key: &K, now: Instant, f: impl FnOnce(&mut f64) -> T) -> T {
        // A poisoned lock only means another request panicked mid-update; the counts are
        // still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        f(tokens)
    }

    /// Takes one token for `key`; `false` if it has none left.
    pub fn allow(&self, key: &K, now: Instant) -> bool {
        self.with_bucket(key, now, |tokens| {
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                true
            } else {
                false
            }
        })
    }

    /// Whether `key` has a token left, without taking it.
    pub fn has_tokens(&self, key: &K, now: Instant) -> bool {
        self.with_bucket(key, now, |tokens| *tokens >= 1.0)
    }
}

/// Whose allowance an authenticated request uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PrincipalKey {
    /// A device, whichever of its session tokens it uses.
    Device(String),
    /// An API token, by its hash.
    Token([u8; 32]),
}

/// Token hashes remembered as having succeeded (so a failed-auth flood does not lock them out).
const KNOWN_GOOD_KEPT: usize = 100_000;

/// All the server's buckets.
#[derive(Debug)]
pub struct RateLimits {
    /// Unauthenticated requests, per client address.
    pub unauthenticated: RateLimiter<IpAddr>,
    /// `GET /healthz`, per client address.
    pub health: RateLimiter<IpAddr>,
    /// Authenticated requests, per device or API token.
    pub principal: RateLimiter<PrincipalKey>,
    /// Failed authentications, per client address.
    pub auth_failures: RateLimiter<IpAddr>,
    known_good: Mutex<HashSet<[u8; 32]>>,
}

impl RateLimits {
    /// The buckets `limits` configures.
    pub fn new(limits: &LimitsConfig) -> Self {
        RateLimits {
            unauthenticated: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
            health: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
            principal: RateLimiter::new(limits.token_rate_per_second, limits.token_rate_burst),
            auth_failures: RateLimiter::new(
                limits.auth_failure_rate_per_second,
                limits.auth_failure_burst,
            ),
            known_good: Mutex::default(),
        }
    }

    /// Whether a token from `client` may be looked up: its address has failed-auth allowance
    /// left, or the token has succeeded before.
    pub fn may_authenticate(&self, client: IpAddr, token_hash: &[u8; 32], now: Instant) -> bool {
        self.auth_failures.has_tokens(&client, now) || self.is_known_good(token_hash)
    }

    fn is_known_good(&self, token_hash: &[u8; 32]) -> bool {
        self.known_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(token_hash)
    }

    /// Records a token that authenticated.
    pub fn remember_good(&self, token_hash: [u8; 32]) {
        let mut good = self.known_good.lock().unwrap_or_else(|p| p.into_inner());
        if good.len() >= KNOWN_GOOD_KEPT {
            // Forgetting only means such a token is subject to its address's failed-auth
            // bucket until it succeeds again.
            good.clear();
        }
        good.insert(token_hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(2, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        assert!((0..3).all(|_| l.allow(&ip, t)));
        assert!(!l.allow(&ip, t));
        assert!(l.allow(&other, t), "clients have separate buckets");
        assert!(l.allow(&ip, t + Duration::from_millis(500)));
        assert!(!l.allow(&ip, t + Duration::from_millis(500)));
    }

    #[test]
    fn a_failed_auth_flood_does_not_lock_out_tokens_that_succeeded() {
        let limits = LimitsConfig {
            auth_failure_burst: 2,
            ..LimitsConfig::default()
        };
        let r = RateLimits::new(&limits);
        let nat: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        let (bad, good) = ([1u8; 32], [2u8; 32]);
        r.remember_good(good);
        for _ in 0..2 {
            assert!(r.may_authenticate(nat, &bad, t));
            assert!(r.auth_failures.allow(&nat, t));
        }
        assert!(!r.may_authenticate(nat, &bad, t), "flood refused");
        assert!(r.may_authenticate(nat, &good, t), "good token carries on");
        assert!(r.may_authenticate("10.0.0.2".parse().unwrap(), &bad, t));
        assert!(r.health.allow(&nat, t), "health has its own bucket");
        assert!(r.unauthenticated.allow(&nat, t));
    }
}

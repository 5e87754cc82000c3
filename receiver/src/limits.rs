//! Per-client request rate: a token bucket per IP address. (Connections
//! are bounded in `server`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket per client address: `rate` requests per second on
/// average, up to `burst` at once. An agent's 50 MiB burst is 200 requests,
/// well inside the defaults.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; false if it has none left.
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets clients whose bucket has long been full again, so the table
    /// stays as small as the set of recently active clients.
    pub fn forget_idle(&self, now: Instant) {
        let refill =
            Duration::from_secs_f64(self.burst / self.rate.max(1e-3)) + Duration::from_secs(60);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, b| now.saturating_duration_since(b.last) < refill);
    }

    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let r = RateLimiter::new(10, 5);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..5).all(|_| r.allow(a, t0)));
        assert!(!r.allow(a, t0));
        // Another client has its own bucket.
        assert!(r.allow(b, t0));
        // 10/s: one more token after 100 ms, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.allow(a, t1));
        assert!(!r.allow(a, t1));
        r.forget_idle(t1 + Duration::from_secs(120));
        assert_eq!(r.clients(), 0);
    }
}

//! Exponential backoff with jitter, for a failing server and for a file the
//! server faults on. Jitter spreads many agents restarting against one
//! server.

use std::time::Duration;

/// The longest pause between attempts while the server fails.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// 0.5 s doubling to [`BACKOFF_CAP`] for failures, starting at 5 s for
/// refusals (a refusing server will not change its mind in a second).
#[derive(Debug)]
pub(crate) struct Backoff {
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Backoff {
            failures: 0,
            rng: seed | 1,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The pause before the next attempt, after one more failure.
    pub(crate) fn next(&mut self, refused: bool) -> Duration {
        let base = if refused {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        let full = base
            .saturating_mul(1 << self.failures.min(10))
            .min(BACKOFF_CAP);
        self.failures += 1;
        full / 2 + full / 2 * self.fraction_per_mille() / 1000
    }

    /// xorshift64: no dependency for a few random bits.
    fn fraction_per_mille(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1000) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let first = b.next(false);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        let mut last = first;
        for _ in 0..20 {
            last = b.next(false);
        }
        assert!(last >= BACKOFF_CAP / 2 && last <= BACKOFF_CAP);
        b.reset();
        assert!(b.next(true) >= Duration::from_millis(2500));
    }
}

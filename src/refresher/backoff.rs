//! Retry timing after a failed request or write ([`Backoff`]).

use jiff::SignedDuration;

/// Retry timing after a failed request or write: exponential with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: SignedDuration,
    pub cap: SignedDuration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: SignedDuration::from_secs(1),
            cap: SignedDuration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The ceiling of the delay after `failures` consecutive failures (1 = first failure); the
    /// delay itself is drawn uniformly below it (`fraction` in [0, 1)).
    pub fn delay(&self, failures: u32, fraction: f64) -> SignedDuration {
        let exponent = failures.saturating_sub(1).min(30);
        let ceiling = self
            .initial
            .checked_mul(1_i32 << exponent)
            .unwrap_or(self.cap)
            .min(self.cap);
        ceiling.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let backoff = Backoff::default();
        let secs = |s: f64| SignedDuration::from_secs_f64(s);
        // fraction 1.0 shows the ceiling: 1, 2, 4, ... capped at 60 s.
        assert_eq!(backoff.delay(1, 1.0), secs(1.0));
        assert_eq!(backoff.delay(2, 1.0), secs(2.0));
        assert_eq!(backoff.delay(6, 1.0), secs(32.0));
        assert_eq!(backoff.delay(7, 1.0), secs(60.0));
        assert_eq!(backoff.delay(1000, 1.0), secs(60.0));
        // Full jitter: anywhere from zero up to the ceiling.
        assert_eq!(backoff.delay(3, 0.0), SignedDuration::ZERO);
        assert_eq!(backoff.delay(3, 0.5), secs(2.0));
    }
}

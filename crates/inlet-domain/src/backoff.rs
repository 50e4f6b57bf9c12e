//! Exponential backoff with jitter: the one schedule every retry loop in
//! Inlet uses (broker reconnects, key sync, the Redis invalidation
//! listener, the worker's MongoDB waits, the agent client's retries).
//!
//! The ceiling doubles from `initial` up to `max`
//! ([`ceiling`]`(initial, max, n) = min(max, initial × 2ⁿ)`, saturating);
//! each delay is drawn from a range below that ceiling chosen by
//! [`Jitter`]. The type holds no clock and sleeps nowhere: callers sleep
//! on their own runtime (and race the sleep with their cancellation).
//!
//! ```
//! use std::time::Duration;
//! use inlet_domain::backoff::{Backoff, Jitter};
//!
//! let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
//!     .with_jitter(Jitter::None);
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! assert_eq!(b.next_delay(), Duration::from_millis(200));
//! b.reset(); // after a success
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! ```

use std::time::Duration;

use rand::Rng;

/// Where in `[0, ceiling]` a delay is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the ceiling (a single process retrying a local dependency).
    None,
    /// Uniform in `[0, ceiling]` ("full jitter"): a fleet that failed at
    /// the same moment does not come back at the same moment.
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`.
    Equal,
    /// Uniform in `[min(initial, ceiling), ceiling]`: full jitter with a
    /// floor, so a flapping peer is never retried in a hot loop.
    Floor,
}

impl Jitter {
    /// One delay for this ceiling (`initial` is the floor of
    /// [`Jitter::Floor`]).
    pub fn apply<R: Rng + ?Sized>(
        self,
        ceiling: Duration,
        initial: Duration,
        rng: &mut R,
    ) -> Duration {
        let floor = match self {
            Jitter::None => return ceiling,
            Jitter::Full => Duration::ZERO,
            Jitter::Equal => ceiling / 2,
            Jitter::Floor => initial.min(ceiling),
        };
        if ceiling <= floor {
            return floor;
        }
        let floor_us = floor.as_micros() as u64;
        let ceiling_us = ceiling.as_micros() as u64;
        Duration::from_micros(rng.random_range(floor_us..=ceiling_us))
    }
}

/// The ceiling of the `n`th delay (`n` = 0 for the first):
/// `min(max, initial × 2ⁿ)`, saturating.
pub fn ceiling(initial: Duration, max: Duration, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// A backoff schedule and the count of consecutive failures it has seen.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    failures: u32,
}

impl Backoff {
    /// Doubling from `initial` to `max`, with [`Jitter::Floor`].
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: Jitter::Floor,
            failures: 0,
        }
    }

    /// The same schedule with another jitter.
    pub fn with_jitter(mut self, jitter: Jitter) -> Backoff {
        self.jitter = jitter;
        self
    }

    /// The next delay; each call counts one more consecutive failure.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// [`Backoff::next_delay`] with the caller's random source.
    pub fn next_delay_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let d = self.jitter.apply(self.ceiling(), self.initial, rng);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// The ceiling of the next delay.
    pub fn ceiling(&self) -> Duration {
        ceiling(self.initial, self.max, self.failures)
    }

    /// Consecutive failures counted since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: start again from `initial`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_ceiling_doubles_to_the_maximum_and_saturates() {
        assert_eq!(ceiling(100 * MS, 5000 * MS, 0), 100 * MS);
        assert_eq!(ceiling(100 * MS, 5000 * MS, 3), 800 * MS);
        assert_eq!(ceiling(100 * MS, 5000 * MS, 6), 5000 * MS);
        assert_eq!(ceiling(100 * MS, 5000 * MS, u32::MAX), 5000 * MS);
    }

    #[test]
    fn reset_starts_again_from_initial() {
        let mut b = Backoff::new(10 * MS, 1000 * MS).with_jitter(Jitter::None);
        for _ in 0..20 {
            b.next_delay();
        }
        assert_eq!(b.failures(), 20);
        assert_eq!(b.next_delay(), 1000 * MS);
        b.reset();
        assert_eq!(b.next_delay(), 10 * MS);
    }

    #[test]
    fn a_maximum_below_initial_is_raised_to_initial() {
        let mut b = Backoff::new(500 * MS, 100 * MS).with_jitter(Jitter::None);
        assert_eq!(b.next_delay(), 500 * MS);
        assert_eq!(b.next_delay(), 500 * MS);
    }

    proptest! {
        #[test]
        fn every_delay_lies_in_its_jitter_range(
            initial_ms in 1u32..2_000,
            max_ms in 1u32..60_000,
            n in 0u32..40,
            seed in any::<u64>(),
        ) {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (initial, max) = (initial_ms * MS, max_ms * MS);
            let cap = ceiling(initial, max, n);
            let full = Jitter::Full.apply(cap, initial, &mut rng);
            prop_assert!(full <= cap);
            let equal = Jitter::Equal.apply(cap, initial, &mut rng);
            prop_assert!(equal >= cap / 2 && equal <= cap);
            let floor = Jitter::Floor.apply(cap, initial, &mut rng);
            prop_assert!(floor >= initial.min(cap) && floor <= cap);
            prop_assert_eq!(Jitter::None.apply(cap, initial, &mut rng), cap);
        }
    }
}

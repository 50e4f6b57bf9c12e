//! Per-key token buckets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_domain::{KeyId, RateLimit};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets by key id; idle buckets are forgotten (a forgotten bucket
/// comes back full, which errs on the side of accepting).
#[derive(Clone, Debug)]
pub struct RateLimiter {
    buckets: moka::sync::Cache<KeyId, Arc<Mutex<Bucket>>>,
    default: RateLimit,
}

impl RateLimiter {
    /// A limiter tracking at most `max_keys` keys, with `default` for keys
    /// whose account has no limit of its own.
    pub fn new(max_keys: u64, default: RateLimit) -> Self {
        RateLimiter {
            buckets: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            default,
        }
    }

    /// Takes a token for `key`. `Err(wait)` when the bucket is empty:
    /// the time until the next token.
    pub fn check(&self, key: KeyId, limit: Option<RateLimit>) -> Result<(), Duration> {
        let limit = limit.unwrap_or(self.default);
        let rate = f64::from(limit.per_second.max(1));
        let burst = f64::from(limit.burst.max(1));
        let bucket = self.buckets.get_with(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }))
        });
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let l = RateLimiter::new(
            10,
            RateLimit {
                per_second: 100,
                burst: 5,
            },
        );
        let k = KeyId::from_u64(1);
        for _ in 0..5 {
            assert!(l.check(k, None).is_ok());
        }
        let wait = l.check(k, None).unwrap_err();
        assert!(wait <= Duration::from_millis(11), "{wait:?}");
        std::thread::sleep(Duration::from_millis(25));
        assert!(l.check(k, None).is_ok());
        // Another key has its own bucket; an account limit overrides.
        let other = KeyId::from_u64(2);
        assert!(
            l.check(
                other,
                Some(RateLimit {
                    per_second: 1,
                    burst: 1
                })
            )
            .is_ok()
        );
        assert!(
            l.check(
                other,
                Some(RateLimit {
                    per_second: 1,
                    burst: 1
                })
            )
            .is_err()
        );
    }
}

//! Process-wide budgets of push bytes held in memory.
//!
//! Two pools, so that no push ever waits for one while holding the other
//! it needs next (which could deadlock them into answering nothing):
//!
//! - **bodies** (`api.max_in_flight_bytes`): a push's body, from before
//!   its first byte is read until its answer (reading, decoding,
//!   publishing: the body and its envelope live that long).
//! - **decoding** (one `api.max_decoded_bytes` per HTTP worker): a push
//!   whose body decodes to more than `intake::INLINE_DECODED_BYTES` is decoded
//!   and validated on the blocking pool, holding room here for its
//!   decompressed text (`max_decoded_bytes`, or the body's length for an
//!   identity body) until that is done, before it is published. Smaller
//!   ones are decoded on the worker thread, one at a time per worker. A
//!   push holding decoding room waits for nothing else, so this pool
//!   always drains.
//!
//! Room is taken with a short bounded wait (`api.in_flight_wait_ms`); a
//! push that finds none is answered 503 `server_busy`. Budgets count in
//! KiB (a semaphore permit each), rounded up.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One pool of bytes.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    wait: Duration,
    /// Bytes reserved now (`inlet_api_in_flight_bytes{budget}`).
    in_use: IntGauge,
}

/// Bytes held in a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    in_use: IntGauge,
}

const KIB: usize = 1024;

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(KIB)
}

impl Budget {
    /// A pool of `bytes` (rounded up to whole KiB), waited on for at most
    /// `wait`.
    pub fn new(bytes: usize, wait: Duration, in_use: IntGauge) -> Budget {
        Budget {
            permits: Arc::new(Semaphore::new(kib(bytes).min(Semaphore::MAX_PERMITS))),
            wait,
            in_use,
        }
    }

    /// Reserves `bytes`, waiting up to the pool's wait for room; `None`
    /// when there was none.
    pub async fn reserve(&self, bytes: usize) -> Option<Reservation> {
        // More than u32::MAX KiB cannot be asked of the semaphore at once,
        // nor fit any pool: asking for all of it waits out the bound.
        let n = u32::try_from(kib(bytes)).unwrap_or(u32::MAX);
        // The fast path reads no clock and arms no timer.
        let permit = match self.permits.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(n))
                .await
                .ok()?
                .ok()?,
        };
        self.in_use.add((permit.num_permits() * KIB) as i64);
        Some(Reservation {
            permit,
            in_use: self.in_use.clone(),
        })
    }
}

impl Reservation {
    /// Gives back all but `bytes` (rounded up to whole KiB) of the
    /// reservation.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = kib(bytes);
        let extra = self.permit.num_permits().saturating_sub(keep);
        if extra > 0
            && let Some(given_back) = self.permit.split(extra)
        {
            self.in_use.sub((extra * KIB) as i64);
            drop(given_back);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits() * KIB
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.in_use.sub((self.permit.num_permits() * KIB) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize, wait_ms: u64) -> Budget {
        Budget::new(
            bytes,
            Duration::from_millis(wait_ms),
            IntGauge::new("in_use", "test").unwrap(),
        )
    }

    #[tokio::test]
    async fn reserves_in_whole_kib_and_gives_back_on_drop() {
        let b = budget(10 * KIB, 0);
        let r = b.reserve(1).await.unwrap();
        assert_eq!(r.bytes(), KIB);
        assert_eq!(b.in_use.get(), 1024);
        let r2 = b.reserve(9 * KIB).await.unwrap();
        assert!(b.reserve(1).await.is_none(), "full");
        drop(r);
        assert_eq!(b.in_use.get(), 9 * 1024);
        assert!(b.reserve(KIB).await.is_some());
        drop(r2);
        assert_eq!(b.in_use.get(), 0);
        assert_eq!(b.reserve(0).await.unwrap().bytes(), 0);
    }

    #[tokio::test]
    async fn shrinking_gives_back_the_rest() {
        let b = budget(8 * KIB, 0);
        let mut r = b.reserve(8 * KIB).await.unwrap();
        r.shrink_to(3 * KIB - 1);
        assert_eq!(r.bytes(), 3 * KIB);
        assert_eq!(b.in_use.get(), 3 * 1024);
        assert!(b.reserve(5 * KIB).await.is_some());
        r.shrink_to(0);
        assert_eq!(b.in_use.get(), 0);
        drop(r);
        assert_eq!(b.in_use.get(), 0);
    }

    #[tokio::test]
    async fn waits_a_bounded_time_for_room() {
        let b = budget(4 * KIB, 2_000);
        let held = b.reserve(4 * KIB).await.unwrap();
        // Room freed while waiting is taken.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(2 * KIB).await.map(|r| r.bytes()) }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Some(2 * KIB));
        // No room within the wait: refused, and refused in about the wait.
        let b = budget(KIB, 50);
        let _held = b.reserve(KIB).await.unwrap();
        let started = std::time::Instant::now();
        assert!(b.reserve(KIB).await.is_none());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // More than the whole pool is never granted.
        assert!(budget(KIB, 10).reserve(2 * KIB).await.is_none());
    }
}

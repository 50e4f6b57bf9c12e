//! Shared helpers for the auth integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use inlet_auth::{KeyStore, Lookup, Readiness, SharedStore, StoreError};
use inlet_domain::{
    AccountId, AccountState, KeyDigest, KeyId, KeyIssuer, KeyRecord, KeyState, KeyVerifier,
    SigningSecret,
};

/// How a [`Scripted`] store behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the inner store.
    Normal,
    /// Answer "not loaded" (cold).
    Cold,
    /// Fail as unavailable.
    Down,
    /// Fail with a timeout.
    Timeout,
    /// Never answer (the authenticator's timeout must fire).
    Hang,
}

/// Wraps a store: counts lookups and can be switched into failure modes.
pub struct Scripted {
    inner: SharedStore,
    name: &'static str,
    mode: Mutex<Mode>,
    pub lookups: AtomicU64,
    delay: Mutex<Duration>,
}

impl Scripted {
    pub fn new(name: &'static str, inner: SharedStore) -> Arc<Scripted> {
        Arc::new(Scripted {
            inner,
            name,
            mode: Mutex::new(Mode::Normal),
            lookups: AtomicU64::new(0),
            delay: Mutex::new(Duration::ZERO),
        })
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn calls(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyStore for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn lookup(&self, digest: &KeyDigest) -> Result<Lookup, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Normal => self.inner.lookup(digest).await,
            Mode::Cold => Ok(Lookup::NotLoaded),
            Mode::Down => Err(StoreError::Unavailable("scripted outage".into())),
            Mode::Timeout => Err(StoreError::Timeout),
            Mode::Hang => std::future::pending().await,
        }
    }

    async fn readiness(&self) -> Readiness {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Normal => self.inner.readiness().await,
            Mode::Cold => Readiness::NotPopulated,
            Mode::Down | Mode::Hang => {
                Readiness::Unreachable(StoreError::Unavailable("scripted".into()))
            }
            Mode::Timeout => Readiness::Unreachable(StoreError::Timeout),
        }
    }
}

pub fn secret() -> SigningSecret {
    SigningSecret::new(1, &[7; 32]).unwrap()
}

pub fn issuer() -> KeyIssuer {
    KeyIssuer::new(secret())
}

pub fn verifier() -> KeyVerifier {
    KeyVerifier::new(vec![secret()]).unwrap()
}

pub fn record(key_id: KeyId, account: &str, key: KeyState, acct: AccountState) -> KeyRecord {
    KeyRecord {
        key_id,
        account_id: AccountId::parse(account).unwrap(),
        key_state: key,
        account_state: acct,
        rate_limit: None,
        app: None,
        revision: 1,
        updated_at_ms: 0,
    }
}

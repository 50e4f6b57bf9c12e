//! TLS on the push listener: a rustls configuration whose certificate is
//! read from `[api.tls]`'s files and replaced when they change.
//!
//! The certificate is chosen per handshake by [`ReloadingCert`] (a
//! [`ResolvesServerCert`]), so a new pair reaches every connection opened
//! after it loaded; connections already open keep the pair they started
//! with. The files are compared by content, not modification time: a
//! Kubernetes Secret volume swaps a symlink, and copies keep mtimes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus::IntCounterVec;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::settings::TlsSettings;

/// Why a certificate/key pair did not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate { path: PathBuf },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key in the file ({reason})")]
    Key { path: PathBuf, reason: String },
    /// The key is not one rustls can sign with, or not the certificate's.
    #[error("{cert} and {key} are not a usable pair: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The files' bytes as last read, whether or not they loaded: a change is
/// only tried once, so a broken pair is reported once, not every interval.
type Contents = (Vec<u8>, Vec<u8>);

/// The served certificate, replaced when `[api.tls]`'s files change.
pub struct ReloadingCert {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Contents>,
    reloads: IntCounterVec,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.settings.cert_path)
            .field("key_path", &self.settings.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl ReloadingCert {
    /// Loads the pair; an error here stops the process from starting.
    pub fn load(settings: &TlsSettings, reloads: IntCounterVec) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let contents = read_pair(settings)?;
        let key = certified_key(settings, &contents, &provider)?;
        Ok(Arc::new(ReloadingCert {
            settings: settings.clone(),
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(contents),
            reloads,
        }))
    }

    /// The server configuration: this resolver, TLS 1.2 and 1.3, no client
    /// certificates. actix-web adds the ALPN protocols (`h2`, `http/1.1`).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        Ok(
            rustls::ServerConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(self.clone()),
        )
    }

    /// Reads the files again. `Ok(true)` when they changed and the new pair
    /// is now served; `Ok(false)` when nothing changed (or a change that
    /// failed before is still there); an error when a change did not load.
    /// A file that cannot be read is an error at every check (and counted
    /// as `failed`) until it can.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let result = self.try_reload();
        match &result {
            Ok(false) => {}
            Ok(true) => self.reloads.with_label_values(&["loaded"]).inc(),
            Err(_) => self.reloads.with_label_values(&["failed"]).inc(),
        }
        result
    }

    fn try_reload(&self) -> Result<bool, TlsError> {
        let contents = read_pair(&self.settings)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == contents {
                return Ok(false);
            }
            seen.clone_from(&contents);
        }
        let key = certified_key(&self.settings, &contents, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(true)
    }

    /// Checks the files every `reload_interval_ms` until `cancel`.
    pub fn spawn_watcher(self: &Arc<Self>, cancel: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.settings.reload_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let s = &this.settings;
                match this.reload() {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(
                        cert = %s.cert_path.display(),
                        "TLS certificate reloaded; new connections get it"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate files changed but did not load; still serving the previous pair"
                    ),
                }
            }
        });
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_pair(settings: &TlsSettings) -> Result<Contents, TlsError> {
    Ok((read(&settings.cert_path)?, read(&settings.key_path)?))
}

fn certified_key(
    settings: &TlsSettings,
    (cert, key): &Contents,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: settings.cert_path.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key {
        path: settings.key_path.clone(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Pair {
        cert: settings.cert_path.clone(),
        key: settings.key_path.clone(),
        reason: e.to_string(),
    })
}

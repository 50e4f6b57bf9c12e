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
    /// A PEM section of the certificate file does not parse.
    #[error("{path}: a PEM certificate in the file does not parse ({reason})")]
    Certificate { path: PathBuf, reason: String },
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

/// The two files' bytes.
type Contents = (Vec<u8>, Vec<u8>);

/// What the files held at a check that did not load: their bytes, or why
/// they could not be read.
type Observed = Result<Contents, String>;

/// The watcher's view of the files, under one lock so that checks (the
/// watcher's, or a caller's [`ReloadingCert::reload`]) never interleave.
struct Files {
    /// The bytes of the pair being served.
    served: Contents,
    /// A change that did not load at the last check, and whether it has
    /// been reported.
    failing: Option<(Observed, bool)>,
}

/// The served certificate, replaced when `[api.tls]`'s files change.
pub struct ReloadingCert {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    files: Mutex<Files>,
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
            files: Mutex::new(Files {
                served: contents,
                failing: None,
            }),
            reloads,
        }))
    }

    /// The server configuration: this resolver, TLS 1.2 and 1.3, no client
    /// certificates. actix-web adds the ALPN protocol `http/1.1` (HTTP/2 is
    /// not offered: actix-web's HTTP/2 cannot send GOAWAY, so a draining
    /// instance could not move its clients elsewhere).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        Ok(
            rustls::ServerConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(self.clone()),
        )
    }

    /// Reads the files again. `Ok(true)` when they changed and the new pair
    /// is now served; `Ok(false)` when there is nothing to report; an error
    /// (counted as `failed`, once) when a change still does not load at the
    /// check after the one that first saw it.
    ///
    /// A rotation writes two files, and a check can fall between the two
    /// writes: a pair that does not load is therefore only a failure when
    /// the next check finds the same files still not loading. The previous
    /// pair is served throughout.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let (observed, error): (Observed, TlsError) = match read_pair(&self.settings) {
            Ok(contents) if contents == files.served => {
                files.failing = None;
                return Ok(false);
            }
            Ok(contents) => match certified_key(&self.settings, &contents, &self.provider) {
                Ok(key) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                    files.served = contents;
                    files.failing = None;
                    self.reloads.with_label_values(&["loaded"]).inc();
                    return Ok(true);
                }
                Err(e) => (Ok(contents), e),
            },
            Err(e) => (Err(e.to_string()), e),
        };
        match &mut files.failing {
            Some((seen, reported)) if *seen == observed => {
                if std::mem::replace(reported, true) {
                    Ok(false)
                } else {
                    self.reloads.with_label_values(&["failed"]).inc();
                    Err(error)
                }
            }
            _ => {
                files.failing = Some((observed, false));
                Ok(false)
            }
        }
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
                // File reads block: off the runtime's threads.
                let cert = this.clone();
                let Ok(result) = tokio::task::spawn_blocking(move || cert.reload()).await else {
                    return;
                };
                match result {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(
                        cert = %this.settings.cert_path.display(),
                        "TLS certificate reloaded; new connections get it"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate files do not load; still serving the previous pair"
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
    // Every PEM section must parse: a chain with a broken intermediate is
    // an error, not a leaf served alone.
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: settings.cert_path.clone(),
            reason: e.to_string(),
        })?;
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

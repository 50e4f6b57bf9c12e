//! TLS on the push listener (`[api.tls]`), with certificates made in the
//! test: curl pushes over HTTPS (HTTP/1.1, the one protocol offered by
//! ALPN), a draining instance closes kept-alive TLS connections, and a
//! certificate written over the files is served to new connections
//! without a restart (a broken one is not). `inlet-client` over TLS
//! against the `inlet api` binary is in `crates/inlet/tests/client_e2e.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Options, TestApp, batch_json, spawn_app_with};
use inlet_api::tls::{ReloadingCert, TlsError};
use inlet_api::{ApiMetrics, ApiSettings, TlsSettings};
use inlet_testkit::{TestCa as Ca, TestCert, wait_until};

/// The certificate files of one test.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a pair the way a rotation does: key first, then certificate.
    fn write_pair(&self, pair: &TestCert) {
        std::fs::write(self.path("key.pem"), &pair.key_pem).unwrap();
        std::fs::write(self.path("cert.pem"), &pair.cert_pem).unwrap();
    }

    /// Writes a CA bundle for curl's `--cacert`; returns its path.
    fn write_ca(&self, name: &str, ca: &Ca) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, ca.pem()).unwrap();
        p
    }

    fn settings(&self, reload_interval_ms: u64) -> TlsSettings {
        TlsSettings {
            cert_path: self.path("cert.pem"),
            key_path: self.path("key.pem"),
            reload_interval_ms,
        }
    }
}

/// The test app's options with `[api.tls]` on `files`, its client
/// trusting `ca`.
fn tls_options(files: &Files, ca: &Ca) -> Options {
    Options {
        api: ApiSettings {
            tls: Some(files.settings(100)),
            ..Options::default().api
        },
        tls_root_pem: Some(ca.pem()),
        ..Options::default()
    }
}

async fn spawn_tls_app(files: &Files, ca: &Ca) -> TestApp {
    let app = spawn_app_with(tls_options(files, ca)).await;
    assert!(app.base.starts_with("https://"), "{}", app.base);
    app.wait_ready().await;
    app
}

/// What curl printed and how it exited.
struct Curl {
    /// `-w`: the status and the HTTP version.
    out: String,
    exit: Option<i32>,
    stderr: String,
}

/// POSTs a batch with curl, trusting `cacert`; `extra` adds flags.
fn curl_push(app: &TestApp, cacert: &Path, extra: &[&str]) -> Curl {
    let body = batch_json(None).to_string();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .arg("--cacert")
        .arg(cacert)
        .args([
            "-H",
            &format!("Authorization: Bearer {}", app.key.expose_secret()),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ])
        .args(extra)
        .arg(format!("{}/v1/push", app.base))
        .output()
        .expect("curl must be installed (.ci/run installs it)");
    Curl {
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        exit: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl's exit code for a certificate it does not trust.
const CURL_PEER_FAILED_VERIFICATION: i32 = 60;

fn reloads(metrics: &str, outcome: &str) -> u64 {
    let series = format!("inlet_api_tls_reloads_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_pushes_over_https_1_1_and_checks_the_certificate() {
    let ca = Ca::new("inlet test CA");
    let files = Files::new();
    files.write_pair(&ca.server_cert());
    let cacert = files.write_ca("ca.pem", &ca);
    let app = spawn_tls_app(&files, &ca).await;

    // curl offers h2 and http/1.1 by ALPN; the server offers only
    // http/1.1 (a draining instance must be able to close connections).
    let c = curl_push(&app, &cacert, &[]);
    assert_eq!(c.out, "202 1.1", "curl over HTTPS: {}", c.stderr);
    let c = curl_push(&app, &cacert, &["--http2"]);
    assert_eq!(c.out, "202 1.1", "curl asking for HTTP/2: {}", c.stderr);
    // The certificate is really checked: a CA curl was not given fails.
    let other = files.write_ca("other.pem", &Ca::new("someone else"));
    let c = curl_push(&app, &other, &[]);
    assert_eq!(c.exit, Some(CURL_PEER_FAILED_VERIFICATION), "{}", c.stderr);
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health/live", port(&app)))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered on the TLS listener"
    );
}

fn port(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_written_over_the_files_is_served_without_a_restart() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let files = Files::new();
    files.write_pair(&old_ca.server_cert());
    let old = files.write_ca("old.pem", &old_ca);
    let new = files.write_ca("new.pem", &new_ca);
    let app = spawn_tls_app(&files, &old_ca).await;
    assert_eq!(curl_push(&app, &old, &[]).out, "202 1.1");
    assert_eq!(
        curl_push(&app, &new, &[]).exit,
        Some(CURL_PEER_FAILED_VERIFICATION)
    );

    files.write_pair(&new_ca.server_cert());
    wait_until(
        Duration::from_secs(10),
        "new connections to get the new certificate",
        || async { curl_push(&app, &new, &[]).out == "202 1.1" },
    )
    .await;
    let c = curl_push(&app, &old, &[]);
    assert_eq!(c.exit, Some(CURL_PEER_FAILED_VERIFICATION), "{}", c.stderr);
    assert!(reloads(&app.metrics().await, "loaded") >= 1);

    // A broken certificate is counted and not served: the last good pair
    // stays in use.
    let failed = reloads(&app.metrics().await, "failed");
    std::fs::write(
        files.path("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the broken certificate to be counted as failed",
        || async { reloads(&app.metrics().await, "failed") > failed },
    )
    .await;
    assert_eq!(curl_push(&app, &new, &[]).out, "202 1.1");
    // A file that disappears (mid-rotation) is no reason to stop serving.
    let failed = reloads(&app.metrics().await, "failed");
    std::fs::remove_file(files.path("cert.pem")).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the missing certificate to be counted as failed",
        || async { reloads(&app.metrics().await, "failed") > failed },
    )
    .await;
    assert_eq!(curl_push(&app, &new, &[]).out, "202 1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_closes_kept_alive_tls_connections() {
    let ca = Ca::new("inlet test CA");
    let files = Files::new();
    files.write_pair(&ca.server_cert());
    common::assert_draining_closes_kept_alive_connections(tls_options(&files, &ca)).await;
}

/// A watcher-less `ReloadingCert` on `files`, and its counter.
fn loaded(files: &Files) -> (std::sync::Arc<ReloadingCert>, prometheus::IntCounterVec) {
    let counter = ApiMetrics::unregistered().unwrap().tls_reloads;
    let cert = ReloadingCert::load(&files.settings(1000), counter.clone()).unwrap();
    (cert, counter)
}

fn count(counter: &prometheus::IntCounterVec, outcome: &str) -> u64 {
    counter.with_label_values(&[outcome]).get()
}

#[test]
fn a_check_between_a_rotations_two_writes_is_not_a_failure() {
    let ca = Ca::new("CA");
    let files = Files::new();
    files.write_pair(&ca.server_cert());
    let (cert, counter) = loaded(&files);
    assert!(!cert.reload().unwrap(), "nothing changed");

    // The new key is written, the certificate not yet: the pair does not
    // match, but that is a rotation under way, not a failure.
    let next = ca.server_cert();
    std::fs::write(files.path("key.pem"), &next.key_pem).unwrap();
    assert!(!cert.reload().unwrap());
    assert_eq!(count(&counter, "failed"), 0);
    std::fs::write(files.path("cert.pem"), &next.cert_pem).unwrap();
    assert!(cert.reload().unwrap(), "the completed pair loads");
    assert_eq!(count(&counter, "loaded"), 1);
    assert_eq!(count(&counter, "failed"), 0);
}

#[test]
fn a_pair_that_stays_broken_is_a_failure_reported_once() {
    let ca = Ca::new("CA");
    let files = Files::new();
    files.write_pair(&ca.server_cert());
    let (cert, counter) = loaded(&files);

    std::fs::write(files.path("cert.pem"), "no certificate").unwrap();
    assert!(!cert.reload().unwrap(), "first sight: maybe mid-rotation");
    let err = cert.reload().unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert!(!cert.reload().unwrap(), "reported once, not every check");
    assert_eq!(count(&counter, "failed"), 1);

    // A file that cannot be read is a new failure, also reported once.
    std::fs::remove_file(files.path("cert.pem")).unwrap();
    assert!(!cert.reload().unwrap());
    let err = cert.reload().unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(!cert.reload().unwrap());
    assert_eq!(count(&counter, "failed"), 2);

    // A good pair ends it.
    files.write_pair(&ca.server_cert());
    assert!(cert.reload().unwrap());
    assert_eq!(count(&counter, "failed"), 2);
}

#[test]
fn a_chain_with_a_section_that_does_not_parse_does_not_load() {
    let ca = Ca::new("CA");
    let files = Files::new();
    let pair = ca.server_cert();
    files.write_pair(&TestCert {
        cert_pem: format!(
            "{}-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
            pair.cert_pem
        ),
        key_pem: pair.key_pem,
    });
    let counter = ApiMetrics::unregistered().unwrap().tls_reloads;
    let err = ReloadingCert::load(&files.settings(1000), counter).unwrap_err();
    assert!(matches!(err, TlsError::Certificate { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");
}

#[test]
fn a_pair_that_does_not_load_is_refused_at_start_with_the_reason() {
    let ca = Ca::new("CA");
    let files = Files::new();
    let metrics = || ApiMetrics::unregistered().unwrap().tls_reloads;
    let err = ReloadingCert::load(&files.settings(1000), metrics()).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");

    // A key that is not the certificate's.
    let cert = ca.server_cert().cert_pem;
    let other_key = ca.server_cert().key_pem;
    files.write_pair(&TestCert {
        cert_pem: cert.clone(),
        key_pem: other_key,
    });
    let err = ReloadingCert::load(&files.settings(1000), metrics()).unwrap_err();
    assert!(matches!(err, TlsError::Pair { .. }), "{err}");

    files.write_pair(&TestCert {
        cert_pem: cert,
        key_pem: "not a key".to_owned(),
    });
    let err = ReloadingCert::load(&files.settings(1000), metrics()).unwrap_err();
    assert!(matches!(err, TlsError::Key { .. }), "{err}");

    files.write_pair(&TestCert {
        cert_pem: "no certificate".to_owned(),
        key_pem: ca.server_cert().key_pem,
    });
    let err = ReloadingCert::load(&files.settings(1000), metrics()).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

    files.write_pair(&ca.server_cert());
    ReloadingCert::load(&files.settings(1000), metrics()).unwrap();
}

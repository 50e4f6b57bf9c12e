//! Building and running the HTTP application.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, Service as _, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{App, HttpMessage as _, HttpResponse, HttpServer, web};
use inlet_auth::Authenticator;
use inlet_domain::{BatchLimits, RateLimit};
use inlet_obs::{AdminServer, Health, ReadinessDetail, health_response, metrics_response};
use inlet_otlp::Signal;
use inlet_queue::Publisher;
use prometheus::Registry;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::budget::Budget;
use crate::error::ApiError;
use crate::metrics::{ApiMetrics, PUSH_ROUTE, ResponseCode};
use crate::otlp::{self, OtlpFormat};
use crate::push::push;
use crate::ratelimit::RateLimiter;
use crate::request_id::{REQUEST_ID, RequestId};
use crate::settings::ApiSettings;
use crate::state::AppState;
use crate::tls::ReloadingCert;

/// What the API needs from the rest of the process (built in one place by
/// the caller; see `inlet api`).
#[derive(Debug, Clone)]
pub struct Dependencies {
    /// Decides about keys (its background tasks must be running).
    pub authenticator: Authenticator,
    /// Publishes confirmed envelopes.
    pub publisher: Publisher,
    /// The process's metrics registry (`/metrics`), e.g.
    /// `inlet_obs::process_registry("api")`.
    pub registry: Registry,
    /// The process's health registry (`/health/ready`).
    pub health: Health,
    /// Batch validation limits.
    pub limits: BatchLimits,
}

/// A bound, not yet running API.
pub struct Application {
    port: u16,
    tls: bool,
    admin_port: Option<u16>,
    server: Server,
    admin: Option<AdminServer>,
    state: web::Data<AppState>,
    /// Stops the certificate watcher when the application is dropped.
    _tls_watch: Option<DropGuard>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("admin_port", &self.admin_port)
            .finish()
    }
}

impl Application {
    /// Binds the listeners and builds the server. Readiness stays 503
    /// until the authenticator has checked its stores and the publisher is
    /// connected.
    pub fn build(settings: ApiSettings, deps: Dependencies) -> std::io::Result<Application> {
        let metrics = ApiMetrics::register(&deps.registry)
            .map_err(|e| std::io::Error::other(format!("registering API metrics: {e}")))?;
        let limiter = RateLimiter::new(
            settings.rate_limiter_max_keys,
            RateLimit {
                per_second: settings.default_rate_per_s,
                burst: settings.default_burst,
            },
        );
        let serve_metrics_here = settings.admin_listen.is_none();
        let (admin, admin_port) = match &settings.admin_listen {
            Some(addr) => {
                let a = AdminServer::bind(addr, deps.registry.clone(), deps.health.clone())?;
                let port = a.port();
                (Some(a), Some(port))
            }
            None => (None, None),
        };
        // Decoding runs on the HTTP worker threads: one maximum decoded
        // body per worker lets every worker decode at once.
        let workers = if settings.workers > 0 {
            settings.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        };
        let in_use = |budget: &str| metrics.in_flight_bytes.with_label_values(&[budget]);
        let bodies = Budget::new(
            settings.max_in_flight_bytes,
            settings.in_flight_wait(),
            in_use("body"),
        );
        let decoding = Budget::new(
            settings.max_decoded_bytes.saturating_mul(workers),
            settings.in_flight_wait(),
            in_use("decode"),
        );
        let state = web::Data::new(AppState {
            auth: deps.authenticator,
            publisher: deps.publisher,
            limiter,
            limits: deps.limits,
            metrics,
            health: deps.health,
            registry: deps.registry,
            bodies,
            decoding,
            ready_detail: if serve_metrics_here {
                ReadinessDetail::Full
            } else {
                ReadinessDetail::Summary
            },
            draining: Arc::new(AtomicBool::new(false)),
            settings: settings.clone(),
        });
        spawn_readiness_reporters(&state);

        let listener = TcpListener::bind(&settings.listen)?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            let state = app_state.clone();
            let mw_state = app_state.clone();
            let mut app = App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(state.settings.max_body_bytes))
                .wrap_fn(move |req, srv| {
                    // The one place every answer passes: the request id in
                    // and out, an error's problem document, the metrics.
                    let started = Instant::now();
                    let rid = RequestId::assign(&req);
                    req.extensions_mut().insert(rid.clone());
                    let state = mw_state.clone();
                    state.metrics.in_flight.inc();
                    let fut = srv.call(req);
                    async move {
                        let result = fut.await;
                        state.metrics.in_flight.dec();
                        let res = answer(result?, &state, &rid.0);
                        record(&state, &res, started, &rid.0);
                        Ok(res)
                    }
                })
                .route(PUSH_ROUTE, web::post().to(push))
                .route(PUSH_ROUTE, web::route().to(only_post))
                .route(Signal::Traces.path(), web::post().to(otlp::traces))
                .route(Signal::Metrics.path(), web::post().to(otlp::metrics))
                .route(Signal::Logs.path(), web::post().to(otlp::logs))
                .route(Signal::Traces.path(), web::route().to(otlp_only_post))
                .route(Signal::Metrics.path(), web::route().to(otlp_only_post))
                .route(Signal::Logs.path(), web::route().to(otlp_only_post))
                .route("/health/live", web::get().to(live))
                .route("/health/live", web::route().to(only_get))
                .route("/health/ready", web::get().to(ready))
                .route("/health/ready", web::route().to(only_get));
            if serve_metrics_here {
                app = app
                    .route("/metrics", web::get().to(metrics_endpoint))
                    .route("/metrics", web::route().to(only_get));
            }
            app.default_service(web::to(not_found))
        })
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout_s)
        .client_request_timeout(Duration::from_millis(settings.client_request_timeout_ms))
        .keep_alive(Duration::from_secs(settings.keep_alive_s));
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let (server, tls_watch) = match &settings.tls {
            Some(tls) => {
                let cert = ReloadingCert::load(tls, state.metrics.tls_reloads.clone())
                    .map_err(std::io::Error::other)?;
                let config = cert.server_config().map_err(std::io::Error::other)?;
                let watch = CancellationToken::new();
                cert.spawn_watcher(watch.clone());
                // Armed before listening: a listener that fails stops it.
                let watch = watch.drop_guard();
                (server.listen_rustls_0_23(listener, config)?, Some(watch))
            }
            None => (server.listen(listener)?, None),
        };
        Ok(Application {
            port,
            tls: tls_watch.is_some(),
            admin_port,
            server: server.run(),
            admin,
            state,
            _tls_watch: tls_watch,
        })
    }

    /// The push listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https` when `[api.tls]` is set, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The admin listener's port, when `admin_listen` is set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503
    /// at once; pushes are still served for `shutdown_delay_ms` (so load
    /// balancers stop routing here first); then the listener closes and
    /// in-flight requests (and their broker confirms) get up to
    /// `shutdown_timeout_s` to finish; then the publisher closes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let handle: ServerHandle = self.server.handle();
        let admin_handle = self.admin.as_ref().map(AdminServer::handle);
        let server = tokio::spawn(self.server);
        let admin = self.admin.map(|a| tokio::spawn(a.run()));
        let state = self.state;
        shutdown.await;

        tracing::info!("shutdown: readiness is now 503; still serving during the delay");
        state.health.begin_shutdown();
        state.metrics.ready.set(0);
        tokio::time::sleep(Duration::from_millis(state.settings.shutdown_delay_ms)).await;
        tracing::info!("shutdown: closing the listener and draining in-flight requests");
        state.begin_draining();
        handle.stop(true).await;
        let result = match server.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        state.publisher.close().await;
        if let Some(h) = admin_handle {
            h.stop(true).await;
        }
        if let Some(a) = admin {
            let _ = a.await;
        }
        // The lifetime totals, read after the last request finished: the
        // one count of what this instance accepted that no scrape can miss.
        let items = |kind: &str| state.metrics.items.with_label_values(&[kind]).get();
        tracing::info!(
            accepted_transactions = items("transaction"),
            accepted_metrics = items("metric"),
            accepted_errors = items("error"),
            "shutdown complete"
        );
        result
    }
}

/// Finishes a response: a handler's [`ApiError`] becomes its problem
/// document (with this request's id and the directive settings); every
/// answer carries `X-Request-Id`, and `Connection: close` once shutdown
/// has begun.
fn answer(res: ServiceResponse, state: &AppState, rid: &str) -> ServiceResponse {
    let otlp = res.request().extensions().get::<OtlpFormat>().copied();
    let problem = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map(|e| match otlp {
            Some(OtlpFormat(format)) => e.to_otlp_response(&state.settings, rid, format),
            None => e.to_response(&state.settings, rid),
        });
    let mut res = match problem {
        Some(resp) => res.into_response(resp),
        None => res,
    };
    if let Ok(v) = HeaderValue::from_str(rid) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    if state.health.is_shutting_down() {
        // Kept-alive clients reconnect (through the balancer, elsewhere)
        // after this answer, instead of finding their idle connection
        // dropped when the listener closes.
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    res
}

fn record(state: &AppState, res: &ServiceResponse<impl MessageBody>, started: Instant, rid: &str) {
    let status = res.status();
    let code = res
        .response()
        .extensions()
        .get::<ResponseCode>()
        .map_or(if status.is_success() { "ok" } else { "other" }, |c| c.0);
    let m = &state.metrics;
    if code == "accepted" && status == StatusCode::ACCEPTED {
        // Only the push handler answers `accepted`: the hot series.
        m.hot.push_accepted.inc();
        m.hot.push_duration.observe(started.elapsed().as_secs_f64());
        return;
    }
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "other".to_owned());
    m.requests
        .with_label_values(&[route.as_str(), status.as_str(), code])
        .inc();
    m.duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    // The path only: the query string may carry an API key.
    if status.is_server_error() {
        tracing::debug!(
            request_id = rid,
            route,
            status = status.as_u16(),
            code,
            "request failed"
        );
    }
}

/// Keeps `Health` (and the readiness gauges) in step with the
/// authenticator and the publisher.
fn spawn_readiness_reporters(state: &web::Data<AppState>) {
    let mut auth = state.auth.watch_readiness();
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let r = auth.borrow_and_update().clone();
            let ready = r.checked && r.can_decide;
            s.health.set("auth", ready, r.describe());
            s.metrics
                .dependency_ready
                .with_label_values(&["auth"])
                .set(i64::from(ready));
            s.metrics.ready.set(i64::from(s.health.is_ready()));
            if auth.changed().await.is_err() {
                return;
            }
        }
    });
    let mut queue = state.publisher.watch_state();
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let st = queue.borrow_and_update().clone();
            let ready = st.is_connected();
            s.health.set("queue", ready, st.label());
            s.metrics
                .dependency_ready
                .with_label_values(&["queue"])
                .set(i64::from(ready));
            s.metrics.ready.set(i64::from(s.health.is_ready()));
            if queue.changed().await.is_err() {
                return;
            }
        }
    });
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "live": true }))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    health_response(&state.health, state.ready_detail)
}

async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    metrics_response(&state.registry)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn only_post() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed { allow: "POST" })
}

async fn otlp_only_post(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    otlp::format_of(&req);
    Err(ApiError::MethodNotAllowed { allow: "POST" })
}

async fn only_get() -> Result<HttpResponse, ApiError> {
    // actix answers HEAD for GET routes itself.
    Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" })
}

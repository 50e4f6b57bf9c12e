//! The admin listener: a small HTTP server of its own for operators and
//! probes (`/health/live`, `/health/ready`, `/metrics`), and the two
//! response builders it shares with a service's own HTTP API.
//!
//! ("Admin" here is the operations port, as in `api.admin_listen`; key
//! administration is `inlet-auth`'s.)

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus::Registry;

use crate::health::{Health, ReadinessDetail};
use crate::metrics::{TEXT_CONTENT_TYPE, render};

/// A bound, not yet running admin listener.
pub struct AdminServer {
    port: u16,
    server: Server,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("port", &self.port)
            .finish()
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    health: Health,
}

impl AdminServer {
    /// Binds `addr` (e.g. `0.0.0.0:9091`, or port 0 for a free port).
    pub fn bind(addr: &str, registry: Registry, health: Health) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let port = listener.local_addr()?.port();
        let state = AdminState { registry, health };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .configure(routes)
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        Ok(AdminServer { port, server })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the listener.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through [`AdminServer::handle`].
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The three admin routes.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "live": true }))
}

async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    health_response(&state.health, ReadinessDetail::Full)
}

/// The `/health/ready` response for a [`Health`]: 200 when ready, else 503,
/// with the report (or its summary) as JSON either way.
pub fn health_response(health: &Health, detail: ReadinessDetail) -> HttpResponse {
    let report = health.report();
    let mut resp = if report.ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    resp.insert_header(("Cache-Control", "no-store"));
    match detail {
        ReadinessDetail::Full => resp.json(report),
        ReadinessDetail::Summary => resp.json(report.summary()),
    }
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    metrics_response(&state.registry)
}

/// The `/metrics` response for a registry.
pub fn metrics_response(registry: &Registry) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(TEXT_CONTENT_TYPE)
        .body(render(registry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::process_registry;

    #[actix_web::test]
    async fn serves_health_and_metrics() {
        let registry = process_registry("admin_test");
        let health = Health::new();
        let admin = AdminServer::bind("127.0.0.1:0", registry, health.clone()).unwrap();
        let base = format!("http://127.0.0.1:{}", admin.port());
        let handle = admin.handle();
        actix_web::rt::spawn(admin.run());
        let client = reqwest::Client::new();

        let live = client
            .get(format!("{base}/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), 200);

        let ready = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503, "no component has reported yet");
        health.set("thing", true, "fine");
        let ready = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["components"]["thing"]["detail"], "fine");

        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert!(
            metrics.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert!(metrics.text().await.unwrap().contains("inlet_build_info"));
        handle.stop(true).await;
    }
}

//! Baseline: an actix-web server with the same route, reading the whole
//! body and answering 202 with a JSON id, and nothing else.
#![allow(clippy::print_stdout)]

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::StreamExt as _;

async fn push(mut body: web::Payload) -> HttpResponse {
    let mut n = 0usize;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => n += c.len(),
            Err(_) => return HttpResponse::BadRequest().finish(),
        }
    }
    HttpResponse::Accepted().json(serde_json::json!({ "id": uuid::Uuid::now_v7(), "bytes": n }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    HttpServer::new(|| App::new().route("/v1/push", web::post().to(push)))
        .bind(addr)?
        .run()
        .await
}

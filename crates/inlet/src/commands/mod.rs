//! One module per subcommand; each wires the library crates for its role.

pub mod api;
pub mod check;
pub mod config;
pub mod keys;
pub mod load;
pub mod migrate;
pub mod push;
pub mod stats;
pub mod sync;
pub mod worker;

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context as _;

/// Runs a command's future on a multi-threaded tokio runtime inside an
/// actix system (so commands can serve HTTP with actix-web).
pub fn block_on<F>(fut: F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    let system = actix_web::rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("inlet")
            .build()
            .unwrap_or_else(|e| panic!("cannot start the async runtime: {e}"))
    });
    system.block_on(fut)
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Connects to MongoDB per settings.
pub async fn mongo(settings: &crate::settings::Settings) -> anyhow::Result<inlet_auth::MongoStore> {
    inlet_auth::MongoStore::connect(&settings.mongo)
        .await
        .context("connecting to MongoDB")
}

/// Shuts the MongoDB client down cleanly before the runtime goes away, so
/// no background cleanup (e.g. killing a cursor) runs against a dropped
/// connection pool.
pub async fn close_mongo(store: &inlet_auth::MongoStore) {
    store.shutdown().await;
}

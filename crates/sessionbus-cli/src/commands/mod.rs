//! One module per subcommand.

pub mod bench;
pub mod cancel;
pub mod credentials;
pub mod dashboard;
pub mod demo;
pub mod exporter;
pub mod purge;
pub mod sessions;
pub mod setup;
pub mod status;
pub mod up;
pub mod watch;
pub mod worker;

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

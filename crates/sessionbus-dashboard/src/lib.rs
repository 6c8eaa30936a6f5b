//! `sessionbus dashboard`: a live web view of the bus.
//!
//! One process serves a page (plain HTML, CSS and JavaScript embedded in the binary, no
//! build step) and reads the bus as the deploy/ `dashboard` user can: the read-only ops
//! (`snapshot`, `graph_page`, `tool_state`, the session list), `$SRV` and the events
//! subjects. Live updates reach the page as server-sent events. It never writes to the
//! bus and never creates a JetStream consumer.
//!
//! ```no_run
//! # async fn run(bus: sessionbus_nats::BusClient) -> Result<(), sessionbus_dashboard::DashboardError> {
//! use sessionbus_dashboard::{Dashboard, DashboardConfig};
//! let dashboard = Dashboard::bind(DashboardConfig::new("127.0.0.1:8080".parse().unwrap()), bus).await?;
//! println!("dashboard: {}", dashboard.url()?);
//! dashboard.serve(std::future::pending()).await
//! # }
//! ```

#![deny(unreachable_pub, rustdoc::broken_intra_doc_links)]

pub mod auth;
pub mod error;
pub mod listen;
mod routes;
mod server;
pub mod views;
pub mod workers;

pub use error::{DashboardError, DashboardErrorKind};
pub use routes::GRAPH_PAGE_LIMIT;
pub use server::{DEFAULT_LISTEN, Dashboard, DashboardConfig};

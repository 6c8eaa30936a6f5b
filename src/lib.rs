//! sessionbus: the session service contract of agent runtimes, carried over NATS.
//!
//! This facade re-exports the member crates so an application depends on one package.
//! [`api`] is the contract (traits, DTOs, errors, id rules, the in-memory host).

pub use sessionbus_api as api;
pub use sessionbus_api::{PluginError, SessionGraphService, SessionLifecycleService, SessionStateService};

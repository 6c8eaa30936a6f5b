//! lash `Provider`s for agent turns on the bus.
//!
//! - [`scripted`]: answers from a JSON script keyed by the request's content, for tests
//!   and the offline demo (a retried turn gets the same answers).

pub mod scripted;

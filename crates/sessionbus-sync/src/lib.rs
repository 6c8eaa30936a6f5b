//! The one lock idiom and the one retry backoff every sessionbus crate shares.
//!
//! - [`MutexExt::lock_recover`] takes a `std::sync::Mutex` whether or not a panicking
//!   thread poisoned it (see [`lock`] for why that is right here).
//! - [`Backoff`] is the pause between two attempts of anything that is retried or polled:
//!   fixed, doubling or growing linearly, optionally jittered, optionally bounded by a
//!   deadline that no pause runs past.
//!
//! ```
//! use std::sync::Mutex;
//! use std::time::Duration;
//!
//! use sessionbus_sync::{Backoff, MutexExt as _};
//!
//! let seen = Mutex::new(Vec::new());
//! seen.lock_recover().push(1);
//! assert_eq!(*seen.lock_recover(), [1]);
//!
//! let mut backoff = Backoff::exponential(Duration::from_millis(20), Duration::from_millis(50));
//! let pauses: Vec<_> = (0..4).filter_map(|_| backoff.next_pause()).collect();
//! assert_eq!(pauses, [20, 40, 50, 50].map(Duration::from_millis));
//! ```

#![deny(missing_docs, unreachable_pub, rustdoc::broken_intra_doc_links)]

pub mod backoff;
pub mod lock;

pub use backoff::Backoff;
pub use lock::MutexExt;

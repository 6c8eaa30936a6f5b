//! [`MutexExt::lock_recover`]: the lock idiom of the workspace.
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it; `lock()` then
//! returns an error forever after. Every critical section in sessionbus is a short
//! update that leaves the value usable at each step (a push, an insert, a counter, a
//! replaced field), so a value left behind by a panic is still a valid value, and
//! refusing it would turn one panicking task into a failure of every other caller.
//! `lock_recover` takes the guard in both cases. Code whose critical section could leave
//! a half-made value must not hold a `std::sync::Mutex` across it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The lock idiom of the workspace, as a method on `std::sync::Mutex`.
pub trait MutexExt<T: ?Sized> {
    /// Locks the mutex, taking the guard also when a panicking thread poisoned it.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// use sessionbus_sync::MutexExt as _;
    ///
    /// let counter = Arc::new(Mutex::new(0));
    /// let poisoner = Arc::clone(&counter);
    /// let _ = std::thread::spawn(move || {
    ///     let _guard = poisoner.lock_recover();
    ///     panic!("poisons the lock");
    /// })
    /// .join();
    /// *counter.lock_recover() += 1;
    /// assert_eq!(*counter.lock_recover(), 1);
    /// ```
    fn lock_recover(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn lock_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

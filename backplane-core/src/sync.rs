//! The poison-tolerant lock: one helper for every crate that guards plain state with a
//! [`Mutex`].

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `mutex`, taking it over even if a thread panicked while holding it.
///
/// The state guarded with this helper stays consistent across a panic (each critical
/// section either completes or leaves data a reader can still use), so the poison flag
/// carries no information and a panicked task must not take the rest of the node down.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_over() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let poisoner = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }
}

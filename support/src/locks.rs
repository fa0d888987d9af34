//! One async lock per key (an app's builds, pushes, deploys): whoever holds
//! it goes first, the next waits, and a waiter can say that it waits.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Async locks by key, made on first use.
#[derive(Debug)]
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

/// The turn of one key, held until dropped.
pub type Turn = OwnedMutexGuard<()>;

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    fn lock_of(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Waits for `key`'s turn.
    pub async fn lock(&self, key: &K) -> Turn {
        self.lock_of(key).lock_owned().await
    }

    /// `key`'s turn if it is free now.
    pub fn try_lock(&self, key: &K) -> Option<Turn> {
        self.lock_of(key).try_lock_owned().ok()
    }

    /// Takes `key`'s turn, running `waiting` first when someone else holds
    /// it (to say "waiting for the deploy in progress").
    pub async fn lock_or_say<F: std::future::Future<Output = ()>>(
        &self,
        key: &K,
        waiting: impl FnOnce() -> F,
    ) -> Turn {
        let lock = self.lock_of(key);
        if let Ok(turn) = lock.clone().try_lock_owned() {
            return turn;
        }
        waiting().await;
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_second_holder_of_a_key_waits_and_says_so_other_keys_do_not() {
        let locks: Arc<KeyedLocks<String>> = Arc::default();
        let first = locks.lock(&"demo".to_string()).await;
        assert!(locks.try_lock(&"demo".to_string()).is_none());
        assert!(locks.try_lock(&"other".to_string()).is_some());
        let (said, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _turn = locks
                    .lock_or_say(&"demo".to_string(), || async move {
                        said.send("waiting").unwrap();
                    })
                    .await;
            })
        };
        assert_eq!(heard.recv().await, Some("waiting"));
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
    }
}

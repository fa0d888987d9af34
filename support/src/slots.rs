//! A cap on connections: a slot is taken before each accept and held for
//! the connection's life, so that at the cap the rest wait in the kernel's
//! backlog. Reaching the cap is logged once, and again only after it eased.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `max` connections of one listener.
#[derive(Debug)]
pub struct Slots {
    free: Arc<Semaphore>,
    max: usize,
    /// What the log line names (`proxy`, `registry`).
    what: &'static str,
    at_cap: AtomicBool,
}

impl Slots {
    pub fn new(what: &'static str, max: usize) -> Slots {
        let max = max.max(1);
        Slots {
            free: Arc::new(Semaphore::new(max)),
            max,
            what,
            at_cap: AtomicBool::new(false),
        }
    }

    /// A slot, once one is free; given back when dropped.
    pub async fn take(&self) -> OwnedSemaphorePermit {
        let slot = match self.free.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !self.at_cap.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit = self.max,
                        "{}: connection cap reached; new connections wait until one closes",
                        self.what
                    );
                }
                self.free
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        if self.free.available_permits() > self.max / 2 {
            self.at_cap.store(false, Ordering::Relaxed);
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_next_waits_until_a_slot_is_given_back() {
        let slots = Arc::new(Slots::new("test", 2));
        let first = slots.take().await;
        let _second = slots.take().await;
        let third = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take().await })
        };
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "a third slot beyond the cap of 2");
        drop(first);
        let _third = third.await.unwrap();
    }
}

//! Which objects this process has just rewritten, for requests waiting on
//! one: a live playlist's blocking reload (LL-HLS `_HLS_msn`) waits here
//! instead of polling storage.
//!
//! One `watch` channel per key that someone waits on, holding a counter
//! the writer bumps after its `put` returned. A waiter subscribes before
//! it reads the object, so a write between its read and its wait is never
//! missed. Keys nobody waits on cost nothing: [`Changes::changed`] on such
//! a key finds no channel, and channels whose waiters are all gone are
//! dropped as keys are touched.
//!
//! It is in-process: a writer on another node is not seen here, so
//! waiters also re-read on a timer (the caller's bound).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
pub struct Changes {
    keys: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Changes {
    /// A receiver that sees every change of `key` from now on.
    pub fn subscribe(&self, key: &str) -> watch::Receiver<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() > 1024 {
            keys.retain(|_, sender| sender.receiver_count() > 0);
        }
        match keys.get(key) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(0);
                keys.insert(key.to_string(), sender);
                receiver
            }
        }
    }

    /// `key` was written: wakes everyone waiting on it.
    pub fn changed(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = keys.get(key) else {
            return;
        };
        if sender.receiver_count() == 0 {
            keys.remove(key);
            return;
        }
        sender.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_sees_a_change_made_after_it_subscribed() {
        let changes = Changes::default();
        changes.changed("a");
        let mut a = changes.subscribe("a");
        let b = changes.subscribe("b");
        assert!(!a.has_changed().unwrap());
        changes.changed("a");
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(!b.has_changed().unwrap(), "another key is not woken");
        drop((a, b));
        changes.changed("a");
        assert!(changes.keys.lock().unwrap().get("a").is_none());
    }
}

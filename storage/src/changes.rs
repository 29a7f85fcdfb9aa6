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
//! It is in-process; other nodes hear of a change through a relay the
//! caller installs ([`Changes::relay_to`]: delivery sends it over
//! PostgreSQL `NOTIFY`, and its listener calls [`Changes::wake`] here),
//! and waiters also re-read on a timer in case a notice was lost.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tokio::sync::watch;

/// Tells other nodes that a key changed.
pub type Relay = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct Changes {
    keys: Mutex<HashMap<String, watch::Sender<u64>>>,
    relay: OnceLock<Relay>,
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

    /// Also tells `relay` of every [`Self::changed`] key (once; later calls
    /// are ignored).
    pub fn relay_to(&self, relay: Relay) {
        let _ = self.relay.set(relay);
    }

    /// `key` was written here: wakes everyone waiting on it, on this node
    /// and, through the relay, on others.
    pub fn changed(&self, key: &str) {
        self.wake(key);
        if let Some(relay) = self.relay.get() {
            relay(key);
        }
    }

    /// `key` was written (here or elsewhere): wakes its waiters here.
    pub fn wake(&self, key: &str) {
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

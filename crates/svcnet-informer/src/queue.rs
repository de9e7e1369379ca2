//! A de-duplicating work queue of object keys, like client-go's `workqueue`: an informer's subscriber
//! turns events into keys, and a worker syncs them. A key added several times before a worker takes it is
//! synced once, and delayed re-adds (retries,
//! min-ready waits, progress deadlines) are timers held inside the queue, so dropping the queue drops
//! them too.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl Key {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Default)]
struct State {
    order: VecDeque<Key>,
    queued: HashSet<Key>,
    delayed: BTreeMap<(Instant, u64), Key>,
    seq: u64,
}

/// The queue; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl WorkQueue {
    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: Key) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.queued.insert(key.clone()) {
            st.order.push_back(key);
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: Key, delay: Duration) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.seq += 1;
        let seq = st.seq;
        st.delayed.insert((Instant::now() + delay, seq), key);
        drop(st);
        self.wake.notify_one();
    }

    /// Waits for the next key.
    pub async fn next(&self) -> Key {
        loop {
            // Register interest before looking, so an `add` between the look and the wait is not lost.
            let notified = self.wake.notified();
            let wake_at = {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                while let Some((&(at, seq), _)) = st.delayed.iter().next() {
                    if at > now {
                        break;
                    }
                    let key = st.delayed.remove(&(at, seq)).expect("present");
                    if st.queued.insert(key.clone()) {
                        st.order.push_back(key);
                    }
                }
                if let Some(k) = st.order.pop_front() {
                    st.queued.remove(&k);
                    return k;
                }
                st.delayed.keys().next().map(|(at, _)| *at)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedupes_keeps_order_and_delays() {
        let q = WorkQueue::default();
        q.add(Key::new("a", "1"));
        q.add(Key::new("a", "2"));
        q.add(Key::new("a", "1"));
        assert_eq!(q.next().await, Key::new("a", "1"));
        assert_eq!(q.next().await, Key::new("a", "2"));
        q.add_after(Key::new("a", "3"), Duration::from_millis(20));
        assert_eq!(q.next().await, Key::new("a", "3"));
    }
}

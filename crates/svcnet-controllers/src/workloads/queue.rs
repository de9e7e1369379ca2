//! A de-duplicating work queue of object keys, like client-go's `workqueue`: a key queued several
//! times before a worker takes it is processed once, and delayed re-queues (min-ready waits,
//! progress deadlines, retries after errors) are timers that add the key back later.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
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
}

/// The queue; cheap to clone (shared).
#[derive(Clone, Default)]
pub(crate) struct WorkQueue {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl WorkQueue {
    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: Key) {
        let mut st = self.state.lock().expect("queue lock");
        if st.queued.insert(key.clone()) {
            st.order.push_back(key);
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Queues `key` after `delay` (a timer; the key is de-duplicated when it fires).
    pub fn add_after(&self, key: Key, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Waits for the next key.
    pub async fn next(&self) -> Key {
        loop {
            // Register interest before looking, so an `add` between the look and the wait is not lost.
            let notified = self.wake.notified();
            {
                let mut st = self.state.lock().expect("queue lock");
                if let Some(k) = st.order.pop_front() {
                    st.queued.remove(&k);
                    return k;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedupes_and_keeps_order() {
        let q = WorkQueue::default();
        q.add(Key::new("a", "1"));
        q.add(Key::new("a", "2"));
        q.add(Key::new("a", "1"));
        assert_eq!(q.next().await, Key::new("a", "1"));
        assert_eq!(q.next().await, Key::new("a", "2"));
        q.add_after(Key::new("a", "3"), Duration::from_millis(10));
        assert_eq!(q.next().await, Key::new("a", "3"));
    }
}

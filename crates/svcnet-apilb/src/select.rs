//! Which API server the next connection goes to (pure: no I/O, no clock).
//!
//! The balancer is *sticky*, as k3s' agent load balancer is: every connection goes to the current
//! server while it stays healthy, so one node's watches and writes see one server's watch cache, and a
//! switch happens only when that server fails. Then the next healthy server in the configured order
//! (wrapping around) becomes current. When no server is known healthy, every server is still tried in
//! order: a health check can lag behind a server that just came back, and refusing all connections
//! would be worse than a failed dial.

/// The health of each server and which one is current.
#[derive(Debug, Clone)]
pub struct Selector {
    healthy: Vec<bool>,
    current: usize,
}

/// A change of the current server, for the log and the switch counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The server connections went to before.
    pub from: usize,
    /// The server they go to now.
    pub to: usize,
}

impl Selector {
    /// `n` servers (at least one), all assumed healthy until a check or a dial says otherwise; the
    /// first is current.
    pub fn new(n: usize) -> Selector {
        assert!(n > 0, "at least one server");
        Selector {
            healthy: vec![true; n],
            current: 0,
        }
    }

    /// The current server.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Whether server `i` is healthy as far as is known.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.healthy[i]
    }

    /// The servers to dial for a new connection, in order: the current one (if healthy), the other
    /// healthy ones after it, then the unhealthy ones after it (the last resort).
    pub fn candidates(&self) -> Vec<usize> {
        let n = self.healthy.len();
        let ring = (0..n).map(|k| (self.current + k) % n);
        let (up, down): (Vec<usize>, Vec<usize>) = ring.partition(|&i| self.healthy[i]);
        up.into_iter().chain(down).collect()
    }

    /// Records the health of server `i` (a check's result, or a failed dial); a current server that
    /// fails hands over to the next healthy one.
    pub fn set_health(&mut self, i: usize, healthy: bool) -> Option<Switch> {
        self.healthy[i] = healthy;
        if healthy && !self.healthy[self.current] {
            return self.switch_to(i);
        }
        if !healthy && i == self.current {
            let n = self.healthy.len();
            let next = (1..n).map(|k| (i + k) % n).find(|&j| self.healthy[j])?;
            return self.switch_to(next);
        }
        None
    }

    /// A connection to `i` succeeded while the current server could not be dialled: `i` is current now.
    pub fn connected(&mut self, i: usize) -> Option<Switch> {
        self.healthy[i] = true;
        if i != self.current && !self.healthy[self.current] {
            return self.switch_to(i);
        }
        None
    }

    fn switch_to(&mut self, to: usize) -> Option<Switch> {
        let from = std::mem::replace(&mut self.current, to);
        (from != to).then_some(Switch { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticks_to_the_current_server_until_it_fails() {
        let mut s = Selector::new(3);
        assert_eq!(s.candidates(), [0, 1, 2]);
        // Another server failing changes nothing for new connections but its place in the order.
        assert_eq!(s.set_health(1, false), None);
        assert_eq!(s.candidates(), [0, 2, 1]);
        // The current one failing moves to the next healthy one after it.
        assert_eq!(s.set_health(0, false), Some(Switch { from: 0, to: 2 }));
        assert_eq!(s.candidates(), [2, 0, 1]);
        // The first server coming back does not take the connections back: the current one is healthy.
        assert_eq!(s.set_health(0, true), None);
        assert_eq!(s.current(), 2);
        assert_eq!(s.candidates(), [2, 0, 1]);
    }

    #[test]
    fn with_none_healthy_every_server_is_still_tried() {
        let mut s = Selector::new(2);
        assert_eq!(s.set_health(0, false), Some(Switch { from: 0, to: 1 }));
        assert_eq!(s.set_health(1, false), None);
        assert_eq!(s.candidates(), [1, 0]);
        // Whichever answers first becomes current.
        assert_eq!(s.connected(0), Some(Switch { from: 1, to: 0 }));
        assert_eq!(s.candidates(), [0, 1]);
        // A server coming back while the current one is down takes over.
        let mut s = Selector::new(3);
        s.set_health(1, false);
        s.set_health(2, false);
        assert_eq!(s.set_health(0, false), None);
        assert_eq!(s.set_health(2, true), Some(Switch { from: 0, to: 2 }));
    }

    #[test]
    fn a_single_server_stays_current() {
        let mut s = Selector::new(1);
        assert_eq!(s.set_health(0, false), None);
        assert_eq!(s.candidates(), [0]);
        assert_eq!(s.set_health(0, true), None);
    }
}

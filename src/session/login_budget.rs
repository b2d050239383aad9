//! How many handshakes one uid may start per window. The replay cache
//! behind the handshake is global and bounded (it must refuse rather than
//! forget), so without a share per uid one local user flooding the control
//! socket could fill it and lock everyone else out, and keep the fog node
//! busy signing replies. The uid is the kernel's (`SO_PEERCRED`), not a claim.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub struct LoginBudget {
    window: Duration,
    per_uid: usize,
    /// Per uid, when each of its handshakes in the window started (oldest first).
    starts: HashMap<u32, VecDeque<Instant>>,
}

impl LoginBudget {
    pub fn new(window: Duration, per_uid: usize) -> Self {
        LoginBudget { window, per_uid, starts: HashMap::new() }
    }

    /// Count a handshake `uid` starts at `now`; false (and not counted) when
    /// its share of the window is spent.
    pub fn admit(&mut self, uid: u32, now: Instant) -> bool {
        let window = self.window;
        // Every uid's old starts go, so the map holds only the window's uids.
        self.starts.retain(|_, q| {
            while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
                q.pop_front();
            }
            !q.is_empty()
        });
        let q = self.starts.entry(uid).or_default();
        if q.len() >= self.per_uid {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uid_spending_its_share_leaves_the_others_theirs_until_the_window_passes() {
        let mut b = LoginBudget::new(Duration::from_secs(300), 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(b.admit(1000, t0 + Duration::from_secs(i)));
        }
        assert!(!b.admit(1000, t0 + Duration::from_secs(10)), "a fourth start within the window");
        assert!(b.admit(1001, t0 + Duration::from_secs(10)), "another uid is not affected");
        // Refused starts are not counted: the first one ages out on time.
        assert!(!b.admit(1000, t0 + Duration::from_secs(299)));
        assert!(b.admit(1000, t0 + Duration::from_secs(300)));
        assert!(!b.admit(1000, t0 + Duration::from_secs(300)));
        assert!(b.admit(1000, t0 + Duration::from_secs(301)));
        // Past the window every uid starts afresh, and the map forgets them.
        assert!(b.admit(1000, t0 + Duration::from_secs(1000)));
        assert_eq!(b.starts.len(), 1);
    }
}

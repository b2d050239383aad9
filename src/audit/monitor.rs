//! Insider detection: per-uid access profiles checked against the policy's
//! thresholds, and the alerts they raise (audit record, alerts file,
//! syslog/journald through `logger`, optional webhook; optionally a session
//! lock). Alerts name users, uids, sessions, rules and counts — never file
//! names or patients (the sealed audit log has those).

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::FastMap;
use serde::{Deserialize, Serialize};

/// Thresholds, from the signed policy (`admin alerts set`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InsiderRules {
    /// Distinct patients one uid may open within `window_secs`.
    pub max_patients: u32,
    pub window_secs: u64,
    /// A bulk copy: this many distinct patients within `bulk_secs`.
    pub bulk_patients: u32,
    pub bulk_secs: u64,
    /// Bytes one uid may read per minute (MiB).
    pub max_mib_per_min: u64,
    /// Lock the session (all folder access `EACCES`) when an alert fires.
    pub lock_on_alert: bool,
    /// POST each alert as JSON here (http:// or https://).
    pub webhook: Option<String>,
}

impl Default for InsiderRules {
    fn default() -> Self {
        // A clinician looks at a handful of patients and whole studies; a
        // thief walks a department. Room for the first, not the second.
        InsiderRules {
            max_patients: 40,
            window_secs: 3600,
            bulk_patients: 8,
            bulk_secs: 60,
            max_mib_per_min: 2048,
            lock_on_alert: true,
            webhook: None,
        }
    }
}

/// An alert, as written to the alerts file and the webhook.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub time: u64,
    pub rule: &'static str,
    pub uid: u32,
    pub user: Option<String>,
    pub session: Option<String>,
    /// What was counted (patients, MiB) and the limit, or the decoy's inode.
    pub detail: String,
    pub locked: bool,
}

/// Distinct patients opened within a sliding window, in amortised O(1) per
/// open (every open of a busy mount passes here). Times are whole seconds
/// since the monitor started, so the queue holds at most one entry per
/// patient and second. Patients are the names map's shared strings: an open
/// copies no name.
#[derive(Default)]
struct DistinctWindow {
    /// (second, patient), oldest first.
    order: VecDeque<(u64, Arc<str>)>,
    /// patient → the last second it was opened.
    latest: FastMap<Arc<str>, u64>,
}

impl DistinctWindow {
    /// Count `patient` at second `now`; returns the distinct patients of the
    /// last `secs` seconds.
    fn add(&mut self, now: u64, secs: u64, patient: &Arc<str>) -> usize {
        match self.latest.get_mut(patient) {
            Some(t) if *t == now => {}
            Some(t) => {
                *t = now;
                self.order.push_back((now, Arc::clone(patient)));
            }
            None => {
                self.latest.insert(Arc::clone(patient), now);
                self.order.push_back((now, Arc::clone(patient)));
            }
        }
        while let Some((t, p)) = self.order.front() {
            if now.saturating_sub(*t) < secs {
                break;
            }
            if self.latest.get(p) == Some(t) {
                self.latest.remove(p);
            }
            self.order.pop_front();
        }
        self.latest.len()
    }
}

#[derive(Default)]
struct Profile {
    /// Patients opened within the bulk-copy window and the long window.
    bulk: DistinctWindow,
    window: DistinctWindow,
    /// (second, bytes read in it) for the last minute, and their sum: one
    /// entry per second, however many reads it had.
    reads: VecDeque<(u64, u64)>,
    read_bytes: u64,
    /// Rules that already fired for this uid (one alert each per session).
    fired: HashSet<&'static str>,
}

pub struct Monitor {
    profiles: Mutex<FastMap<u32, Profile>>,
    alerts_file: PathBuf,
    started: Instant,
}

impl Monitor {
    pub fn new(alerts_file: PathBuf) -> Self {
        Monitor { profiles: Mutex::default(), alerts_file, started: Instant::now() }
    }

    /// An open of `patient` by `uid`: the rules it breaks now (each once).
    pub fn on_open(&self, uid: u32, patient: &Arc<str>, rules: &InsiderRules) -> Vec<(&'static str, String)> {
        let mut all = self.profiles.lock();
        // Read under the lock, so the windows see seconds in order.
        let now = self.started.elapsed().as_secs();
        let p = all.entry(uid).or_default();
        let mut out = Vec::new();
        let bulk = p.bulk.add(now, rules.bulk_secs, patient);
        if bulk >= rules.bulk_patients as usize && p.fired.insert("bulk-copy") {
            out.push((
                "bulk-copy",
                format!("{bulk} patients in {} s (limit {})", rules.bulk_secs, rules.bulk_patients),
            ));
        }
        let window = p.window.add(now, rules.window_secs, patient);
        if window > rules.max_patients as usize && p.fired.insert("patients") {
            out.push((
                "patients",
                format!("{window} patients in {} s (limit {})", rules.window_secs, rules.max_patients),
            ));
        }
        out
    }

    /// `bytes` read by `uid`: the rules it breaks now. The minute slides by
    /// whole seconds.
    pub fn on_read(&self, uid: u32, bytes: u64, rules: &InsiderRules) -> Vec<(&'static str, String)> {
        let mut all = self.profiles.lock();
        // Read under the lock, so the queue's seconds never go backwards.
        let now = self.started.elapsed().as_secs();
        let p = all.entry(uid).or_default();
        // Seconds now-60..now: never less than a minute of reads.
        while let Some(&(t, b)) = p.reads.front() {
            if now.saturating_sub(t) <= 60 {
                break;
            }
            p.read_bytes -= b;
            p.reads.pop_front();
        }
        match p.reads.back_mut() {
            Some((t, b)) if *t == now => *b += bytes,
            _ => p.reads.push_back((now, bytes)),
        }
        p.read_bytes += bytes;
        let total = p.read_bytes;
        if total > rules.max_mib_per_min << 20 && p.fired.insert("bytes") {
            return vec![("bytes", format!("{} MiB in 60 s (limit {})", total >> 20, rules.max_mib_per_min))];
        }
        Vec::new()
    }

    /// A new session for `uid` may raise each alert again. Its access
    /// windows carry on: logging in again must not wipe the count of a bulk
    /// copy in progress.
    pub fn rearm(&self, uid: u32) {
        if let Some(p) = self.profiles.lock().get_mut(&uid) {
            p.fired.clear();
        }
    }

    /// Forget `uid`'s profile (an admin lifted the lock an alert set).
    pub fn forget(&self, uid: u32) {
        self.profiles.lock().remove(&uid);
    }

    /// Deliver an alert: alerts file (JSON line, fsynced), syslog/journald
    /// and the webhook (both off the caller's thread).
    pub fn deliver(&self, alert: &Alert, webhook: Option<&str>) {
        let line = serde_json::to_string(alert).expect("alert serializes");
        let written =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.alerts_file).and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write the alerts file");
        }
        tracing::warn!(rule = alert.rule, uid = alert.uid, user = ?alert.user, locked = alert.locked, "ALERT");
        let text = format!(
            "fogvault ALERT rule={} uid={} user={} session={} locked={} {}",
            alert.rule,
            alert.uid,
            alert.user.as_deref().unwrap_or("-"),
            alert.session.as_deref().unwrap_or("-"),
            alert.locked,
            alert.detail
        );
        let hook = webhook.map(str::to_string);
        let body = line;
        std::thread::spawn(move || {
            // syslog/journald: `logger` talks to whichever the host runs.
            let _ = std::process::Command::new("logger").args(["-t", "fogvault", "-p", "auth.alert", &text]).status();
            if let Some(url) = hook {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
                if let Err(e) = agent.post(&url).header("Content-Type", "application/json").send(body.as_bytes()) {
                    tracing::error!(error = %e, "alert webhook failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handful_of_patients_is_quiet_a_department_is_not() {
        let m = Monitor::new(std::env::temp_dir().join("fogvault-test-alerts"));
        let rules = InsiderRules { bulk_patients: 5, bulk_secs: 60, ..InsiderRules::default() };
        for p in ["a", "b", "c", "a", "a", "b"] {
            assert!(m.on_open(1, &p.into(), &rules).is_empty(), "three patients, some twice");
        }
        assert!(m.on_open(1, &"d".into(), &rules).is_empty());
        let fired = m.on_open(1, &"e".into(), &rules);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].0, "bulk-copy");
        assert!(m.on_open(1, &"f".into(), &rules).is_empty(), "each rule fires once");
        assert!(m.on_open(2, &"x".into(), &rules).is_empty(), "profiles are per uid");
        let small = InsiderRules { max_mib_per_min: 1, ..rules.clone() };
        assert!(m.on_read(3, 600 << 10, &small).is_empty());
        assert_eq!(m.on_read(3, 600 << 10, &small)[0].0, "bytes");
    }

    #[test]
    fn logging_in_again_keeps_the_count_an_admin_unlock_clears_it() {
        let m = Monitor::new(std::env::temp_dir().join("fogvault-test-alerts"));
        let rules = InsiderRules { bulk_patients: 5, bulk_secs: 60, ..InsiderRules::default() };
        for p in ["a", "b", "c", "d"] {
            assert!(m.on_open(1, &p.into(), &rules).is_empty());
        }
        m.rearm(1); // a new login
        assert_eq!(m.on_open(1, &"e".into(), &rules)[0].0, "bulk-copy", "five patients across two sessions");
        m.rearm(1);
        assert_eq!(m.on_open(1, &"f".into(), &rules)[0].0, "bulk-copy", "a new session may alert again");
        m.forget(1); // the admin unlocked the user
        assert!(m.on_open(1, &"g".into(), &rules).is_empty(), "a fresh profile after the unlock");
    }

    #[test]
    fn reads_are_counted_per_second_not_per_call() {
        let m = Monitor::new(std::env::temp_dir().join("fogvault-test-alerts"));
        let rules = InsiderRules { max_mib_per_min: 1, ..InsiderRules::default() };
        for _ in 0..255 {
            assert!(m.on_read(1, 4096, &rules).is_empty());
        }
        let all = m.profiles.lock();
        assert!(all[&1].reads.len() <= 2, "one entry per second (the loop may straddle one)");
        assert_eq!(all[&1].read_bytes, 255 * 4096);
        drop(all);
        assert_eq!(m.on_read(1, 8192, &rules)[0].0, "bytes", "the sum still counts every byte");
    }

    #[test]
    fn distinct_patients_slide_out_of_the_window() {
        let mut w = DistinctWindow::default();
        assert_eq!(w.add(0, 60, &"a".into()), 1);
        assert_eq!(w.add(0, 60, &"a".into()), 1, "the same patient twice in a second");
        assert_eq!(w.add(10, 60, &"b".into()), 2);
        assert_eq!(w.add(59, 60, &"a".into()), 2, "a seen again at 59");
        assert_eq!(w.add(65, 60, &"c".into()), 3, "b (10) still inside: 65 - 10 < 60");
        assert_eq!(w.add(70, 60, &"c".into()), 2, "b has left; a (59) and c remain");
        assert_eq!(w.add(200, 60, &"d".into()), 1, "everything older is gone");
        assert_eq!(w.order.len(), 1, "expired entries are dropped");
        for s in 0..10_000 {
            w.add(300 + s / 100, 3600, &"same".into());
        }
        // A caller with an older clock reading than the queue's newest: counted, no underflow.
        assert_eq!(w.add(299, 3600, &"late".into()), 3);
        assert!(w.order.len() <= 102, "one entry per patient and second");
    }
}

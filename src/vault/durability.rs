//! Making changes durable: the intent log (one flush per durable close),
//! checkpoints of the packs and the index, and its replay after a crash.

use std::path::Path;
use std::time::Duration;

use super::Vault;
use super::intent_log::{self, IntentLog};
use crate::chunk_store::restore_staged;
use crate::error::{Error, Result};
use crate::metadata::{Metadata, Timespec};

impl Vault {
    /// Apply what the intent log holds beyond the index (an unclean stop),
    /// then open it afresh. No log (it cannot be created): `None`.
    pub(super) fn replay_intents(meta: &Metadata, cache_dir: &Path) -> Result<Option<IntentLog>> {
        let path = cache_dir.join("intent.log");
        let records = IntentLog::read(&path)
            .map_err(|e| Error::Repo(format!("cannot read the intent log {}: {e}", path.display())))?;
        let intent_log::Replay { txns, blobs, gap } = intent_log::to_replay(records, meta.stored_txn()?);
        if gap {
            tracing::error!(
                "the intent log skips transactions after the index's newest; replayed up to the gap, \
                 log kept as intent-gap-<secs>.log"
            );
            // Keep the evidence: the log is cleared below.
            let kept = cache_dir.join(format!("intent-gap-{}.log", Timespec::now().secs));
            if let Err(e) = std::fs::copy(&path, &kept) {
                tracing::error!(error = %e, "cannot keep a copy of the intent log");
            }
        }
        if !txns.is_empty() || !blobs.is_empty() {
            let restored = restore_staged(&cache_dir.join("staging"), &blobs)?;
            meta.replay(&txns)?;
            tracing::info!(transactions = txns.len(), envelopes = restored, "replayed the intent log");
        }
        match IntentLog::create(&path, intent_log::CAPACITY) {
            Ok(log) => Ok(Some(log)),
            Err(e) => {
                tracing::warn!(error = %e, "no intent log: every close will sync the packs and the index");
                Ok(None)
            }
        }
    }

    /// Transactions the intent log in `cache_dir` holds beyond what `meta`
    /// (that cache's index) has: a vault stopped uncleanly, or one mounted
    /// now. The next mount applies them; tools reading the index alone do
    /// not see them.
    pub fn unapplied_intents(meta: &Metadata, cache_dir: &Path) -> Result<u64> {
        let records = IntentLog::read(&cache_dir.join("intent.log")).map_err(Error::from_io)?;
        Ok(intent_log::to_replay(records, meta.stored_txn()?).txns.len() as u64)
    }

    /// Make every change so far durable: one intent-log record holding the
    /// transactions and envelopes not yet durable, with a single fdatasync
    /// (concurrent callers share it). Falls back to a checkpoint.
    pub(super) fn durable(&self) -> Result<()> {
        let Some(log) = &self.intent else { return self.checkpoint() };
        let target = self.meta.last_txn();
        let mut log = log.lock();
        let done = |log: &IntentLog| target <= log.logged_txn().max(self.meta.synced_txn());
        if done(&log) {
            return Ok(());
        }
        if log.needs_checkpoint {
            return self.checkpoint_locked(&mut log);
        }
        // Transactions first, then envelopes: every envelope a taken
        // transaction references was stored before it, so it is taken too.
        let txns = self.meta.take_unlogged();
        if txns.is_empty() {
            // The metadata-journal upload synced them meanwhile (or a bug
            // lost them: a checkpoint covers both).
            return if done(&log) { Ok(()) } else { self.checkpoint_locked(&mut log) };
        }
        // From here on the taken transactions are in no queue: until a record
        // or a checkpoint holds them, every caller must checkpoint.
        log.needs_checkpoint = true;
        let store = self.chunks.store();
        let blobs = match store.take_unlogged(intent_log::INLINE_MAX) {
            Ok(Some(blobs)) => Some(blobs),
            Ok(None) => store.sync().ok().map(|()| Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read back staged envelopes; checkpointing instead");
                None
            }
        };
        let Some(blobs) = blobs else { return self.checkpoint_locked(&mut log) };
        match log.append(&intent_log::Record { txns, blobs }) {
            Ok(true) => {
                log.needs_checkpoint = false;
                Ok(())
            }
            Ok(false) => self.checkpoint_locked(&mut log),
            Err(e) => {
                tracing::warn!(error = %e, "intent log write failed; checkpointing instead");
                self.checkpoint_locked(&mut log)
            }
        }
    }

    /// Sync the staged packs, commit the in-memory overlay to LMDB and sync
    /// it: every intent-log record is obsolete then, and the log starts over.
    pub(super) fn checkpoint(&self) -> Result<()> {
        match &self.intent {
            Some(log) => self.checkpoint_locked(&mut log.lock()),
            None => {
                self.chunks.store().sync()?;
                self.meta.sync()
            }
        }
    }

    /// The log restarts only here, with the log locked: after the packs are
    /// synced (the log may be the only durable copy of envelopes a
    /// transaction synced by the metadata upload references) and LMDB is
    /// synced past every transaction the log holds.
    fn checkpoint_locked(&self, log: &mut IntentLog) -> Result<()> {
        log.needs_checkpoint = true;
        self.chunks.store().sync()?;
        self.meta.sync()?;
        if log.logged_txn() <= self.meta.synced_txn() {
            log.restart();
        }
        log.needs_checkpoint = false;
        Ok(())
    }

    /// Commit and sync namespace changes deferred for longer than `age`
    /// (mkdir, rename, unlink… nobody fsynced). Called every second by the
    /// mount loop, so they reach stable storage within about two seconds.
    pub fn sync_deferred(&self, age: Duration) -> Result<()> {
        if self.meta.deferred_for(age) {
            self.checkpoint()?;
        }
        Ok(())
    }
}

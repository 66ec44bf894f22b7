//! One agent's timer: sleeps until the next tick of its schedule (on the node's own
//! wall clock, no hub needed), then starts one run. A tick while the previous run
//! still runs is skipped and counted. Ticks missed while the node was down (or
//! while this loop could not keep up) owe one run, the latest, not one each: no
//! catch-up storm. The last tick run is kept in the store across restarts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::schedule::{Jitter, Schedule};
use crate::store::Store;

/// Longest single sleep: the wall clock is looked at again after this, so a clock
/// set (NTP on a board without an RTC) moves the next run with it.
const MAX_NAP: Duration = Duration::from_secs(5);

/// One tick to run.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// The tick of the schedule this run is for.
    pub scheduled_at: Timestamp,
    /// When the run was started.
    pub fired_at: Timestamp,
    /// Runs started since the agent was loaded, from 1.
    pub tick: u64,
}

/// A timer's schedule and what it did, shared with `agents`.
pub struct TimerState {
    schedule: Schedule,
    jitter: Option<Jitter>,
    next_run: Mutex<Option<Timestamp>>,
    last_run: Mutex<Option<Timestamp>>,
    pub skipped: AtomicU64,
    /// The task of the last run started, kept so that the next tick can tell
    /// whether it still runs and a stopping agent can wait for it.
    run: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TimerState {
    /// `None` when the spec has no schedule. The spec was checked, so it parses.
    pub fn new(
        entries: &[String],
        timezone: Option<&str>,
        jitter: Option<&str>,
    ) -> Result<Option<Self>, String> {
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            schedule: Schedule::parse(entries, timezone)?,
            jitter: jitter.map(Jitter::parse).transpose()?,
            next_run: Mutex::new(None),
            last_run: Mutex::new(None),
            skipped: AtomicU64::new(0),
            run: Mutex::new(None),
        }))
    }

    pub fn next_run(&self) -> Option<String> {
        stamp(&self.next_run)
    }

    pub fn last_run(&self) -> Option<String> {
        stamp(&self.last_run)
    }

    /// The last run's task, to wait for once the timer itself has stopped.
    pub fn take_run(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.run.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn running(&self) -> bool {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        run.as_ref().is_some_and(|r| !r.is_finished())
    }
}

fn stamp(at: &Mutex<Option<Timestamp>>) -> Option<String> {
    at.lock().unwrap_or_else(|e| e.into_inner()).map(rfc3339)
}

/// A timestamp as the payload and `agents` show it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string()
}

/// Runs the timer of agent `name` until the task is aborted. `fire` starts one run
/// and hands back its task, which `state` keeps: the next tick can tell whether it
/// still runs, and the agent's stop waits for it ([`TimerState::take_run`]).
pub async fn run<F>(name: String, seed: String, state: Arc<TimerState>, store: Store, fire: F)
where
    F: Fn(Tick) -> tokio::task::JoinHandle<()>,
{
    let now = Timestamp::now();
    let last = store.last_tick(&name).unwrap_or_else(|e| {
        tracing::warn!(agent = %name, "cannot read the timer's last tick: {e}");
        None
    });
    // After downtime: the latest missed tick, once.
    let mut owed = last
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .and_then(|last| state.schedule.last_between(last, now));
    let mut after = now;
    let mut ticks = 0u64;
    loop {
        let (scheduled, fire_at) = match owed.take() {
            Some(missed) => (missed, Timestamp::now()),
            None => {
                let Some(next) = state.schedule.next_after(after) else {
                    tracing::warn!(agent = %name, "schedule has no next tick; timer stops");
                    return;
                };
                let offset = state
                    .jitter
                    .map(|j| j.offset(&seed, state.schedule.period_near(next)))
                    .unwrap_or_default();
                (next, next + offset)
            }
        };
        *state.next_run.lock().unwrap_or_else(|e| e.into_inner()) = Some(fire_at);
        sleep_until(fire_at).await;
        after = scheduled;
        // This loop fell behind by more than a tick (a suspended board, a clock set
        // forward): the ticks in between owe one run, the latest.
        let now = Timestamp::now();
        if let Some(latest) = state.schedule.last_between(scheduled, now) {
            owed = Some(latest);
        }
        if state.running() {
            state.skipped.fetch_add(1, Relaxed);
            tracing::debug!(agent = %name, scheduled = %scheduled, "tick skipped: the previous run still runs");
            continue;
        }
        if let Err(e) = store.set_last_tick(&name, scheduled.as_millisecond()) {
            tracing::warn!(agent = %name, "cannot record the timer's tick: {e}");
        }
        ticks += 1;
        *state.last_run.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        let run = fire(Tick {
            scheduled_at: scheduled,
            fired_at: now,
            tick: ticks,
        });
        *state.run.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
    }
}

/// Sleeps until the wall clock reads `at`, in naps of at most [`MAX_NAP`].
async fn sleep_until(at: Timestamp) {
    loop {
        let left = at.duration_since(Timestamp::now());
        let Ok(left) = Duration::try_from(left) else {
            return; // negative: due
        };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(MAX_NAP)).await;
    }
}

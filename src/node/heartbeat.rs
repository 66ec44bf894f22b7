//! Heartbeats: every interval, sample the host and publish, fire and forget (the
//! latest one is what matters).

use std::path::Path;
use std::sync::Arc;

use async_nats::Client;
use sysinfo::System;

use super::NodeState;
use crate::protocol::Heartbeat;
use crate::shutdown::Shutdown;

pub(super) async fn run(state: Arc<NodeState>, client: Client, mut shutdown: Shutdown) {
    let mut metrics = Metrics::new();
    let mut ticker = tokio::time::interval(state.config.heartbeat.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subject = state.subjects.heartbeat(&state.config.node.id);
    let mut seq = 0u64;
    while !shutdown.is_shutdown() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.recv() => return,
        }
        if seq == 0 {
            // The first heartbeat should say whether the hub is there, not guess.
            super::hub_link::probe(&state, &client).await;
        }
        seq += 1;
        let hb = heartbeat(&state, &mut metrics, seq);
        match serde_json::to_vec(&hb) {
            Ok(body) => match client.publish(subject.clone(), body.into()).await {
                Ok(()) => {
                    state
                        .heartbeats_sent
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("heartbeat {seq} not sent: {e}"),
            },
            Err(e) => tracing::error!("heartbeat {seq} not serializable: {e}"),
        }
    }
}

fn heartbeat(state: &NodeState, metrics: &mut Metrics, seq: u64) -> Heartbeat {
    let info = state.info();
    let sample = metrics.sample(&state.config.node.state_dir);
    Heartbeat {
        node_id: info.node_id,
        name: info.name,
        version: info.version,
        os: info.os,
        arch: info.arch,
        tags: info.tags,
        started_at: info.started_at,
        uptime_s: info.uptime_s,
        seq,
        interval_s: info.interval_s,
        cpu_pct: sample.cpu_pct,
        load1: sample.load1,
        mem_used: sample.mem_used,
        mem_total: sample.mem_total,
        disk_free: sample.disk_free,
        agents: info.agents,
        invocations: state.agents.invocations(),
        outbox: state.outbox.stats(),
        logs: state.log_store.stats(),
        hub_link: info.hub_link,
        wasm_compiler: info.wasm_compiler,
        engine: info.engine,
        location: info.location,
        enc_key: info.enc_key,
        upgrade: info.upgrade,
    }
}

/// Host metrics. The `System` is kept between samples because CPU usage is a
/// difference between two refreshes.
struct Metrics {
    /// `None` where sysinfo cannot read this host; metrics then report zeros.
    sys: Option<System>,
}

struct Sample {
    cpu_pct: f32,
    load1: f64,
    mem_used: u64,
    mem_total: u64,
    disk_free: u64,
}

impl Metrics {
    fn new() -> Self {
        let sys = System::new()
            .inspect_err(|e| tracing::warn!("host metrics unavailable: {e}"))
            .ok()
            .map(|mut sys| {
                sys.refresh_cpu_usage();
                sys
            });
        Self { sys }
    }

    fn sample(&mut self, state_dir: &Path) -> Sample {
        let (cpu_pct, mem_used, mem_total) = match &mut self.sys {
            Some(sys) => {
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                (
                    sys.global_cpu_usage(),
                    sys.used_memory(),
                    sys.total_memory(),
                )
            }
            None => (0.0, 0, 0),
        };
        Sample {
            cpu_pct,
            load1: System::load_average().map(|l| l.one).unwrap_or(0.0),
            mem_used,
            mem_total,
            disk_free: disk_free(state_dir),
        }
    }
}

/// Free bytes (for unprivileged users) on the file system holding `dir`.
///
/// statvfs on the directory itself, rather than matching sysinfo's disk list by
/// mount point: that list leaves out tmpfs and overlay mounts, which are common for
/// state directories on boards and in containers.
fn disk_free(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs fills the zeroed struct; c is a valid NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
    }
}

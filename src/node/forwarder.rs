//! Outbox → hub. Publishes buffered results and events (or, from the log store,
//! log lines) in order to the hub's `EDGELEAF_TELEMETRY` (or `EDGELEAF_LOGS`)
//! stream with JetStream acks and `Nats-Msg-Id =
//! <node>:<incarnation>:<seq>` (replays inside the stream's duplicate window are
//! dropped by the hub), keeps a bounded number of acks in flight, and removes an
//! entry only after its ack. After a failure it first asks the hub which of the
//! waiting entries it holds already, and removes exactly those: the duplicate
//! window alone does not cover a retry after a long outage.
//!
//! Which ones, not "everything up to the newest one there": acks are awaited
//! [`IN_FLIGHT`] at a time, so when the hub loses a few records for a moment (a
//! leader election, a link that drops and comes back), later ones in the window are
//! stored behind the gap. The hub is read from the stream position of the last
//! entry acknowledged in order (the outbox's hub mark, kept across restarts), which
//! bounds the read to what was in flight.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, Context as JetStream};
use futures::StreamExt;

use super::agents::publish_event;
use super::telemetry::Telemetry;
use crate::protocol::{LOGS_STREAM, Subjects, TELEMETRY_STREAM};
use crate::shutdown::Shutdown;
use crate::store::outbox::Outbox;

/// Entries read from the outbox at a time.
const BATCH: usize = 256;
/// Acks awaited at once. The window stays full across batches: under load the
/// forwarder never waits for the last ack of one batch before it sends the next.
const IN_FLIGHT: usize = 256;
/// Longest pause between retries while the hub does not acknowledge.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Header with the node-local sequence (for reconciliation after an outage).
pub const SEQ_HEADER: &str = "Edgeleaf-Seq";
pub const INCARNATION_HEADER: &str = "Edgeleaf-Incarnation";

/// What a forwarder carries, and so which hub stream takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// Results and events, into `EDGELEAF_TELEMETRY`.
    Telemetry,
    /// Log lines, into `EDGELEAF_LOGS`.
    Logs,
}

impl Carries {
    fn stream(self) -> &'static str {
        match self {
            Self::Telemetry => TELEMETRY_STREAM,
            Self::Logs => LOGS_STREAM,
        }
    }

    /// The second tokens of the subjects it publishes (`<prefix>.<kind>.<node>.…`).
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Telemetry => &["res", "evt"],
            Self::Logs => &["log"],
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Telemetry => "results/events",
            Self::Logs => "log lines",
        }
    }

    /// First part of the kinds of the events it sends (`outbox_dropped`, `logs_dropped` …).
    fn store(self) -> &'static str {
        match self {
            Self::Telemetry => "outbox",
            Self::Logs => "logs",
        }
    }
}

#[derive(Clone)]
pub struct Forwarder {
    pub carries: Carries,
    pub outbox: Arc<Outbox>,
    /// Where its own events (entries set aside) are recorded: the telemetry outbox.
    pub events: Telemetry,
    pub client: async_nats::Client,
    pub subjects: Subjects,
    pub node_id: String,
    pub incarnation: String,
    /// The hub's JetStream domain.
    pub domain: String,
    /// Flush at least this often in `batch` durability.
    pub flush_interval: Duration,
}

/// Writes the outboxes (the node's outbox and its log store) to disk every `every`
/// ([`Outbox::flush_all`]: what `batch` durability still holds in memory, then one
/// sled flush for both), on a blocking thread so the disk never stalls the
/// executor; once more on shutdown.
pub async fn keep_flushed(outboxes: Vec<Arc<Outbox>>, every: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.recv() => true,
            _ = tick.tick() => false,
        };
        let os = outboxes.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            Outbox::flush_all(&os.iter().map(Arc::as_ref).collect::<Vec<_>>())
        });
        match flushed.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("outbox flush failed: {e}"),
            Err(e) => tracing::error!("outbox flush did not finish: {e}"),
        }
        if stopping {
            return;
        }
    }
}

/// An entry published and waiting for its ack: sequence, subject, size, ack.
type InFlight = (u64, String, usize, jetstream::context::PublishAckFuture);

/// Whether the hub refused a record for a reason a retry cannot fix.
fn refused_for_good(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => true,
        PublishErrorKind::Other => e
            .source()
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|j| {
                j.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
            }),
        _ => false,
    }
}

impl Forwarder {
    pub async fn run(self, mut shutdown: Shutdown) {
        let js = jetstream::with_domain(self.client.clone(), &self.domain);
        let mut backoff = Duration::from_millis(100);
        // Start by reconciling: the previous run may have died between a publish
        // and its ack.
        let mut reconciled = false;
        let mut last_expire = tokio::time::Instant::now();
        loop {
            if last_expire.elapsed() > Duration::from_secs(1) {
                if let Err(e) = self.outbox.expire() {
                    tracing::error!("outbox expiry failed: {e}");
                }
                last_expire = tokio::time::Instant::now();
            }
            let round = async {
                if !reconciled {
                    self.reconcile(&js).await?;
                    reconciled = true;
                }
                self.report_drops().await;
                self.forward(&js).await
            }
            .await;
            let pause = match round {
                Ok(true) => {
                    backoff = Duration::from_millis(100);
                    continue; // more to send
                }
                Ok(false) => {
                    backoff = Duration::from_millis(100);
                    self.flush_interval
                }
                Err(e) => {
                    tracing::debug!("forwarding paused: {e:#}");
                    reconciled = false;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = self.outbox.appended.notified(), if pause == self.flush_interval => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends what the outbox holds until it is empty, with up to [`IN_FLIGHT`]
    /// acks outstanding throughout; `Ok(true)` when it stopped early to let the
    /// caller expire, report and flush (every `flush_interval` under load).
    async fn forward(&self, js: &JetStream) -> Result<bool> {
        let began = tokio::time::Instant::now();
        let mut acks = std::collections::VecDeque::new();
        let mut after = None;
        let mut more = false;
        loop {
            let batch = self.outbox.pending_after(after, BATCH)?;
            if batch.is_empty() {
                break;
            }
            if began.elapsed() >= self.flush_interval.min(Duration::from_secs(1)) {
                more = true;
                break;
            }
            self.publish_batch(js, batch, &mut acks, &mut after).await?;
        }
        while let Some(a) = acks.pop_front() {
            self.settle(Some(a)).await?;
        }
        Ok(more)
    }

    /// Publishes `batch`, settling the oldest ack whenever the window is full.
    async fn publish_batch(
        &self,
        js: &JetStream,
        batch: Vec<crate::store::outbox::Entry>,
        acks: &mut std::collections::VecDeque<InFlight>,
        after: &mut Option<u64>,
    ) -> Result<()> {
        for entry in batch {
            *after = Some(entry.seq);
            let (seq, subject, size) = (entry.seq, entry.subject.clone(), entry.payload.len());
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}:{}:{}", self.node_id, self.incarnation, entry.seq).as_str(),
            );
            headers.insert(SEQ_HEADER, entry.seq.to_string().as_str());
            headers.insert(INCARNATION_HEADER, self.incarnation.as_str());
            let ack = match js
                .publish_with_headers(entry.subject, headers, entry.payload.into())
                .await
            {
                Ok(ack) => ack,
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    self.set_aside(seq, &subject, size, &e.to_string()).await?;
                    continue;
                }
                Err(e) => return Err(e).context("publish to the hub"),
            };
            acks.push_back((seq, subject, size, ack));
            if acks.len() >= IN_FLIGHT {
                self.settle(acks.pop_front()).await?;
            }
        }
        Ok(())
    }

    async fn settle(&self, ack: Option<InFlight>) -> Result<()> {
        let Some((seq, subject, size, ack)) = ack else {
            return Ok(());
        };
        match ack.await {
            Ok(ack) => {
                self.outbox.remove(seq)?;
                self.outbox.set_hub_mark(ack.sequence);
            }
            Err(e) if refused_for_good(&e) => {
                self.set_aside(seq, &subject, size, &e.to_string()).await?
            }
            Err(e) => return Err(e).with_context(|| format!("no ack for outbox entry {seq}")),
        }
        Ok(())
    }

    /// An entry the hub will never take: out of the way (the rest keeps flowing),
    /// counted, and reported.
    async fn set_aside(&self, seq: u64, subject: &str, size: usize, why: &str) -> Result<()> {
        self.outbox.set_aside(seq)?;
        tracing::warn!(seq, %subject, size, "outbox entry refused by the hub, set aside: {why}");
        publish_event(
            &self.events,
            &self.subjects,
            &self.node_id,
            &format!("{}_set_aside", self.carries.store()),
            None,
            Some("refused"),
            format!(
                "a {size}-byte record on {subject} was refused by the hub and set aside: {why}"
            ),
        )
        .await;
        Ok(())
    }

    /// Removes the waiting entries the hub already stored: those of this
    /// incarnation found on the stream after the hub mark (from the start of the
    /// stream if the hub never acknowledged anything).
    async fn reconcile(&self, js: &JetStream) -> Result<()> {
        let Some(first) = self.outbox.pending(1)?.first().map(|e| e.seq) else {
            return Ok(());
        };
        let name = self.carries.stream();
        let stream = js.get_stream(name).await.with_context(|| {
            format!("stream {name} on the hub (does it exist? `edgeleaf hub init` creates it)")
        })?;
        let deliver_policy = match self.outbox.hub_mark() {
            Some(mark) => DeliverPolicy::ByStartSequence {
                start_sequence: mark + 1,
            },
            None => DeliverPolicy::All,
        };
        let mut held = Vec::new();
        for kind in self.carries.kinds() {
            let filter = format!("{}.{kind}.{}.>", self.subjects.prefix(), self.node_id);
            let consumer = crate::hub::patiently(|| {
                stream.create_consumer(OrderedConfig {
                    filter_subject: filter.clone(),
                    deliver_policy,
                    headers_only: true,
                    ..Default::default()
                })
            })
            .await
            .context("reconcile consumer")?;
            let mut left = consumer.cached_info().num_pending;
            if left == 0 {
                continue;
            }
            let mut messages = consumer.messages().await?;
            while left > 0 {
                let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
                    .await
                    .with_context(|| {
                        format!("reading {filter} on {name}: {left} messages not delivered")
                    })?
                    .with_context(|| format!("reading {filter} on {name}: ended early"))??;
                left -= 1;
                if let Some(h) = &msg.headers
                    && h.get(INCARNATION_HEADER).map(|v| v.as_str())
                        == Some(self.incarnation.as_str())
                    && let Some(seq) = h
                        .get(SEQ_HEADER)
                        .and_then(|v| v.as_str().parse::<u64>().ok())
                    && seq >= first
                {
                    held.push(seq);
                }
            }
        }
        if !held.is_empty() {
            for seq in &held {
                self.outbox.remove(*seq)?;
            }
            tracing::info!(
                skipped = held.len(),
                "outbox entries already on the hub skipped"
            );
        }
        Ok(())
    }

    /// Reports drops (overflow, TTL) once the link is back.
    async fn report_drops(&self) {
        let n = self.outbox.take_unreported();
        if n == 0 {
            return;
        }
        let stats = self.outbox.stats();
        // About the outbox: straight to NATS, since through a full outbox the report
        // itself could be dropped. About the log store: through the outbox.
        let to = match self.carries {
            Carries::Telemetry => Telemetry::Direct(self.client.clone()),
            Carries::Logs => self.events.clone(),
        };
        publish_event(
            &to,
            &self.subjects,
            &self.node_id,
            &format!("{}_dropped", self.carries.store()),
            None,
            Some("dropped"),
            format!(
                "{n} {} were dropped from the {} (full or expired); {} in total",
                self.carries.what(),
                self.carries.store(),
                stats.dropped
            ),
        )
        .await;
    }
}

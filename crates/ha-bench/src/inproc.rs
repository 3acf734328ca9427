//! In-process scenarios: the simulator and the ingestor's pipeline in one tokio runtime.
//!
//! Longer than most modules (about 800 lines): one function per scenario of the README's table,
//! each self-contained so a reader sees what a figure measured without following calls.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ha_client::Secret;
use ha_client::auth::StaticToken;
use ha_client::ws::WsClient;
use ha_ingestor::config::InstanceConfig;
use ha_ingestor::filter::{AttributeRules, AttributesConfig, EntityFilter, FilterConfig};
use ha_ingestor::health::Health;
use ha_ingestor::record::{Record, parse_time_us};
use ha_ingestor::source::{SourceContext, run_source};
use ha_ingestor::store::{CommitHook, WriteOutcome, WriterConfig, spawn_writer};
use ha_sim::{FirehoseOptions, FirehoseTemplates, GeneratorHandle, Sim, SimConfig};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::measure::{Hist, now_us, peak_rss_kib, reset_peak_rss, self_cpu_seconds};
use crate::{Row, Timing};

/// Seed of the firehose.
pub const SEED: u64 = 1;
/// Generator steps in one round of the firehose's loop.
pub const STEPS: usize = 4096;
/// Events allowed in flight (sent, not yet counted by the sink) when running flat out: well within
/// the WebSocket client's per-subscription buffer (16 MiB, about 15,700 of the firehose's
/// 1,066-byte events; `window_fits_the_client_buffer` checks), so nothing is dropped, and enough to
/// keep every stage busy. At saturation the lag is this backlog divided by the rate. (16,384 was
/// over the byte bound: CI lost a few hundred events to `buffer_overflow` whenever the sink
/// stalled.)
pub const WINDOW: u64 = 8_192;
/// The entity the harness sets to see that a subscription is live.
const PROBE: &str = "sensor.bench_probe";

pub(crate) fn templates() -> Arc<FirehoseTemplates> {
    FirehoseTemplates::build(&SimConfig::default().entities, SEED, STEPS)
}

pub fn average_event_bytes() -> usize {
    templates().average_event_bytes()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pipeline's metrics, read when a count does not add up to say where events went.
type Render = Box<dyn Fn() -> String + Send + Sync>;
static METRICS: std::sync::OnceLock<Render> = std::sync::OnceLock::new();

/// Where events can go missing: reconnects, the client's buffer, the simulator's pending limit.
fn loss_clues(sims: &[Sim]) -> String {
    let mut clues = Vec::new();
    if let Some(render) = METRICS.get() {
        for line in render().lines() {
            let wanted = [
                "ha_ingestor_reconnects_total",
                "ha_ingestor_events_dropped_total",
                "ha_ingestor_gaps_detected_total",
            ];
            if wanted.iter().any(|w| line.starts_with(w)) {
                clues.push(line.to_string());
            }
        }
    }
    let (mut accepted, mut overflow, mut faults) = (0, 0, 0);
    for s in sims.iter().map(Sim::stats) {
        accepted += s.ws_connections_accepted;
        overflow += s.pending_overflow_disconnects;
        faults += s.fault_disconnects;
    }
    clues.push(format!(
        "simulator: {accepted} connections accepted, {overflow} dropped for pending messages, {faults} by faults"
    ));
    clues.join("; ")
}

/// Runs one scenario in this process.
pub fn run_child(id: &str, timing: Timing) -> Result<Vec<Row>, String> {
    if id == "f" {
        // Its own threads and runtimes, pinned to cores.
        return crate::clients::run(timing);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // As in the real binary: the counters and histograms the pipeline updates are live.
    let metrics = ha_ingestor::health::install_metrics()?;
    let _ = METRICS.set(Box::new(move || metrics.render()));
    rt.block_on(async move {
        let one = |r: Result<Row, String>| r.map(|r| vec![r]);
        match id {
            "a" => one(pipeline(Spec::new("a null sink, max", Sink::Null, None, 1), timing).await),
            "b" => one(pipeline(
                Spec::new("b SQLite, max", Sink::Sqlite(200), None, 1),
                timing,
            )
            .await),
            "c" => one(pipeline(
                Spec::new(
                    "c SQLite, 1k/s, flush 200 ms (default)",
                    Sink::Sqlite(200),
                    Some(1000),
                    1,
                ),
                timing,
            )
            .await),
            "c50" => one(pipeline(
                Spec::new(
                    "c50 SQLite, 1k/s, flush 50 ms",
                    Sink::Sqlite(50),
                    Some(1000),
                    1,
                ),
                timing,
            )
            .await),
            "d" => one(pipeline(
                Spec::new("d SQLite, 10k/s", Sink::Sqlite(200), Some(10_000), 1),
                timing,
            )
            .await),
            "e" => entities_vs_events(timing).await,
            "g" => one(pipeline(
                Spec::new(
                    "g 100 instances x 100/s, SQLite",
                    Sink::Sqlite(200),
                    Some(100),
                    100,
                ),
                timing,
            )
            .await),
            other => Err(format!("no in-process scenario '{other}'")),
        }
    })
}

#[derive(Clone, Copy)]
enum Sink {
    /// Parse, filter, route, count.
    Null,
    /// The real writer with this flush interval (ms); batch size 1000 as by default.
    Sqlite(u64),
}

struct Spec {
    name: &'static str,
    sink: Sink,
    /// Per instance; `None` = as fast as the pipeline takes them.
    rate: Option<u64>,
    instances: usize,
}

impl Spec {
    fn new(name: &'static str, sink: Sink, rate: Option<u64>, instances: usize) -> Self {
        Spec {
            name,
            sink,
            rate,
            instances,
        }
    }
}

/// What the sink saw.
struct Counters {
    /// Firehose records that reached the sink (null: routed; SQLite: in a committed batch).
    processed: AtomicU64,
    inserted: AtomicU64,
    unchanged: AtomicU64,
    duplicates: AtomicU64,
    lag: Mutex<Hist>,
    probes: Mutex<HashSet<String>>,
    /// The firehoses' flow control.
    credit: Arc<AtomicU64>,
    windowed: bool,
}

impl Counters {
    fn new(windowed: bool) -> Arc<Counters> {
        Arc::new(Counters {
            processed: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            unchanged: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            lag: Mutex::new(Hist::default()),
            probes: Mutex::new(HashSet::new()),
            credit: Arc::new(AtomicU64::new(0)),
            windowed,
        })
    }

    fn processed(&self, n: u64) {
        let total = self.processed.fetch_add(n, Ordering::AcqRel) + n;
        if self.windowed {
            self.credit.store(total + WINDOW, Ordering::Release);
        }
    }

    /// Takes probe records out; returns whether `r` was one.
    fn probe(&self, r: &Record) -> bool {
        match r {
            Record::State(s) if s.entity_id == PROBE => {
                lock(&self.probes).insert(s.instance.to_string());
                true
            }
            _ => false,
        }
    }
}

fn null_sink(mut rx: mpsc::Receiver<Record>, c: Arc<Counters>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(512);
        while rx.recv_many(&mut buf, 512).await > 0 {
            let now = now_us();
            let mut n = 0;
            {
                let mut lag = lock(&c.lag);
                for r in buf.drain(..) {
                    if c.probe(&r) {
                        continue;
                    }
                    if let Some(fired) = r.time_fired_us() {
                        lag.record(now - fired);
                    }
                    n += 1;
                }
            }
            c.processed(n);
        }
    })
}

fn commit_hook(c: Arc<Counters>) -> CommitHook {
    Arc::new(move |records: &[Record], outcome: &WriteOutcome| {
        let now = now_us();
        let (mut n, mut inserted_rows) = (0, 0);
        {
            let mut lag = lock(&c.lag);
            for (r, inserted) in records.iter().zip(&outcome.inserted_flags) {
                if c.probe(r) {
                    continue;
                }
                n += 1;
                if *inserted {
                    inserted_rows += 1;
                    if let Some(fired) = r.time_fired_us() {
                        lag.record(now - fired);
                    }
                }
            }
        }
        c.inserted.fetch_add(inserted_rows, Ordering::AcqRel);
        c.unchanged.fetch_add(outcome.unchanged, Ordering::AcqRel);
        c.duplicates.fetch_add(outcome.duplicates, Ordering::AcqRel);
        c.processed(n);
    })
}

fn temp_dir(tag: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ha-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// What the measured window saw.
struct Window {
    events: u64,
    secs: f64,
    cpu: f64,
    rss_kib: u64,
    lag: Option<[f64; 3]>,
}

impl Window {
    fn row(&self, name: &str, ok: bool, check: String) -> Row {
        Row {
            scenario: name.to_string(),
            events: self.events,
            events_per_sec: self.events as f64 / self.secs.max(1e-9),
            lag_ms: self.lag,
            lag_from_buckets: false,
            rss_kib: self.rss_kib,
            cpu_s_per_m: self.cpu / (self.events.max(1) as f64) * 1e6,
            ok,
            check,
        }
    }
}

/// Warm-up, then the window: events/s from `count`, CPU, peak RSS (reset at the window's start)
/// and the lag histogram (cleared at the start).
async fn measure(timing: Timing, count: impl Fn() -> u64, lag: &Mutex<Hist>) -> Window {
    tokio::time::sleep(timing.warmup).await;
    lock(lag).clear();
    reset_peak_rss("self");
    let (t0, n0, cpu0) = (Instant::now(), count(), self_cpu_seconds());
    tokio::time::sleep(timing.window).await;
    let (n1, cpu1) = (count(), self_cpu_seconds());
    let secs = t0.elapsed().as_secs_f64();
    Window {
        events: n1 - n0,
        secs,
        cpu: cpu1 - cpu0,
        rss_kib: peak_rss_kib("self"),
        lag: lock(lag).summary_ms(),
    }
}

/// Stops the firehoses and waits until `count` reaches what they sent (or stops moving for 3 s).
pub(crate) async fn drain(handles: &[GeneratorHandle], count: impl Fn() -> u64) -> (u64, u64) {
    for h in handles {
        h.stop();
    }
    for h in handles {
        h.wait().await;
    }
    let sent: u64 = handles.iter().map(GeneratorHandle::emitted).sum();
    let (mut last, mut since) = (count(), Instant::now());
    while count() < sent && since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if count() != last {
            last = count();
            since = Instant::now();
        }
    }
    (sent, count())
}

/// The ingestor's pipeline as `run` wires it (source → bounded queue → sink), minus the HTTP
/// endpoint and remote sinks.
async fn pipeline(spec: Spec, timing: Timing) -> Result<Row, String> {
    let templates = templates();
    let mut sims = Vec::with_capacity(spec.instances);
    for _ in 0..spec.instances {
        sims.push(
            Sim::start(SimConfig::default())
                .await
                .map_err(|e| format!("simulator: {e}"))?,
        );
    }
    let c = Counters::new(spec.rate.is_none());
    let (tx, rx) = mpsc::channel(10_000); // [store] queue_capacity's default
    let health = Arc::new(Health::default());
    let dir = temp_dir("inproc")?;
    let db = dir.join("bench.db");
    let sink = match spec.sink {
        Sink::Null => null_sink(rx, c.clone()),
        Sink::Sqlite(flush_ms) => {
            let writer = spawn_writer(
                WriterConfig {
                    path: db.clone(),
                    batch_size: 1000,
                    flush_interval: Duration::from_millis(flush_ms),
                    min_commit_interval: ha_ingestor::config::StoreConfig::default()
                        .min_commit_interval(),
                    bound: None,
                    on_commit: Some(commit_hook(c.clone())),
                    skip_unchanged: true,
                    sinks: Vec::new(),
                },
                rx,
                Some(health.clone()),
            )
            .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Ok(Err(e)) = writer.await {
                    eprintln!("the writer failed: {e}");
                }
            })
        }
    };
    let filter = Arc::new(EntityFilter::new(&FilterConfig::default()).map_err(|e| e.to_string())?);
    let attributes =
        Arc::new(AttributeRules::new(&AttributesConfig::default()).map_err(|e| e.to_string())?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sources = Vec::new();
    for (i, sim) in sims.iter().enumerate() {
        let name = if spec.instances == 1 {
            "bench".to_string()
        } else {
            format!("ha{i:03}")
        };
        let inst = InstanceConfig::with_token(
            &name,
            &sim.url(),
            Secret::new(sim.config().admin_token.clone()),
        );
        let ctx = SourceContext {
            filter: filter.clone(),
            attributes: attributes.clone(),
            tx: tx.clone(),
            health: health.clone(),
            db: db.clone(),
            backfill: None,
            generation: 0,
            fleet_start: None,
            live: None,
        };
        sources.push(tokio::spawn(run_source(inst, ctx, stop_rx.clone())));
    }
    drop(tx);

    // Live once a probe state from every instance has reached the sink.
    let names: Vec<String> = (0..spec.instances)
        .map(|i| {
            if spec.instances == 1 {
                "bench".into()
            } else {
                format!("ha{i:03}")
            }
        })
        .collect();
    let started = Instant::now();
    let mut k = 0u64;
    loop {
        let seen = lock(&c.probes).clone();
        if seen.len() >= spec.instances {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "only {} of {} instances came live within 30 s",
                seen.len(),
                spec.instances
            ));
        }
        k += 1;
        for (sim, name) in sims.iter().zip(&names) {
            if !seen.contains(name) {
                sim.set_state(PROBE, &k.to_string(), serde_json::json!({}));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let handles: Vec<GeneratorHandle> = sims
        .iter()
        .map(|sim| {
            sim.start_firehose(
                templates.clone(),
                FirehoseOptions {
                    rate: spec.rate,
                    count: None,
                    credit: Some(c.credit.clone()),
                },
            )
        })
        .collect();
    c.credit.store(
        if spec.rate.is_some() {
            u64::MAX
        } else {
            WINDOW
        },
        Ordering::Release,
    );
    let count = || c.processed.load(Ordering::Acquire);
    let w = measure(timing, count, &c.lag).await;
    let (sent, got) = drain(&handles, count).await;
    let _ = stop_tx.send(true);
    for s in sources {
        match tokio::time::timeout(Duration::from_secs(10), s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(format!("source: {e}")),
            Ok(Err(e)) => return Err(format!("source task: {e}")),
            Err(_) => return Err("a source did not stop within 10 s".into()),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), sink).await;
    let clues = loss_clues(&sims);
    for sim in sims {
        sim.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (dups, unchanged) = (
        c.duplicates.load(Ordering::Acquire),
        c.unchanged.load(Ordering::Acquire),
    );
    let ok = sent == got && dups == 0;
    let check = match spec.sink {
        Sink::Null if ok => format!("ok: {sent} sent = {got} routed"),
        Sink::Sqlite(_) if ok => format!(
            "ok: {sent} sent = {got} committed ({} rows, {unchanged} unchanged skipped)",
            c.inserted.load(Ordering::Acquire)
        ),
        _ => format!("LOST: {sent} sent, {got} reached the sink, {dups} duplicates ({clues})"),
    };
    Ok(w.row(spec.name, ok, check))
}

/// Per entity: changes seen and the last state and attributes.
type Tally = HashMap<String, (u64, String, Value)>;

/// (e): the same seeded sequence through `subscribe_events` and through `subscribe_entities`
/// (HA's compressed diffs, decoded into full states by `ha_client`): throughput, and the per-entity
/// change counts and final states must be equal (no change merged or lost).
async fn entities_vs_events(timing: Timing) -> Result<Vec<Row>, String> {
    let templates = templates();
    let connect = |sim: &Sim| {
        WsClient::builder(sim.url())
            .token_source(StaticToken::new(sim.config().admin_token.clone()))
            .connect()
    };

    // subscribe_events: a window of the usual length; its count fixes N for the second run.
    let sim = Sim::start(SimConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let ws = connect(&sim).await.map_err(|e| e.to_string())?;
    let mut sub = ws
        .subscribe_events(Some("state_changed"))
        .await
        .map_err(|e| e.to_string())?;
    let c = Counters::new(true);
    c.credit.store(WINDOW, Ordering::Release);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cc = c.clone();
    let consumer = tokio::spawn(async move {
        let mut last: HashMap<String, (u64, ha_client::ws::Event)> = HashMap::new();
        loop {
            let ev = tokio::select! {
                ev = sub.next() => ev,
                _ = &mut stop_rx => None,
            };
            let Some(ev) = ev else { break };
            let e = match ev.state_changed() {
                Ok(e) => e,
                Err(e) => return Err(format!("undecodable event: {e}")),
            };
            if let Some(fired) = e.time_fired.and_then(parse_time_us) {
                lock(&cc.lag).record(now_us() - fired);
            }
            let id = e.entity_id;
            match last.get_mut(id) {
                Some(slot) => {
                    slot.0 += 1;
                    slot.1 = ev;
                }
                None => {
                    last.insert(id.to_string(), (1, ev));
                }
            }
            cc.processed(1);
        }
        let mut tally = Tally::new();
        for (id, (n, ev)) in last {
            let e = ev.state_changed().map_err(|e| e.to_string())?;
            let s = e.new_state.ok_or("no new_state")?;
            let attrs: Value = s
                .attributes
                .map(|a| serde_json::from_str(a.get()))
                .transpose()
                .map_err(|e| e.to_string())?
                .unwrap_or(Value::Null);
            tally.insert(id, (n, s.state.into_owned(), attrs));
        }
        Ok(tally)
    });
    let handle = sim.start_firehose(
        templates.clone(),
        FirehoseOptions {
            rate: None,
            count: None,
            credit: Some(c.credit.clone()),
        },
    );
    let count = || c.processed.load(Ordering::Acquire);
    let w = measure(timing, count, &c.lag).await;
    let (n, got) = drain(std::slice::from_ref(&handle), count).await;
    let _ = stop_tx.send(());
    let events_tally = consumer.await.map_err(|e| e.to_string())??;
    ws.close();
    sim.shutdown().await;
    let events_ok = n == got;
    let mut rows = vec![w.row(
        "e subscribe_events, max (client only)",
        events_ok,
        if events_ok {
            format!("ok: {n} sent = {got} received")
        } else {
            format!("LOST: {n} sent, {got} received")
        },
    )];

    // subscribe_entities: exactly N events of the same sequence.
    let sim = Sim::start(SimConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let ws = connect(&sim).await.map_err(|e| e.to_string())?;
    let mut sub = ws
        .subscribe_entities(None)
        .await
        .map_err(|e| e.to_string())?;
    // The first message is the snapshot of every entity ("a"); changes come after it.
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .map_err(|_| "no subscribe_entities snapshot within 10 s")?
        .ok_or("the subscription ended")?;
    if first.changed.is_empty() {
        return Err("the subscribe_entities snapshot is empty".into());
    }
    let c = Counters::new(true);
    c.credit.store(WINDOW, Ordering::Release);
    let cc = c.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let first_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let fa = first_at.clone();
    let consumer = tokio::spawn(async move {
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut merged = 0u64;
        loop {
            let u = tokio::select! {
                u = sub.next() => u,
                _ = &mut stop_rx => None,
            };
            let Some(u) = u else { break };
            lock(&fa).get_or_insert_with(Instant::now);
            if u.changed.len() + u.removed.len() != 1 {
                merged += 1;
            }
            let now = now_us();
            for s in &u.changed {
                lock(&cc.lag).record(now - s.last_updated_us());
                match counts.get_mut(&s.entity_id) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(s.entity_id.clone(), 1);
                    }
                }
            }
            cc.processed(u.changed.len() as u64);
        }
        let mut tally = Tally::new();
        for (id, s) in sub.entities() {
            if let Some(n) = counts.get(id) {
                tally.insert(
                    id.clone(),
                    (*n, s.state.clone(), Value::Object(s.attributes.clone())),
                );
            }
        }
        (tally, merged)
    });
    reset_peak_rss("self");
    let (cpu0, t_start) = (self_cpu_seconds(), Instant::now());
    let handle = sim.start_firehose(
        templates.clone(),
        FirehoseOptions {
            rate: None,
            count: Some(n),
            credit: Some(c.credit.clone()),
        },
    );
    let count = || c.processed.load(Ordering::Acquire);
    let deadline = t_start + Duration::from_secs(120);
    let mut last_at = Instant::now();
    while count() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
        last_at = Instant::now();
    }
    let (cpu1, rss) = (self_cpu_seconds(), peak_rss_kib("self"));
    let (sent, got) = drain(std::slice::from_ref(&handle), count).await;
    let _ = stop_tx.send(());
    let (entities_tally, merged) = consumer.await.map_err(|e| e.to_string())?;
    ws.close();
    sim.shutdown().await;
    let began = lock(&first_at).unwrap_or(t_start);
    let secs = last_at.duration_since(began).as_secs_f64();
    let mut problems = Vec::new();
    if sent != n || got != n {
        problems.push(format!("{n} wanted, {sent} sent, {got} received"));
    }
    if merged > 0 {
        problems.push(format!("{merged} messages carried more than one change"));
    }
    if entities_tally.len() != events_tally.len() {
        problems.push(format!(
            "{} entities changed via subscribe_entities, {} via subscribe_events",
            entities_tally.len(),
            events_tally.len()
        ));
    }
    for (id, (cnt, state, attrs)) in &events_tally {
        match entities_tally.get(id) {
            Some((c2, s2, a2)) if c2 == cnt && s2 == state && a2 == attrs => {}
            Some((c2, s2, _)) => problems.push(format!(
                "{id}: {cnt} changes ending in '{state}' via events, {c2} ending in '{s2}' via entities"
            )),
            None => problems.push(format!("{id}: no change via subscribe_entities")),
        }
    }
    let ok = problems.is_empty();
    let check = if ok {
        format!(
            "ok: {n} = {got} changes, same per entity and same final states as subscribe_events"
        )
    } else {
        format!("MISMATCH: {}", problems.join("; "))
    };
    rows.push(Row {
        scenario: "e subscribe_entities, max (client only)".into(),
        events: got,
        events_per_sec: got as f64 / secs.max(1e-9),
        lag_ms: lock(&c.lag).summary_ms(),
        lag_from_buckets: false,
        rss_kib: rss,
        cpu_s_per_m: (cpu1 - cpu0) / (got.max(1) as f64) * 1e6,
        ok,
        check,
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fits_the_client_buffer() {
        let in_flight = WINDOW as usize * average_event_bytes();
        let buffer = ha_client::ws::WsConfig::default().event_buffer_bytes;
        assert!(
            in_flight <= buffer * 3 / 4,
            "WINDOW holds {in_flight} bytes of events; the client buffers {buffer}"
        );
    }
}

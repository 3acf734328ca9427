//! (f) Client speed: how many of the firehose's `state_changed` events a client takes per second,
//! a bare tokio-tungstenite + serde parse next to the library's own paths, into the same types.
//!
//! The simulator runs on a thread of its own (a current-thread runtime) pinned to one core, every
//! client thread to another, so a client's figure is not its share of a core it splits with the
//! server. Each variant is measured `runs` times, the variants interleaved (load from elsewhere on
//! the machine then hits all alike), on a fresh simulator and connection each time; a row is the
//! median. CPU per event is the client's (the server thread's time is subtracted); the peak RSS is
//! the process's, simulator included. When the server, not the client, sets the pace (a loaded
//! machine), the CPU per event is the figure that compares the clients.
//!
//! `HA_BENCH_CLIENTS=bare-borrowed,lib-borrowed` (the short names below) runs only those, e.g.
//! under a profiler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use ha_client::auth::StaticToken;
use ha_client::ws::{
    Event, HaEvent, StateChangedData, StateChangedEvent, StateChangedRef, WsClient,
};
use ha_sim::{FirehoseOptions, Sim, SimConfig};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::inproc::{WINDOW, drain, lock, templates};
use crate::measure::{Hist, cpu_seconds, now_us, peak_rss_kib, reset_peak_rss, self_cpu_seconds};
use crate::{Row, Timing};

/// The clients compared, in the order of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    BareBorrowed,
    LibBorrowed,
    BareOwned,
    LibOwned,
    LibHaEvent,
    BlockingBorrowed,
}

const VARIANTS: [Variant; 6] = [
    Variant::BareBorrowed,
    Variant::LibBorrowed,
    Variant::BlockingBorrowed,
    Variant::BareOwned,
    Variant::LibOwned,
    Variant::LibHaEvent,
];

impl Variant {
    fn short(self) -> &'static str {
        match self {
            Variant::BareBorrowed => "bare-borrowed",
            Variant::LibBorrowed => "lib-borrowed",
            Variant::BlockingBorrowed => "blocking-borrowed",
            Variant::BareOwned => "bare-owned",
            Variant::LibOwned => "lib-owned",
            Variant::LibHaEvent => "lib-haevent",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::BareBorrowed => "f bare tokio-tungstenite + serde, StateChangedRef (borrowed)",
            Variant::LibBorrowed => "f ha_client, event.state_changed() (borrowed)",
            Variant::BareOwned => "f bare tokio-tungstenite + serde, StateChangedEvent (owned)",
            Variant::LibOwned => "f ha_client, event.parse::<StateChangedEvent>() (owned)",
            Variant::LibHaEvent => "f ha_client, HaEvent then StateChangedData (old default)",
            Variant::BlockingBorrowed => {
                "f ha_client::blocking, iterator, event.state_changed() (borrowed)"
            }
        }
    }
}

/// What a client counted.
#[derive(Default)]
struct Tally {
    processed: AtomicU64,
    credit: Arc<AtomicU64>,
    bad: AtomicU64,
    lag: Mutex<Hist>,
}

impl Tally {
    fn add(&self, n: u64) {
        let total = self.processed.fetch_add(n, Ordering::AcqRel) + n;
        self.credit.store(total + WINDOW, Ordering::Release);
    }

    /// The lag of every 64th event (a clock read per event would cost some clients more than
    /// others).
    fn sample_lag(&self, seen: &mut u64, time_fired_us: impl FnOnce() -> Option<i64>) {
        *seen += 1;
        if seen.is_multiple_of(64)
            && let Some(fired) = time_fired_us()
        {
            lock(&self.lag).record(now_us() - fired);
        }
    }
}

/// Runs every variant `timing.runs` times; one row per variant (the median run).
pub fn run(timing: Timing) -> Result<Vec<Row>, String> {
    let cpus = allowed_cpus();
    let (server_cpu, client_cpu) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    // Threads inherit the affinity of the thread that starts them: this one (and so every client
    // runtime thread, the blocking client's included) goes to the client core first.
    if let Some(cpu) = client_cpu {
        pin_current_thread(cpu)?;
    }
    let (server, server_tid) = ServerThread::start(server_cpu)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let only = std::env::var("HA_BENCH_CLIENTS").unwrap_or_default();
    let variants: Vec<Variant> = VARIANTS
        .into_iter()
        .filter(|v| only.is_empty() || only.split(',').any(|o| o.trim() == v.short()))
        .collect();
    let mut samples: Vec<Vec<Row>> = vec![Vec::new(); variants.len()];
    for _ in 0..timing.runs.max(1) {
        for (i, v) in variants.iter().enumerate() {
            let s = rt.block_on(measure_one(*v, timing, &server, server_tid))?;
            samples[i].push(s);
        }
    }
    drop(rt);
    server.stop();
    let pinning = match (server_cpu, client_cpu) {
        (Some(s), Some(c)) => format!("server on cpu {s}, client on cpu {c}"),
        _ => "not pinned (one cpu)".to_string(),
    };
    Ok(variants
        .iter()
        .zip(samples)
        .map(|(v, s)| median_row(v.name(), s, &pinning))
        .collect())
}

fn median_row(name: &str, mut samples: Vec<Row>, pinning: &str) -> Row {
    let all_ok = samples.iter().all(|s| s.ok);
    let failures: Vec<String> = samples
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.check.clone())
        .collect();
    samples.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    let runs: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.0}k", s.events_per_sec / 1000.0))
        .collect();
    let mut row = samples[samples.len() / 2].clone();
    row.scenario = name.to_string();
    row.ok = all_ok;
    row.check = if all_ok {
        format!(
            "ok: median of {} runs [{}], none lost; {pinning}",
            samples.len(),
            runs.join(" ")
        )
    } else {
        format!("LOST: {}", failures.join("; "))
    };
    row
}

async fn measure_one(
    v: Variant,
    timing: Timing,
    server: &ServerThread,
    server_tid: i32,
) -> Result<Row, String> {
    let sim = server
        .handle
        .spawn(Sim::start(SimConfig::default()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let tally = Arc::new(Tally::default());
    tally.credit.store(WINDOW, Ordering::Release);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let url = sim.url();
    let token = sim.config().admin_token.clone();
    let t = tally.clone();
    if v == Variant::BlockingBorrowed {
        let (client_tx, client_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || blocking(&url, &token, &t, ready_tx, client_tx));
        let stop = client_rx.await.ok();
        let result = run_firehose(v, timing, server_tid, &sim, &tally, ready_rx).await;
        if let Some(ws) = stop {
            ws.close();
        }
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let _ = server.handle.spawn(sim.shutdown()).await;
        return result;
    }
    let client = tokio::spawn(async move {
        match v {
            Variant::BareBorrowed => bare(&url, &token, &t, ready_tx, frame_borrowed).await,
            Variant::BareOwned => bare(&url, &token, &t, ready_tx, frame_owned).await,
            Variant::LibBorrowed => {
                library(&url, &token, &t, ready_tx, |e: &Event, lag| {
                    let e = e.state_changed().ok()?;
                    lag(&mut || e.time_fired_us());
                    std::hint::black_box(&e);
                    Some(())
                })
                .await
            }
            Variant::LibOwned => {
                library(&url, &token, &t, ready_tx, |e: &Event, lag| {
                    let e = e.parse::<StateChangedEvent>().ok()?;
                    lag(&mut || e.time_fired_us());
                    std::hint::black_box(e);
                    Some(())
                })
                .await
            }
            Variant::LibHaEvent => {
                library(&url, &token, &t, ready_tx, |e: &Event, lag| {
                    let e = e.parse::<HaEvent>().ok()?;
                    let fired = e.time_fired.as_deref();
                    lag(&mut || fired.and_then(ha_client::time::micros_from_iso));
                    let data: StateChangedData = serde_json::from_value(e.data).ok()?;
                    std::hint::black_box(data);
                    Some(())
                })
                .await
            }
            Variant::BlockingBorrowed => Err("runs on a thread (above)".into()),
        }
    });
    let result = run_firehose(v, timing, server_tid, &sim, &tally, ready_rx).await;
    client.abort();
    let _ = client.await;
    let _ = server.handle.spawn(sim.shutdown()).await;
    result
}

/// Once the client is subscribed: the firehose, the warm-up, the measured window, the drain.
async fn run_firehose(
    v: Variant,
    timing: Timing,
    server_tid: i32,
    sim: &Sim,
    tally: &Tally,
    ready_rx: tokio::sync::oneshot::Receiver<()>,
) -> Result<Row, String> {
    ready_rx
        .await
        .map_err(|_| format!("{}: the client did not subscribe", v.name()))?;
    let handle = sim.start_firehose(
        templates(),
        FirehoseOptions {
            rate: None,
            count: None,
            credit: Some(tally.credit.clone()),
        },
    );
    let count = || tally.processed.load(Ordering::Acquire);
    let server_cpu = || cpu_seconds(&format!("self/task/{server_tid}"));
    tokio::time::sleep(timing.warmup).await;
    lock(&tally.lag).clear();
    reset_peak_rss("self");
    let (t0, n0) = (Instant::now(), count());
    let (cpu0, server0) = (self_cpu_seconds(), server_cpu());
    tokio::time::sleep(timing.window).await;
    let (n1, cpu1, server1) = (count(), self_cpu_seconds(), server_cpu());
    let secs = t0.elapsed().as_secs_f64();
    let (events, rss_kib, lag) = (n1 - n0, peak_rss_kib("self"), lock(&tally.lag).summary_ms());
    let (sent, got) = drain(std::slice::from_ref(&handle), count).await;
    let bad = tally.bad.load(Ordering::Acquire);
    let ok = sent == got && bad == 0;
    let check = if ok {
        format!("ok: {sent} sent = {got} parsed")
    } else {
        format!("{}: {sent} sent, {got} parsed, {bad} undecodable", v.name())
    };
    let client_cpu = (cpu1 - cpu0) - (server1 - server0);
    Ok(Row {
        scenario: v.name().to_string(),
        events,
        events_per_sec: events as f64 / secs.max(1e-9),
        lag_ms: lag,
        lag_from_buckets: false,
        rss_kib,
        cpu_s_per_m: client_cpu.max(0.0) / (events.max(1) as f64) * 1e6,
        ok,
        check,
    })
}

#[derive(Deserialize)]
struct Envelope<T> {
    event: T,
}

/// A frame's events (`[{"event": {...}, ...}, ...]` or one such object), one pass, each handed to
/// `f` as soon as it is parsed and dropped after, as the library's stream does (a `Vec` of a
/// frame's events would hold them all at once).
struct EachEvent<'f, T, F> {
    f: &'f mut F,
    count: u64,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T: Deserialize<'de>, F: FnMut(&T)> serde::de::Visitor<'de> for &mut EachEvent<'_, T, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of event messages")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<Envelope<T>>()? {
            (self.f)(&e.event);
            self.count += 1;
        }
        Ok(())
    }
}

fn each_event<'de, T: Deserialize<'de>>(text: &'de str, mut f: impl FnMut(&T)) -> Option<u64> {
    if text.starts_with('[') {
        let mut each = EachEvent {
            f: &mut f,
            count: 0,
            _t: std::marker::PhantomData,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        serde::Deserializer::deserialize_seq(&mut de, &mut each).ok()?;
        de.end().ok()?;
        Some(each.count)
    } else {
        let e: Envelope<T> = serde_json::from_str(text).ok()?;
        f(&e.event);
        Some(1)
    }
}

/// The bare client's parse of a frame into borrowed events; the number of events, or `None`.
fn frame_borrowed(text: &str, tally: &Tally, seen: &mut u64) -> Option<u64> {
    each_event(text, |e: &StateChangedRef<'_>| {
        tally.sample_lag(seen, || e.time_fired_us());
        std::hint::black_box(e);
    })
}

/// The same into owned events.
fn frame_owned(text: &str, tally: &Tally, seen: &mut u64) -> Option<u64> {
    each_event(text, |e: &StateChangedEvent| {
        tally.sample_lag(seen, || e.time_fired_us());
        std::hint::black_box(e);
    })
}

/// A client by hand on tokio-tungstenite: connect, authenticate, opt in to coalescing, subscribe,
/// then each frame parsed in one pass by `parse_frame`.
async fn bare(
    url: &str,
    token: &str,
    tally: &Tally,
    ready: tokio::sync::oneshot::Sender<()>,
    parse_frame: fn(&str, &Tally, &mut u64) -> Option<u64>,
) -> Result<(), String> {
    let ws_url = format!("{}/api/websocket", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| e.to_string())?;
    let send = |v: Value| Message::Text(v.to_string().into());
    next_text(&mut ws).await?; // auth_required
    ws.send(send(
        serde_json::json!({"type": "auth", "access_token": token}),
    ))
    .await
    .map_err(|e| e.to_string())?;
    next_text(&mut ws).await?; // auth_ok
    ws.send(send(serde_json::json!({"id": 1, "type": "supported_features", "features": {"coalesce_messages": 1}})))
        .await
        .map_err(|e| e.to_string())?;
    next_text(&mut ws).await?;
    ws.send(send(
        serde_json::json!({"id": 2, "type": "subscribe_events", "event_type": "state_changed"}),
    ))
    .await
    .map_err(|e| e.to_string())?;
    next_text(&mut ws).await?;
    let _ = ready.send(());
    let mut seen = 0u64;
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        match parse_frame(t.as_str(), tally, &mut seen) {
            Some(n) => tally.add(n),
            None => {
                tally.bad.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
    Ok(())
}

/// The library as its documentation shows it: `subscribe_events`, then each event of the stream
/// parsed by `parse` (`None` when the event did not parse), which hands the event's `time_fired`
/// to the lag sampler as the bare client does (computed for every 64th event only).
async fn library(
    url: &str,
    token: &str,
    tally: &Tally,
    ready: tokio::sync::oneshot::Sender<()>,
    parse: impl Fn(&Event, &mut dyn FnMut(&mut dyn FnMut() -> Option<i64>)) -> Option<()>,
) -> Result<(), String> {
    let ws = WsClient::builder(url)
        .token_source(StaticToken::new(token))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut events = ws
        .subscribe_events(Some("state_changed"))
        .await
        .map_err(|e| e.to_string())?;
    let _ = ready.send(());
    let mut seen = 0u64;
    while let Some(event) = events.next().await {
        let mut lag = |fired: &mut dyn FnMut() -> Option<i64>| tally.sample_lag(&mut seen, fired);
        match parse(&event, &mut lag) {
            Some(()) => {}
            None => {
                tally.bad.fetch_add(1, Ordering::AcqRel);
            }
        }
        tally.add(1);
    }
    Ok(())
}

/// The blocking client on a thread of its own: its subscription as an iterator, each event parsed
/// borrowed. `client` gets a clone of the client, to close it when the measurement is done.
fn blocking(
    url: &str,
    token: &str,
    tally: &Tally,
    ready: tokio::sync::oneshot::Sender<()>,
    client: tokio::sync::oneshot::Sender<ha_client::blocking::WsClient>,
) -> Result<(), String> {
    let ws = ha_client::blocking::WsClient::builder(url)
        .token_source(StaticToken::new(token))
        .connect()
        .map_err(|e| e.to_string())?;
    let events = ws
        .subscribe_events(Some("state_changed"))
        .map_err(|e| e.to_string())?;
    let _ = client.send(ws.clone());
    let _ = ready.send(());
    let mut seen = 0u64;
    for event in events {
        match event.state_changed() {
            Ok(e) => {
                std::hint::black_box(&e);
                tally.sample_lag(&mut seen, || e.time_fired_us());
            }
            Err(_) => {
                tally.bad.fetch_add(1, Ordering::AcqRel);
            }
        }
        tally.add(1);
    }
    Ok(())
}

async fn next_text<S>(ws: &mut S) -> Result<String, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the connection closed".into()),
        }
    }
}

/// The simulator's thread: a current-thread runtime, pinned to its core, running until stopped.
struct ServerThread {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    fn start(cpu: Option<usize>) -> Result<(ServerThread, i32), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ha-sim".into())
            .spawn(move || {
                let pinned = cpu.map_or(Ok(()), pin_current_thread);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string());
                let rt = match (pinned, rt) {
                    (Ok(()), Ok(rt)) => rt,
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let _ = tx.send(Ok((rt.handle().clone(), tid)));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| e.to_string())?;
        let (handle, tid) = rx
            .recv()
            .map_err(|_| "the simulator thread ended".to_string())??;
        Ok((
            ServerThread {
                handle,
                stop,
                thread,
            },
            tid,
        ))
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_current_thread(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside it (cpu comes from
    // `allowed_cpus`, below CPU_SETSIZE); sched_setaffinity(0, ..) affects this thread only.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot pin a thread to cpu {cpu}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

//! `ha-bench`: the benchmark harness. The simulator's pre-serialized firehose (realistic
//! `state_changed` events of about 1 kB, fixed seed, over loopback) through the ingestor's pipeline,
//! with a null sink (parse, filter, route, count) or the real SQLite writer; one table with
//! sustained events/s, end-to-end lag, peak RSS and CPU per million events.
//!
//! Every in-process scenario runs in a fresh child process of this binary (one tokio runtime with
//! the simulator and the pipeline), so each one's peak RSS and CPU time are its own. The
//! whole-process scenarios run the real `ha-ingestor run` against an `ha-sim` process and measure
//! the ingestor from /proc.

mod clients;
mod inproc;
mod measure;
mod whole;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// Benchmarks the ingestor against the simulator's firehose and prints one table.
///
/// Scenarios: a) max throughput, null sink; b) max throughput, SQLite; c) lag at 1k events/s with
/// default flush settings; d) RSS at 10k events/s into SQLite; e) subscribe_entities vs
/// subscribe_events (throughput, and no change merged or lost); f) client speed: a bare
/// tokio-tungstenite + serde client next to the library's borrowed and owned typed events, server
/// and client pinned to separate cores, each measured --runs times (median); g) 100 simulated HA
/// instances at 100 events/s each; h) a flood (the ingestor on one core); i) 1000 simulated
/// instances at 10 events/s each (as a process only).
/// Rows marked `proc` run the real `ha-ingestor run` binary against an `ha-sim` process.
#[derive(Parser, Debug)]
#[command(name = "ha-bench", version)]
struct Args {
    /// About 1-2 s per scenario (CI): checks that everything runs and counts add up; the numbers
    /// are not meaningful.
    #[arg(long)]
    short: bool,
    /// Seconds measured per scenario (after a warm-up) [default: 10, or 1.2 with --short].
    #[arg(long)]
    secs: Option<f64>,
    /// Scenario f: measurements per client variant (interleaved); its rows are the medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// In-process scenarios, whole-process scenarios, or both.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Only these scenarios (letters, e.g. `--only a,b,c`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the `ha-ingestor` and `ha-sim` binaries are [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Print the rows as JSON lines too.
    #[arg(long)]
    json: bool,
    /// Internal: run one in-process scenario and print its rows (used by the parent).
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: warm-up seconds for --child.
    #[arg(long, hide = true, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Both,
    InProcess,
    WholeProcess,
}

/// One line of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Scenario letter and what it is.
    pub scenario: String,
    /// Events counted in the measured window.
    pub events: u64,
    /// Sustained events per second over the window.
    pub events_per_sec: f64,
    /// p50, p99, max end-to-end lag in ms.
    pub lag_ms: Option<[f64; 3]>,
    /// The lag comes from the ingestor's Prometheus histogram buckets (whole-process rows).
    pub lag_from_buckets: bool,
    /// Peak RSS in KiB.
    pub rss_kib: u64,
    /// CPU seconds per million events.
    pub cpu_s_per_m: f64,
    /// Whether the counts add up.
    pub ok: bool,
    /// The count check, or what went wrong.
    pub check: String,
}

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
    pub short: bool,
    /// Scenario f's measurements per variant.
    pub runs: usize,
}

const IN_PROCESS: &[&str] = &["a", "b", "c", "c50", "d", "e", "f", "g"];
const WHOLE_PROCESS: &[&str] = &["b", "c", "d", "g", "h", "i", "i2"];

fn main() -> ExitCode {
    let args = Args::parse();
    let window = Duration::from_secs_f64(args.secs.unwrap_or(if args.short { 1.2 } else { 10.0 }));
    let warmup = Duration::from_secs_f64(if args.short { 0.3 } else { args.warmup });
    let timing = Timing {
        warmup,
        window,
        short: args.short,
        runs: if args.short { 1 } else { args.runs.max(1) },
    };
    if let Some(id) = &args.child {
        return match inproc::run_child(id, timing) {
            Ok(rows) => {
                for r in rows {
                    println!("ROW {}", serde_json::to_string(&r).expect("rows serialize"));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("scenario {id}: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let header = measure::machine();
    for l in &header {
        println!("{l}");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "load: the simulator's firehose (pre-serialized, seed {}), about {} bytes per state_changed event, \
         over loopback; the simulator and the ingestor share the {cores} cores",
        inproc::SEED,
        inproc::average_event_bytes()
    );
    println!(
        "window: {:.1} s measured after {:.1} s of warm-up per scenario{}",
        window.as_secs_f64(),
        warmup.as_secs_f64(),
        if args.short {
            " (--short: numbers not meaningful)"
        } else {
            ""
        }
    );
    println!();

    let wanted = |id: &str| {
        args.only.is_empty()
            || args
                .only
                .iter()
                .any(|o| o == id || (o.len() == 1 && id.starts_with(o.as_str())))
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut failures = Vec::new();
    if args.mode != Mode::WholeProcess {
        for id in IN_PROCESS.iter().filter(|id| wanted(id)) {
            eprintln!("running in-process scenario {id}...");
            match run_child_process(id, &args, timing) {
                Ok(r) => rows.extend(r),
                Err(e) => failures.push(format!("in-process {id}: {e}")),
            }
        }
    }
    if args.mode != Mode::InProcess {
        let bins = args.bin_dir.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .unwrap_or_default()
        });
        for id in WHOLE_PROCESS.iter().filter(|id| wanted(id)) {
            eprintln!("running whole-process scenario {id}...");
            match whole::run(id, &bins, timing) {
                Ok(r) => rows.push(r),
                Err(e) => failures.push(format!("whole-process {id}: {e}")),
            }
        }
    }

    print_table(&rows);
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r).expect("rows serialize"));
        }
    }
    println!();
    print_targets(&rows);
    for r in rows.iter().filter(|r| !r.ok) {
        failures.push(format!("{}: {}", r.scenario, r.check));
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("FAILED {f}");
        }
        ExitCode::FAILURE
    }
}

fn run_child_process(id: &str, args: &Args, timing: Timing) -> Result<Vec<Row>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(id)
        .arg("--secs")
        .arg(timing.window.as_secs_f64().to_string())
        .arg("--warmup")
        .arg(args.warmup.to_string())
        .arg("--runs")
        .arg(timing.runs.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if args.short {
        cmd.arg("--short");
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| e.to_string())?;
            match line.strip_prefix("ROW ") {
                Some(json) => rows.push(serde_json::from_str(json).map_err(|e| e.to_string())?),
                None => println!("{line}"),
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the child process failed ({status})"));
    }
    Ok(rows)
}

fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

fn fmt_ms(v: f64, approx: bool) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if approx { format!("~{s}") } else { s }
}

fn print_table(rows: &[Row]) {
    let head = [
        "scenario",
        "events/s",
        "lag p50 ms",
        "lag p99 ms",
        "lag max ms",
        "peak RSS MiB",
        "CPU s/M events",
        "counts",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let lag = |i: usize| {
                r.lag_ms.map_or("-".to_string(), |l| {
                    if r.lag_from_buckets && i == 2 {
                        format!("<={}", fmt_ms(l[i], false))
                    } else {
                        fmt_ms(l[i], r.lag_from_buckets)
                    }
                })
            };
            [
                r.scenario.clone(),
                fmt_rate(r.events_per_sec),
                lag(0),
                lag(1),
                lag(2),
                format!("{:.1}", r.rss_kib as f64 / 1024.0),
                format!("{:.2}", r.cpu_s_per_m),
                r.check.clone(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            width[i] = width[i].max(v.chars().count());
        }
    }
    let line = |v: &[String]| {
        let mut s = String::from("|");
        for (i, c) in v.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i == 0 || i == 7 {
                s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
            }
        }
        s
    };
    println!("{}", line(&head.map(String::from)));
    let mut sep = String::from("|");
    for (i, w) in width.iter().enumerate() {
        if i == 0 || i == 7 {
            sep.push_str(&format!(" {} |", "-".repeat(*w)));
        } else {
            sep.push_str(&format!(" {}: |", "-".repeat(w - 1)));
        }
    }
    println!("{sep}");
    for c in &cells {
        println!("{}", line(c));
    }
}

fn print_targets(rows: &[Row]) {
    let find = |prefix: &str| rows.iter().find(|r| r.scenario.starts_with(prefix));
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!("targets:");
    if let Some(r) = find("a ") {
        println!(
            "  null sink >= 400k events/s: {} ({})",
            verdict(r.events_per_sec >= 400_000.0),
            fmt_rate(r.events_per_sec)
        );
    }
    for p in ["b ", "b proc"] {
        if let Some(r) = find(p) {
            println!(
                "  SQLite >= 150k events/s ({}): {} ({})",
                r.scenario,
                verdict(r.events_per_sec >= 150_000.0),
                fmt_rate(r.events_per_sec)
            );
        }
    }
    for p in ["c ", "c proc"] {
        if let Some(r) = find(p)
            && let Some(l) = r.lag_ms
        {
            println!(
                "  p99 lag <= 100 ms at 1k events/s ({}): {} ({} ms)",
                r.scenario,
                verdict(l[1] <= 100.0),
                fmt_ms(l[1], r.lag_from_buckets)
            );
        }
    }
    let rate = |p: &str| find(p).map(|r| r.events_per_sec);
    let ratio = |what: &str, lib: &str, bare: &str, target: f64| {
        if let (Some(l), Some(b)) = (find(lib), find(bare)) {
            let r = l.events_per_sec / b.events_per_sec.max(1e-9);
            // Events per CPU second: what the client costs, whoever sets the pace.
            let per_cpu = b.cpu_s_per_m / l.cpu_s_per_m.max(1e-9);
            println!(
                "  {what} >= {:.0} % of the bare parse: {} ({:.0} %: {} vs {}; per CPU second {:.0} %: {:.2} vs {:.2} µs/event)",
                target * 100.0,
                verdict(r >= target),
                r * 100.0,
                fmt_rate(l.events_per_sec),
                fmt_rate(b.events_per_sec),
                per_cpu * 100.0,
                l.cpu_s_per_m,
                b.cpu_s_per_m,
            );
        }
    };
    ratio(
        "client, borrowed typed events",
        "f ha_client, event.state_changed()",
        "f bare tokio-tungstenite + serde, StateChangedRef",
        0.85,
    );
    ratio(
        "client, owned typed events",
        "f ha_client, event.parse::<StateChangedEvent>()",
        "f bare tokio-tungstenite + serde, StateChangedEvent",
        0.90,
    );
    if let (Some(o), Some(h)) = (
        rate("f ha_client, event.parse::<StateChangedEvent>()"),
        rate("f ha_client, HaEvent"),
    ) {
        println!(
            "  (owned typed events vs HaEvent then StateChangedData: {:.2}x)",
            o / h.max(1e-9)
        );
    }
    if let Some(r) = find("d proc") {
        println!(
            "  RSS <= 20 MiB at 10k events/s ({}; the ingestor process alone): {} ({:.1} MiB)",
            r.scenario,
            verdict(r.rss_kib <= 20 * 1024),
            r.rss_kib as f64 / 1024.0
        );
    }
    for r in [find("i proc"), find("i2 proc")].into_iter().flatten() {
        let core = r.events_per_sec * r.cpu_s_per_m / 1e6;
        println!(
            "  1000 instances: RSS <= 200 MiB and <= 30 % of a core ({}): {} ({:.1} MiB, {:.0} % of a core)",
            r.scenario,
            verdict(r.rss_kib <= 200 * 1024 && core <= 0.30),
            r.rss_kib as f64 / 1024.0,
            core * 100.0
        );
    }
    if let Some(r) = find("d ") {
        println!(
            "  (in-process {}: {:.1} MiB, simulator included; for comparison only)",
            r.scenario,
            r.rss_kib as f64 / 1024.0
        );
    }
}

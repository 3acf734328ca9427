//! Whole-process scenarios: the real `ha-ingestor run` binary against an `ha-sim --firehose`
//! process, the ingestor measured from /proc (peak RSS is its lifetime VmHWM), counts and lag from
//! its `/metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::inproc::WINDOW;
use crate::measure::{cpu_seconds, peak_rss_kib};
use crate::{Row, Timing};

struct Spec {
    name: &'static str,
    /// Per connection; 0 = as fast as the ingestor takes them (bounded by a credit window).
    rate: u64,
    instances: usize,
    /// The ingestor on one core, fed faster than it can take: its buffers must hold memory down,
    /// and what it drops must be counted (as a gap; the firehose has no history to refill it).
    flood: bool,
    /// Top-level config lines of the ingestor for this row.
    config: &'static str,
}

pub fn run(id: &str, bins: &Path, timing: Timing) -> Result<Row, String> {
    let spec = match id {
        "b" => Spec {
            name: "b proc SQLite, max",
            rate: 0,
            instances: 1,
            flood: false,
            config: "",
        },
        "c" => Spec {
            name: "c proc SQLite, 1k/s, flush 200 ms (default)",
            rate: 1000,
            instances: 1,
            flood: false,
            config: "",
        },
        "d" => Spec {
            name: "d proc SQLite, 10k/s",
            rate: 10_000,
            instances: 1,
            flood: false,
            config: "",
        },
        "h" => Spec {
            name: "h proc flood 200k events at 100k/s, ingestor on one core",
            rate: 100_000,
            instances: 1,
            flood: true,
            config: "",
        },
        "g" => Spec {
            name: "g proc 100 instances x 100/s (one ha-sim process)",
            rate: 100,
            instances: 100,
            flood: false,
            config: "",
        },
        "i" => Spec {
            name: "i proc 1000 instances x 10/s (one ha-sim process)",
            rate: 10,
            instances: 1000,
            flood: false,
            config: "",
        },
        "i2" => Spec {
            name: "i2 proc 1000 instances x 10/s, statistics and registry off",
            rate: 10,
            instances: 1000,
            flood: false,
            config: "statistics = false\nregistry = false\n",
        },
        other => return Err(format!("no whole-process scenario '{other}'")),
    };
    let ingestor_bin = bins.join("ha-ingestor");
    let sim_bin = bins.join("ha-sim");
    for b in [&ingestor_bin, &sim_bin] {
        if !b.exists() {
            return Err(format!(
                "{} is missing: build it with `cargo build --release -p ha-ingestor -p ha-sim` \
                 (or point --bin-dir at the binaries)",
                b.display()
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("ha-bench-{}-proc-{id}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run_in(&spec, &ingestor_bin, &sim_bin, &dir, timing);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Children killed (by their own pid) when dropped.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_in(
    spec: &Spec,
    ingestor_bin: &Path,
    sim_bin: &Path,
    dir: &Path,
    timing: Timing,
) -> Result<Row, String> {
    let mut kids = Kids(Vec::new());
    let mut sim = Command::new(sim_bin)
        .args(["--bind", "127.0.0.1:0", "--firehose", "--credit-stdin"])
        .args(["--rate", &spec.rate.to_string()])
        .args(["--seed", &crate::inproc::SEED.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", sim_bin.display()))?;
    let mut credit_pipe = sim.stdin.take().ok_or("no stdin")?;
    let out = sim.stdout.take().ok_or("no stdout")?;
    kids.0.push(sim);
    let mut lines = BufReader::new(out).lines();
    let url = lines
        .next()
        .and_then(Result::ok)
        .ok_or("ha-sim printed no URL")?;
    std::thread::spawn(move || for _ in lines {});
    let sim_addr = url
        .trim()
        .strip_prefix("http://")
        .ok_or_else(|| format!("unexpected ha-sim URL '{url}'"))?
        .to_string();

    let metrics_addr = {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?
    };
    let names: Vec<String> = (0..spec.instances)
        .map(|i| {
            if spec.instances == 1 {
                "bench".into()
            } else {
                format!("ha{i:03}")
            }
        })
        .collect();
    let mut config = format!(
        "db = \"{}\"\nmetrics_addr = \"{metrics_addr}\"\nbackfill = false\n{}",
        dir.join("bench.db").display(),
        spec.config
    );
    for n in &names {
        config.push_str(&format!(
            "\n[[instance]]\nname = \"{n}\"\nurl = \"{url}\"\ntoken_env = \"HA_BENCH_TOKEN\"\n"
        ));
    }
    let config_path = dir.join("ingestor.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let log_path = dir.join("ingestor.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    // The flood pins the ingestor to the second core (the simulator keeps the first), as a small
    // box that cannot keep up would be.
    let mut ingestor = if spec.flood && Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.args(["-c", "1"]).arg(ingestor_bin);
        c
    } else {
        Command::new(ingestor_bin)
    };
    let ingestor = ingestor
        .arg("--config")
        .arg(&config_path)
        .arg("run")
        .env("HA_BENCH_TOKEN", "sim-admin-token")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", ingestor_bin.display()))?;
    let pid = ingestor.id().to_string();
    kids.0.push(ingestor);
    let maddr = metrics_addr.to_string();
    let log_tail = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().rev().take(5).collect::<Vec<_>>().join(" / "))
            .unwrap_or_default()
    };

    // Ready: every instance connected (/health answers 200), then a probe state reached SQLite on
    // every instance (so the subscriptions are live), and everything received was committed.
    let started = Instant::now();
    let mut k = 0;
    let baseline = loop {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the ingestor did not come up within 30 s: {}",
                log_tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
        if !matches!(http(&maddr, "GET", "/health", &[], ""), Ok((200, _))) {
            continue;
        }
        let m = Metrics::fetch(&maddr)?;
        let received_everywhere = names.iter().all(|n| {
            m.sum(
                "ha_ingestor_events_received_total",
                &[&format!("instance=\"{n}\"")],
            ) >= 1.0
        });
        if !received_everywhere {
            k += 1;
            let _ = http(
                &sim_addr,
                "POST",
                "/api/states/sensor.bench_probe",
                &[("Authorization", "Bearer sim-admin-token")],
                &format!("{{\"state\": \"{k}\"}}"),
            );
            continue;
        }
        let received = m.sum("ha_ingestor_events_received_total", &[]);
        let processed = m.processed();
        if processed >= received {
            break processed as u64;
        }
    };

    // Load: a fixed credit for fixed rates (enough for warm-up and window); a moving window
    // above what was committed when running flat out.
    let per_conn = spec.instances as u64;
    let total_secs = (timing.warmup + timing.window).as_secs_f64() + 0.5;
    // The flood: 200k events as fast as the simulator sends them, what the issue measured.
    let fixed_credit = match spec.flood {
        true => 200_000,
        false => (spec.rate as f64 * total_secs).ceil() as u64,
    };
    let mut credit = if spec.rate > 0 { fixed_credit } else { WINDOW };
    give(&mut credit_pipe, credit)?;
    let done_so_far = |m: &Metrics| (m.processed() as u64).saturating_sub(baseline) / per_conn;
    let pace = |until: Instant, credit: &mut u64, pipe: &mut ChildStdin| -> Result<(), String> {
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
            if spec.rate == 0 {
                let m = Metrics::fetch(&maddr)?;
                *credit = done_so_far(&m) + WINDOW;
                give(pipe, *credit)?;
            }
        }
        Ok(())
    };
    pace(
        Instant::now() + timing.warmup,
        &mut credit,
        &mut credit_pipe,
    )?;
    let m0 = Metrics::fetch(&maddr)?;
    let (t0, cpu0) = (Instant::now(), cpu_seconds(&pid));
    pace(
        Instant::now() + timing.window,
        &mut credit,
        &mut credit_pipe,
    )?;
    let m1 = Metrics::fetch(&maddr)?;
    let (secs, cpu1, rss) = (
        t0.elapsed().as_secs_f64(),
        cpu_seconds(&pid),
        peak_rss_kib(&pid),
    );
    let events = (m1.processed() - m0.processed()).max(0.0) as u64;
    let lag = m1.lag_quantiles(&m0);

    // Drain: the simulator stops at the credit; wait for the ingestor to commit all of it.
    let want = credit * per_conn;
    let (mut last, mut since) = (0u64, Instant::now());
    let got = loop {
        let m = Metrics::fetch(&maddr)?;
        let got = (m.processed() as u64).saturating_sub(baseline);
        if got >= want || since.elapsed() > Duration::from_secs(5) {
            break got;
        }
        if got != last {
            (last, since) = (got, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let m = Metrics::fetch(&maddr)?;
    let overflow = m.sum(
        "ha_ingestor_events_dropped_total",
        &["reason=\"buffer_overflow\""],
    );
    let dups = m.sum(
        "ha_ingestor_events_dropped_total",
        &["reason=\"duplicate\""],
    ) as u64;
    let unchanged = m.sum("ha_ingestor_states_unchanged_total", &[]) as u64;
    let overflow = overflow as u64;
    drop(credit_pipe);
    drop(kids);
    let (ok, check) = if spec.flood {
        // Every event committed or counted as dropped, or lost to a disconnect (HA drops a reader
        // 4096 messages behind): both are gaps the ingestor records and reads back from HA's
        // history (the firehose has none). And memory within the bound.
        let gaps = m.sum("ha_ingestor_gaps_detected_total", &[]) as u64;
        let accounted = got + overflow == want || (got + overflow < want && gaps > 0);
        let ok = accounted && dups == 0 && rss <= 64 * 1024;
        let check = format!(
            "{}: {want} sent, {got} committed, {overflow} dropped by the client buffer, {} lost \
             to disconnects; {gaps} gaps recorded; peak RSS {:.1} MiB (bound 64)",
            if ok { "ok" } else { "FAILED" },
            want.saturating_sub(got + overflow),
            rss as f64 / 1024.0
        );
        (ok, check)
    } else {
        let ok = got == want && dups == 0 && overflow == 0;
        let check = if ok {
            format!("ok: {want} sent = {got} committed ({unchanged} unchanged skipped)")
        } else {
            format!(
                "LOST: {want} sent, {got} committed, {overflow} dropped by the client buffer, {dups} duplicates"
            )
        };
        (ok, check)
    };
    Ok(Row {
        scenario: spec.name.to_string(),
        events,
        events_per_sec: events as f64 / secs.max(1e-9),
        lag_ms: lag,
        lag_from_buckets: true,
        rss_kib: rss,
        cpu_s_per_m: (cpu1 - cpu0) / (events.max(1) as f64) * 1e6,
        ok,
        check,
    })
}

fn give(pipe: &mut ChildStdin, credit: u64) -> Result<(), String> {
    writeln!(pipe, "{credit}")
        .and_then(|_| pipe.flush())
        .map_err(|e| format!("ha-sim's stdin: {e}"))
}

/// A plain HTTP/1.1 request (no dependencies); returns the status and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP status")?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// The ingestor's `/metrics`, parsed.
struct Metrics(Vec<(String, String, f64)>);

impl Metrics {
    fn fetch(addr: &str) -> Result<Metrics, String> {
        let (status, body) = http(addr, "GET", "/metrics", &[], "")?;
        if status != 200 {
            return Err(format!("/metrics answered {status}"));
        }
        let mut v = Vec::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            v.push((name.to_string(), labels.to_string(), value));
        }
        Ok(Metrics(v))
    }

    /// Sum of a metric's series whose labels contain every one of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|x| l.contains(x)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Records the writer accounted for: inserted, skipped as unchanged, or duplicates.
    fn processed(&self) -> f64 {
        self.sum("ha_ingestor_events_written_total", &["sink=\"sqlite\""])
            + self.sum("ha_ingestor_states_unchanged_total", &[])
            + self.sum(
                "ha_ingestor_events_dropped_total",
                &["reason=\"duplicate\""],
            )
    }

    /// `(le, cumulative count)` of the lag histogram.
    fn lag_buckets(&self) -> Vec<(f64, f64)> {
        let mut b: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|(n, _, _)| n == "ha_ingestor_lag_seconds_bucket")
            .filter_map(|(_, l, v)| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }

    /// p50, p99 (linear within a bucket) and the upper bound of the highest non-empty bucket, in
    /// ms, over what was recorded since `before`.
    fn lag_quantiles(&self, before: &Metrics) -> Option<[f64; 3]> {
        let old = before.lag_buckets();
        let delta: Vec<(f64, f64)> = self
            .lag_buckets()
            .into_iter()
            .map(|(le, c)| {
                let o = old.iter().find(|(l, _)| *l == le).map_or(0.0, |x| x.1);
                (le, c - o)
            })
            .collect();
        let total = delta.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let q = |q: f64| {
            let rank = q * total;
            let (mut lo, mut below) = (0.0, 0.0);
            for &(le, cum) in &delta {
                if cum >= rank {
                    if le.is_infinite() {
                        return lo;
                    }
                    let frac = if cum > below {
                        (rank - below) / (cum - below)
                    } else {
                        1.0
                    };
                    return lo + (le - lo) * frac;
                }
                (lo, below) = (le, cum);
            }
            lo
        };
        let max = delta
            .iter()
            .find(|(_, cum)| *cum >= total)
            .map_or(0.0, |(le, _)| *le);
        let max = if max.is_infinite() {
            delta
                .iter()
                .rev()
                .find(|(le, _)| le.is_finite())
                .map_or(0.0, |x| x.0)
        } else {
            max
        };
        Some([q(0.5) * 1e3, q(0.99) * 1e3, max * 1e3])
    }
}

//! Measuring: a latency histogram, a process's RSS and CPU time from /proc, the machine.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A log-linear histogram of microsecond values: 64 sub-buckets per power of two (under 1.6 %
/// error), constant memory whatever the number of samples.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

const SUB: u32 = 6; // 2^6 sub-buckets

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; 64 * 60],
            n: 0,
            max: 0,
        }
    }
}

impl Hist {
    fn index(v: u64) -> usize {
        if v < 64 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // floor(log2 v) >= 6
        let sub = (v >> (e - SUB)) & 63;
        (64 + (e - SUB) as u64 * 64 + sub) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> f64 {
        if i < 64 {
            return i as f64;
        }
        let e = (i - 64) / 64;
        let sub = ((i - 64) % 64) as u64;
        let lo = (64 + sub) << e;
        lo as f64 + ((1u64 << e) as f64 - 1.0) / 2.0
    }

    /// Records one value (negative values count as 0).
    pub fn record(&mut self, us: i64) {
        let v = us.max(0) as u64;
        let i = Self::index(v).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.n = 0;
        self.max = 0;
    }

    /// The `q` quantile (0..=1), in microseconds.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max as f64);
            }
        }
        self.max as f64
    }

    /// p50, p99 and max in milliseconds; `None` without samples.
    pub fn summary_ms(&self) -> Option<[f64; 3]> {
        (self.n > 0).then(|| {
            [
                self.quantile(0.5) / 1e3,
                self.quantile(0.99) / 1e3,
                self.max as f64 / 1e3,
            ]
        })
    }
}

/// `Vm*` field of /proc/<pid>/status in KiB (`pid` "self" for this process).
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: &str) -> u64 {
    status_kib(pid, "VmHWM").unwrap_or(0)
}

/// Resets the peak RSS to the current RSS (Linux: `5` into /proc/<pid>/clear_refs).
pub fn reset_peak_rss(pid: &str) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// User plus system CPU seconds of a process, from /proc/<pid>/stat (`utime` + `stime`).
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name is in parentheses and may hold spaces: fields count from after ')'.
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the man page, at index 0 here; utime is 14, stime is 15.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// This process's CPU seconds from getrusage (microsecond resolution).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return cpu_seconds("self");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One line describing the machine.
pub fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = status_meminfo_mib();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc: unknown".into());
    let profile = if cfg!(debug_assertions) {
        "DEBUG build (numbers are meaningless; use --release)"
    } else {
        "release build"
    };
    vec![
        format!("machine: {cores} cores, {model}, {mem} MiB RAM, Linux {kernel}"),
        format!("toolchain: {rustc}; {profile}"),
    ]
}

fn status_meminfo_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |k| k / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Hist::default();
        for v in 1..=100_000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.02, "{p50}");
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.02, "{p99}");
        assert_eq!(h.summary_ms().unwrap()[2], 100.0);
        h.clear();
        assert!(h.summary_ms().is_none());
        h.record(-5);
        h.record(3);
        assert_eq!(h.quantile(1.0), 3.0);
    }

    #[test]
    fn proc_readers_see_this_process() {
        assert!(peak_rss_kib("self") > 0);
        let spin = std::time::Instant::now();
        while spin.elapsed().as_millis() < 30 {
            std::hint::black_box(0u64);
        }
        assert!(self_cpu_seconds() > 0.0);
        let _ = cpu_seconds("self");
    }
}

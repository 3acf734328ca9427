//! A full disk under the database: the ingestor (the binary) keeps running, stores nothing it does
//! not count, says so in `/health` and its log, and once space is back stores every change the
//! simulator recorded, each once, the rows it could not take meanwhile included.
//!
//! Needs root (it mounts a small tmpfs). Without root it says so and passes, unless
//! `HA_INGESTOR_REQUIRE_ROOT_TESTS` is set (`.ci/run` sets it, so there it fails instead).

mod process;
mod sinks;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ha_sim::{Sim, SimConfig};
use process::{free_port, metric, recorded, spawn_ingestor, until, wait_ready};
use serde_json::json;
use sinks::reqwest_client;

const WAIT: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uid = s.lines().find(|l| l.starts_with("Uid:"))?;
            Some(uid.split_whitespace().nth(1)? == "0")
        })
        .unwrap_or(false)
}

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `path` with one file until it refuses more; returns the file's size.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    written
}

/// (entity_id, last_updated in µs, state) of the stored `sensor.disk_*` rows, one per row, sorted.
fn stored(db: &Path) -> Vec<(String, i64, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT e.entity_id, s.last_updated_us, s.state FROM states s \
             JOIN entities e ON e.id = s.entity WHERE e.entity_id LIKE 'sensor.disk_%'",
        )
        .unwrap();
    let mut rows: Vec<_> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

/// `/health`: the status code and the body.
async fn health(port: u16) -> (u16, serde_json::Value) {
    let r = reqwest_client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A change with attributes of its own (about 2 KB), so every row takes space.
fn change(sim: &Sim, i: usize) {
    sim.set_state(
        &format!("sensor.disk_{}", i % 4),
        &i.to_string(),
        json!({"i": i, "pad": "x".repeat(2000)}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_and_says_so() {
    if !is_root() {
        assert!(
            std::env::var_os("HA_INGESTOR_REQUIRE_ROOT_TESTS").is_none(),
            "this test needs root (it mounts a tmpfs)"
        );
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("mnt"), "4m");
    let db = mnt.0.join("full.db");
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, &sim.config().admin_token).unwrap();
    let metrics = free_port();
    let config = dir.path().join("ingestor.toml");
    std::fs::write(
        &config,
        format!(
            r#"
db = "{db}"
metrics_addr = "127.0.0.1:{metrics}"
[[instance]]
name = "sim"
url = "{url}"
token_file = "{token}"
# Small buffers, so the changes made while the disk is full overflow them and come back from
# HA's history, not from memory.
event_buffer_bytes = 16384
[filter.include]
entity_globs = ["sensor.disk_*"]
[store]
flush_interval_ms = 50
"#,
            db = db.display(),
            url = sim.url(),
            token = token.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("ingestor.log");
    let mut ingestor = spawn_ingestor(&config, &log);
    wait_ready(metrics, &mut ingestor, "sim").await;
    let since_us = (jiff::Timestamp::now().as_microsecond()) - 1_000_000;

    let mut n = 0;
    for _ in 0..20 {
        change(&sim, n);
        n += 1;
    }
    until("the first 20 changes stored", &log, WAIT, async || {
        stored(&db).len() == 20
    })
    .await;

    let filler = mnt.0.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the tmpfs had room for the filler");
    // Changes go on until the writer meets the full disk.
    until("/health reports the full disk", &log, WAIT, async || {
        change(&sim, n);
        n += 1;
        let (_, body) = health(metrics).await;
        body["sinks"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("is full"))
    })
    .await;
    for _ in 0..300 {
        change(&sim, n);
        n += 1;
    }
    let (status, body) = health(metrics).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert!(
        ingestor.child.try_wait().unwrap().is_none(),
        "the ingestor exited on a full disk\n{}",
        process::log_tail(&log)
    );
    // Nothing counted that is not stored.
    let written = metric(metrics, "ha_ingestor_events_written_total").await;
    assert_eq!(written as usize, stored(&db).len(), "written_total vs rows");
    assert!(stored(&db).len() < n, "some changes wait for space");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("is full"), "the log says the disk is full");

    std::fs::remove_file(&filler).unwrap();
    let want = recorded(
        &sim.url(),
        &sim.config().admin_token,
        &[
            "sensor.disk_0",
            "sensor.disk_1",
            "sensor.disk_2",
            "sensor.disk_3",
        ],
        since_us,
    )
    .await;
    assert_eq!(want.len(), n, "the simulator recorded every change");
    until(
        "every recorded change stored once",
        &log,
        WAIT,
        async || stored(&db) == want,
    )
    .await;
    until("/health is ok again", &log, WAIT, async || {
        health(metrics).await.0 == 200
    })
    .await;
    // Some of them came back through the gap path: dropped, recorded, read from history.
    assert!(
        metric(metrics, "ha_ingestor_gaps_detected_total").await >= 1.0,
        "the overflow was recorded as a gap"
    );
    assert!(
        metric(metrics, "ha_ingestor_backfilled_states_total").await >= 1.0,
        "rows came back from HA's history"
    );
    // Live and backfilled rows alike are counted once, when inserted.
    let written = metric(metrics, "ha_ingestor_events_written_total").await;
    assert_eq!(written as usize, n, "rows counted as written");
}

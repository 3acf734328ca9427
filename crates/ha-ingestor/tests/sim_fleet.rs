//! Several instances in one process, isolated (the binary, against the simulator): an instance
//! whose token is refused stops alone, once, says so in `/health` and the metrics, and starts
//! again when its token file changes; the others store every change meanwhile.

mod process;
mod sinks;

use std::path::Path;
use std::time::Duration;

use ha_sim::{Sim, SimConfig};
use process::{free_port, metric, recorded, spawn_ingestor, until};
use serde_json::json;
use sinks::reqwest_client;

const WAIT: Duration = Duration::from_secs(30);

async fn health(port: u16) -> (u16, serde_json::Value) {
    let r = reqwest_client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `/health`'s body, or `Null` while nothing listens yet.
async fn health_body(port: u16) -> serde_json::Value {
    match reqwest_client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Whether `/health` says `instance` is connected (false while nothing listens yet).
async fn connected(metrics: u16, instance: &str) -> bool {
    health_body(metrics).await["instances"][instance]["connected"] == true
}

/// (entity_id, last_updated in µs, state) of `instance`'s stored `sensor.fleet_*` rows, sorted.
fn stored(db: &Path, instance: &str) -> Vec<(String, i64, String)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT e.entity_id, s.last_updated_us, s.state FROM states s \
         JOIN entities e ON e.id = s.entity \
         WHERE e.instance = ?1 AND e.entity_id LIKE 'sensor.fleet_%'",
    ) else {
        return Vec::new();
    };
    let mut rows: Vec<_> = stmt
        .query_map([instance], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

/// [`stored`] rows of `instance` from `since_us` on.
fn stored_since(db: &Path, instance: &str, since_us: i64) -> Vec<(String, i64, String)> {
    let mut rows = stored(db, instance);
    rows.retain(|r| r.1 >= since_us);
    rows
}

/// A config with instances `good` and `bad` (a wrong token), both on `sim`.
fn config(dir: &Path, sim: &Sim, metrics: u16, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("good-token"), &sim.config().admin_token).unwrap();
    std::fs::write(dir.join("bad-token"), "not-a-token").unwrap();
    let path = dir.join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            r#"
db = "{db}"
metrics_addr = "127.0.0.1:{metrics}"
{extra}
[[instance]]
name = "good"
url = "{url}"
token_file = "{good}"
[[instance]]
name = "bad"
url = "{url}"
token_file = "{bad}"
[filter.include]
entity_globs = ["sensor.fleet_*"]
[store]
flush_interval_ms = 50
"#,
            db = dir.join("fleet.db").display(),
            url = sim.url(),
            good = dir.join("good-token").display(),
            bad = dir.join("bad-token").display(),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_its_instance_only_until_its_file_changes() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let config = config(dir.path(), &sim, metrics, "");
    let log = dir.path().join("fleet.log");
    let mut ingestor = spawn_ingestor(&config, &log);
    let db = dir.path().join("fleet.db");

    until(
        "/health names the failed instance",
        &log,
        WAIT,
        async || {
            let body = health_body(metrics).await;
            body["instances"]["bad"]["failed"]["error"].is_string()
                && body["instances"]["good"]["connected"] == true
        },
    )
    .await;
    let (status, body) = health(metrics).await;
    assert_eq!(
        status, 200,
        "ready with one instance of two (ready_when any): {body}"
    );
    assert_eq!(body["status"], "degraded", "{body}");
    let error = body["instances"]["bad"]["failed"]["error"]
        .as_str()
        .unwrap();
    assert!(error.contains("bad"), "{error}");
    assert!(
        body["instances"]["bad"]["failed"]["since"].is_string(),
        "{body}"
    );

    // The good instance stores every change.
    let since_us = jiff::Timestamp::now().as_microsecond();
    for i in 0..40 {
        sim.set_state(
            &format!("sensor.fleet_{}", i % 4),
            &i.to_string(),
            json!({"i": i}),
        );
    }
    let entities = [
        "sensor.fleet_0",
        "sensor.fleet_1",
        "sensor.fleet_2",
        "sensor.fleet_3",
    ];
    let want = recorded(&sim.url(), &sim.config().admin_token, &entities, since_us).await;
    assert_eq!(want.len(), 40);
    until("the good instance's rows", &log, WAIT, async || {
        stored(&db, "good") == want
    })
    .await;
    assert!(stored(&db, "bad").is_empty());
    assert!(
        ingestor.child.try_wait().unwrap().is_none(),
        "the process runs on"
    );
    assert_eq!(
        metric(metrics, r#"ha_ingestor_instance_up{instance="bad"}"#).await,
        0.0
    );
    assert_eq!(
        metric(metrics, r#"ha_ingestor_instance_up{instance="good"}"#).await,
        1.0
    );
    assert_eq!(
        sim.stats().auth_invalid,
        1,
        "the refused token was tried once"
    );

    // A new token in its file: the instance starts again and its changes arrive too.
    std::fs::write(dir.path().join("bad-token"), &sim.config().admin_token).unwrap();
    until("the instance is back", &log, WAIT, async || {
        let (_, body) = health(metrics).await;
        body["instances"]["bad"]["connected"] == true
            && body["instances"]["bad"]["failed"].is_null()
    })
    .await;
    let since_us = jiff::Timestamp::now().as_microsecond();
    for i in 0..20 {
        sim.set_state("sensor.fleet_again", &i.to_string(), json!({}));
    }
    let want = recorded(
        &sim.url(),
        &sim.config().admin_token,
        &["sensor.fleet_again"],
        since_us,
    )
    .await;
    until("the restarted instance's rows", &log, WAIT, async || {
        stored(&db, "bad")
            .into_iter()
            .filter(|r| r.0 == "sensor.fleet_again" && r.1 >= since_us)
            .collect::<Vec<_>>()
            == want
    })
    .await;
    assert_eq!(health(metrics).await.1["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_on_instance_failure_keeps_the_single_instance_behaviour() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let config = config(dir.path(), &sim, metrics, "exit_on_instance_failure = true");
    let log = dir.path().join("fleet.log");
    let mut ingestor = spawn_ingestor(&config, &log);
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = ingestor.child.try_wait().unwrap() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "it did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(3), "{}", process::log_tail(&log));
}

/// The stored states of `instance`'s `sensor.rules_probe`.
fn probe_states(db: &Path, instance: &str) -> Vec<String> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT s.state FROM states s JOIN entities e ON e.id = s.entity \
         WHERE e.instance = ?1 AND e.entity_id = 'sensor.rules_probe'",
    ) else {
        return Vec::new();
    };
    stmt.query_map([instance], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// (entity_id, state, attributes JSON) of every row `instance` stored, sorted.
fn stored_with_attributes(db: &Path, instance: &str) -> Vec<(String, String, String)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT e.entity_id, s.state, coalesce(a.json, '') FROM states s \
         JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes \
         WHERE e.instance = ?1 AND e.entity_id != 'sensor.rules_probe'",
    ) else {
        return Vec::new();
    };
    let mut rows: Vec<_> = stmt
        .query_map([instance], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

/// Two homes, each with its own `[instance.filter]` and `[instance.attributes]` on top of the
/// global ones: each stores exactly its own entities, with its own attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_applies_its_own_filter_and_attribute_rules_on_top_of_the_global_ones() {
    let north = Sim::start(SimConfig::default()).await.unwrap();
    let south = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    std::fs::write(dir.path().join("north-token"), &north.config().admin_token).unwrap();
    std::fs::write(dir.path().join("south-token"), &south.config().admin_token).unwrap();
    let config = dir.path().join("rules.toml");
    std::fs::write(
        &config,
        format!(
            r#"
db = "{db}"
metrics_addr = "127.0.0.1:{metrics}"
backfill = false
[filter.exclude]
entity_globs = ["sensor.noise_*"]
[attributes]
exclude = ["icon"]
[store]
flush_interval_ms = 50

[[instance]]
name = "north"
url = "{north}"
token_file = "{dir}/north-token"
[instance.filter.include]
domains = ["sensor"]
[instance.attributes]
exclude = ["secret"]

[[instance]]
name = "south"
url = "{south}"
token_file = "{dir}/south-token"
[instance.filter.include]
domains = ["light"]
entities = ["sensor.rules_probe"]
"#,
            db = dir.path().join("rules.db").display(),
            dir = dir.path().display(),
            north = north.url(),
            south = south.url(),
        ),
    )
    .unwrap();
    let log = dir.path().join("rules.log");
    let _ingestor = spawn_ingestor(&config, &log);
    let db = dir.path().join("rules.db");
    // Live once a probe of each home is stored (north keeps sensors; south lists the probe).
    let mut k = 0;
    until("both instances store their probe", &log, WAIT, async || {
        k += 1;
        for sim in [&north, &south] {
            sim.set_state("sensor.rules_probe", &k.to_string(), json!({}));
        }
        let conn = rusqlite::Connection::open(&db);
        let probes: i64 = conn
            .and_then(|c| {
                c.query_row(
                    "SELECT count(DISTINCT e.instance) FROM states s JOIN entities e ON e.id = s.entity \
                     WHERE e.entity_id = 'sensor.rules_probe'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap_or(0);
        probes == 2
    })
    .await;

    let attrs = json!({"unit_of_measurement": "W", "icon": "mdi:x", "secret": "s"});
    for sim in [&north, &south] {
        for i in 0..3 {
            sim.set_state("sensor.power", &i.to_string(), attrs.clone());
            sim.set_state("sensor.noise_1", &i.to_string(), attrs.clone());
            sim.set_state(
                "light.porch",
                if i % 2 == 0 { "on" } else { "off" },
                attrs.clone(),
            );
            sim.set_state("switch.pump", "on", attrs.clone());
        }
    }
    // North: sensors (its own filter) but not the globally excluded noise; without `icon`
    // (global) and `secret` (its own). South: lights, without `icon` only.
    let north_attrs = r#"{"unit_of_measurement":"W"}"#.to_string();
    let south_attrs = r#"{"unit_of_measurement":"W","secret":"s"}"#.to_string();
    let row = |e: &str, s: &str, a: &String| (e.to_string(), s.to_string(), a.clone());
    let want_north = vec![
        row("sensor.power", "0", &north_attrs),
        row("sensor.power", "1", &north_attrs),
        row("sensor.power", "2", &north_attrs),
    ];
    let want_south = vec![
        row("light.porch", "off", &south_attrs),
        row("light.porch", "on", &south_attrs),
        row("light.porch", "on", &south_attrs),
    ];
    // A last probe, after every change above: a home's changes arrive and are stored in order, so
    // once its probe is stored every excluded change has had its chance to be stored too (a check
    // of the wanted rows alone could pass before the last excluded ones arrived).
    for sim in [&north, &south] {
        sim.set_state("sensor.rules_probe", "last", json!({}));
    }
    until("each home's last probe", &log, WAIT, async || {
        ["north", "south"]
            .iter()
            .all(|home| probe_states(&db, home).iter().any(|s| s == "last"))
    })
    .await;
    assert_eq!(stored_with_attributes(&db, "north"), want_north);
    assert_eq!(stored_with_attributes(&db, "south"), want_south);
}

fn sighup(ingestor: &process::Ingestor) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &ingestor.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// An ingestor whose configuration a test rewrites and reloads: its files in a temporary
/// folder, the top-level keys `global` and `[store]` keys `store` kept across rewrites.
struct Reloadable {
    dir: tempfile::TempDir,
    metrics: u16,
    config: std::path::PathBuf,
    db: std::path::PathBuf,
    log: std::path::PathBuf,
    global: &'static str,
    store: &'static str,
}

impl Reloadable {
    fn new(global: &'static str, store: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (config, db, log) = (
            dir.path().join("reload.toml"),
            dir.path().join("reload.db"),
            dir.path().join("reload.log"),
        );
        Reloadable {
            dir,
            metrics: free_port(),
            config,
            db,
            log,
            global,
            store,
        }
    }

    /// Writes a config of the named instances, each `(name, sim, extra TOML for its table)`.
    fn write(&self, instances: &[(&str, &Sim, &str)]) {
        let mut text = format!(
            "db = \"{}\"\nmetrics_addr = \"127.0.0.1:{}\"\n{}\n[store]\nflush_interval_ms = 50\n{}\n",
            self.db.display(),
            self.metrics,
            self.global,
            self.store
        );
        for (name, sim, extra) in instances {
            let token = self.dir.path().join(format!("{name}-token"));
            std::fs::write(&token, &sim.config().admin_token).unwrap();
            text.push_str(&format!(
                "[[instance]]\nname = \"{name}\"\nurl = \"{}\"\ntoken_file = \"{}\"\n{extra}\n",
                sim.url(),
                token.display()
            ));
        }
        // Written whole, then renamed: the reader never sees half a file.
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Writes the config of `instances` and starts the ingestor on it.
    fn start(&self, instances: &[(&str, &Sim, &str)]) -> process::Ingestor {
        self.write(instances);
        spawn_ingestor(&self.config, &self.log)
    }
}

/// SIGHUP: a new instance starts, a removed one stops, a changed one restarts with its new rules
/// and misses nothing (its gap is read back from history), an unchanged one keeps its connection,
/// and a broken file is refused while everything runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_removes_and_restarts_instances_without_losing_changes() {
    let a = Sim::start(SimConfig::default()).await.unwrap();
    let b = Sim::start(SimConfig::default()).await.unwrap();
    let r = Reloadable::new("", "");
    let (metrics, db, log) = (r.metrics, r.db.clone(), r.log.clone());
    let mut ingestor = r.start(&[("a", &a, "")]);
    let connected = async |name: &str| connected(metrics, name).await;
    until("a connected", &log, WAIT, async || connected("a").await).await;

    // Add b; a is unchanged and keeps its one connection. (Reading HA's history below opens
    // connections of its own: counts are taken around each step.)
    r.write(&[("a", &a, ""), ("b", &b, "")]);
    sighup(&ingestor);
    until("b connected", &log, WAIT, async || connected("b").await).await;
    assert_eq!(a.stats().ws_connections_accepted, 1, "a was not restarted");
    let since_us = jiff::Timestamp::now().as_microsecond();
    for i in 0..10 {
        a.set_state("sensor.fleet_a", &i.to_string(), json!({}));
        b.set_state("sensor.fleet_b", &i.to_string(), json!({}));
    }
    let want_a = recorded(
        &a.url(),
        &a.config().admin_token,
        &["sensor.fleet_a"],
        since_us,
    )
    .await;
    let want_b = recorded(
        &b.url(),
        &b.config().admin_token,
        &["sensor.fleet_b"],
        since_us,
    )
    .await;
    assert_eq!((want_a.len(), want_b.len()), (10, 10));
    until("both instances' rows", &log, WAIT, async || {
        stored(&db, "a") == want_a && stored(&db, "b") == want_b
    })
    .await;

    // Remove a; change b (a filter), while b's entities keep changing: nothing is lost.
    r.write(&[(
        "b",
        &b,
        "[instance.filter.exclude]\nentity_globs = [\"sensor.fleet_noise*\"]",
    )]);
    let since_us = jiff::Timestamp::now().as_microsecond();
    let b_connections = b.stats().ws_connections_accepted;
    sighup(&ingestor);
    // Changes while b restarts: some reach the old connection, some only HA's history.
    for i in 0..10 {
        b.set_state("sensor.fleet_b", &(100 + i).to_string(), json!({}));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    until("a is gone and b reconnected", &log, WAIT, async || {
        let (_, body) = health(metrics).await;
        body["instances"].get("a").is_none()
            && b.stats().ws_connections_accepted == b_connections + 1
            && body["instances"]["b"]["connected"] == true
    })
    .await;
    for i in 0..10 {
        b.set_state("sensor.fleet_b", &(200 + i).to_string(), json!({}));
        b.set_state("sensor.fleet_noise", &i.to_string(), json!({}));
    }
    let want_b = recorded(
        &b.url(),
        &b.config().admin_token,
        &["sensor.fleet_b"],
        since_us,
    )
    .await;
    assert_eq!(want_b.len(), 20);
    until(
        "b's rows across its restart, without the noise",
        &log,
        WAIT,
        async || stored_since(&db, "b", since_us) == want_b,
    )
    .await;
    until("a's connection closed", &log, WAIT, async || {
        a.stats().ws_connections_open == 0
    })
    .await;

    // A broken file is refused; b runs on with its connection.
    let b_connections = b.stats().ws_connections_accepted;
    std::fs::write(&r.config, "this is = not [valid").unwrap();
    sighup(&ingestor);
    until("the refusal is logged", &log, WAIT, async || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("reload refused"))
    })
    .await;
    b.set_state("sensor.fleet_b", "after", json!({}));
    until("b still stores", &log, WAIT, async || {
        stored(&db, "b").iter().any(|r| r.2 == "after")
    })
    .await;
    // b's changes are stored in order: with this last one stored, the excluded noise sent before
    // it has had its chance, and none of it is there.
    let noise: Vec<_> = stored(&db, "b")
        .into_iter()
        .filter(|r| r.0 == "sensor.fleet_noise")
        .collect();
    assert_eq!(noise, vec![], "the new filter excludes the noise");
    assert_eq!(b.stats().ws_connections_accepted, b_connections);
    assert!(ingestor.child.try_wait().unwrap().is_none());
}

/// With `backfill = false` nothing reads a restart's gap back from HA's history: a changed
/// instance keeps its old connection until the new subscription is live, and no change made
/// meanwhile is lost (stopping the old one first lost those of the moment in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_backfill_a_restart_keeps_the_old_connection_until_the_new_one_is_live() {
    let b = Sim::start(SimConfig::default()).await.unwrap();
    let r = Reloadable::new("backfill = false", "");
    let (metrics, db, log) = (r.metrics, r.db.clone(), r.log.clone());
    let ingestor = r.start(&[("b", &b, "")]);
    let connected = async || connected(metrics, "b").await;
    until("b connected", &log, WAIT, async || connected().await).await;
    let before = b.stats().ws_connections_accepted;
    let since_us = jiff::Timestamp::now().as_microsecond();
    // Four changes a millisecond, from before the reload until 20 ms after the new connection is
    // live: the moment between stopping one connection and the next one's subscription (a few
    // milliseconds here) holds several.
    let mut after_live = None;
    let started = std::time::Instant::now();
    for i in 0.. {
        for j in 0..4 {
            b.set_state("sensor.fleet_b", &format!("{i}.{j}"), json!({}));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        if i == 20 {
            let changed = "[instance.attributes]\nexclude = [\"icon\"]";
            r.write(&[("b", &b, changed)]);
            sighup(&ingestor);
        }
        if i > 20
            && after_live.is_none()
            && b.stats().ws_connections_accepted == before + 1
            && connected().await
        {
            after_live = Some(i);
        }
        if after_live.is_some_and(|live| i >= live + 20) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the new connection was not live in time"
        );
    }
    let want = recorded(
        &b.url(),
        &b.config().admin_token,
        &["sensor.fleet_b"],
        since_us,
    )
    .await;
    // The old connection may still be passing on its last changes: waited for, then compared (a
    // row stored twice cannot be: the store's unique key).
    until("every change, once", &log, WAIT, async || {
        stored_since(&db, "b", since_us) == want
    })
    .await;
    until("the old connection closed", &log, WAIT, async || {
        b.stats().ws_connections_open == 1
    })
    .await;
    assert_eq!(
        b.stats().ws_connections_accepted,
        before + 2,
        "the new one, and the history read"
    );
}

/// A hand-over's old connection passes on everything it received before it stops, also what the
/// store was too slow to take (held here by another program's write lock: the ingestor's queue
/// is full and the rest waits in the old subscription, which the new one never saw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_passes_on_what_the_old_connection_still_holds() {
    let b = Sim::start(SimConfig::default()).await.unwrap();
    let r = Reloadable::new("backfill = false", "queue_capacity = 16");
    let (metrics, db, log) = (r.metrics, r.db.clone(), r.log.clone());
    let ingestor = r.start(&[("b", &b, "")]);
    until("b connected", &log, WAIT, async || {
        connected(metrics, "b").await
    })
    .await;
    b.set_state("sensor.fleet_b", "first", json!({}));
    until("the first change", &log, WAIT, async || {
        stored(&db, "b").iter().any(|r| r.2 == "first")
    })
    .await;
    let before = b.stats().ws_connections_accepted;
    let since_us = jiff::Timestamp::now().as_microsecond();
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 0..1000 {
        b.set_state("sensor.fleet_b", &i.to_string(), json!({}));
    }
    let changed = "[instance.attributes]\nexclude = [\"icon\"]";
    r.write(&[("b", &b, changed)]);
    sighup(&ingestor);
    until(
        "the old connection is told to stop",
        &log,
        WAIT,
        async || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("the old one stops")),
    )
    .await;
    assert_eq!(b.stats().ws_connections_accepted, before + 1);
    other.execute_batch("COMMIT").unwrap();
    drop(other);
    let want = recorded(
        &b.url(),
        &b.config().admin_token,
        &["sensor.fleet_b"],
        since_us,
    )
    .await;
    assert_eq!(want.len(), 1000);
    until("every change, once", &log, WAIT, async || {
        stored_since(&db, "b", since_us) == want
    })
    .await;
}

//! Two instances in one process against a real Home Assistant, one with a token HA refuses: the
//! refused one stops alone and `/health` names it; the other stores every change and the process
//! runs on. On HA 2024.3.3 (the harness) and 2026.2.3 (the current release).
#![cfg(feature = "real-ha")]

mod process;
mod sinks;

use std::path::Path;
use std::time::Duration;

use ha_testenv::HaTarget;
use process::{free_port, recorded, spawn_ingestor, until};
use sinks::reqwest_client;

const WAIT: Duration = Duration::from_secs(60);
const ENTITIES: [&str; 2] = ["sensor.fleet_real_0", "sensor.fleet_real_1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_instance_stops_alone_on_the_harness_ha() {
    refused_instance_stops_alone(HaTarget::harness()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_instance_stops_alone_on_the_current_ha() {
    let ha = HaTarget::current();
    assert!(ha.version.starts_with("2026."), "HA {}", ha.version);
    refused_instance_stops_alone(ha).await;
}

/// (entity_id, last_updated µs, state) of `instance`'s rows of [`ENTITIES`] from `since_us` on.
fn stored(db: &Path, instance: &str, since_us: i64) -> Vec<(String, i64, String)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT e.entity_id, s.last_updated_us, s.state FROM states s JOIN entities e ON e.id = s.entity \
         WHERE e.instance = ?1 AND e.entity_id LIKE 'sensor.fleet_real_%' AND s.last_updated_us >= ?2",
    ) else {
        return Vec::new();
    };
    let mut rows: Vec<_> = stmt
        .query_map(rusqlite::params![instance, since_us], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

async fn health(metrics: u16) -> serde_json::Value {
    match reqwest_client()
        .get(format!("http://127.0.0.1:{metrics}/health"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

async fn refused_instance_stops_alone(ha: HaTarget) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    std::fs::write(dir.path().join("good-token"), &ha.user_token).unwrap();
    std::fs::write(dir.path().join("bad-token"), "not-a-token-of-this-ha").unwrap();
    let config = dir.path().join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            r#"
db = "{db}"
metrics_addr = "127.0.0.1:{metrics}"
[filter.include]
entity_globs = ["sensor.fleet_real_*"]
[store]
flush_interval_ms = 50
[[instance]]
name = "good"
url = "{url}"
token_file = "{dir}/good-token"
[[instance]]
name = "bad"
url = "{url}"
token_file = "{dir}/bad-token"
"#,
            db = dir.path().join("fleet.db").display(),
            dir = dir.path().display(),
            url = ha.url,
        ),
    )
    .unwrap();
    let db = dir.path().join("fleet.db");
    let log = dir.path().join("fleet.log");
    let mut ingestor = spawn_ingestor(&config, &log);
    until("good connected and bad failed", &log, WAIT, async || {
        let body = health(metrics).await;
        body["instances"]["good"]["connected"] == true
            && body["instances"]["bad"]["failed"]["error"].is_string()
    })
    .await;

    let since_us = jiff::Timestamp::now().as_microsecond();
    let http = reqwest_client();
    for i in 0..20 {
        let r = http
            .post(format!("{}/api/states/{}", ha.url, ENTITIES[i % 2]))
            .bearer_auth(&ha.admin_token)
            .json(&serde_json::json!({"state": i.to_string()}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    // HA's recorder commits on its own schedule: its history is complete once it holds all 20.
    let mut want = Vec::new();
    until(
        "HA's recorder holds the 20 changes",
        &log,
        WAIT,
        async || {
            want = recorded(&ha.url, &ha.admin_token, &ENTITIES, since_us).await;
            want.len() == 20
        },
    )
    .await;
    until(
        "every change of the good instance",
        &log,
        WAIT,
        async || stored(&db, "good", since_us) == want,
    )
    .await;
    assert!(stored(&db, "bad", 0).is_empty());
    assert!(
        ingestor.child.try_wait().unwrap().is_none(),
        "the process runs on"
    );
    let body = health(metrics).await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["ready"], true, "ready_when any: {body}");
}

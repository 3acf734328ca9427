//! InfluxDB goes away for a minute and comes back: every point arrives once, and the sink catches
//! up by itself. Alone in its binary: it stops the shared InfluxDB.
#![cfg(feature = "real-sinks")]

mod sinks;

use std::time::Duration;

use sinks::*;

fn services(args: &[&str]) {
    let status = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/services.sh"
        ))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "services.sh {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_duplicates_nothing() {
    let base = env("HA_INGESTOR_INFLUX_URL");
    let db = unique("outage");
    let created = influxql(&base, "", &format!("CREATE DATABASE \"{db}\"")).await;
    assert!(created["results"][0]["error"].is_null(), "{created}");
    let now = jiff::Timestamp::now().as_microsecond() / 1000 * 1000 - 60_000_000;
    let row = |i: i64| {
        state(
            "sensor.outage",
            &i.to_string(),
            now + i * 1000,
            r#"{"unit_of_measurement":"W"}"#,
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let journal = journal(dir.path(), &(0..100).map(row).collect::<Vec<_>>());
    let sink = sink_config(&format!(
        "[[sink]]\nname = \"influx\"\nbatch_size = 50\n[sink.influxdb]\nurl = \"{base}\"\ndatabase = \"{db}\"\n"
    ));
    let running = start(&sink, &journal);
    running.caught_up(Duration::from_secs(30)).await;

    services(&["stop", "influxdb"]);
    // A minute down, with rows coming in every 5 s; the cursor must not move past them. (The
    // sleeps pace the load; nothing is asserted about timing.)
    for chunk in 1..13 {
        let batch: Vec<_> = (chunk * 100..(chunk + 1) * 100).map(row).collect();
        append(&journal, &batch, &running.commits);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let (cursor, head) = cursor_and_head(&journal, "influx");
    assert_eq!(
        cursor,
        Some(100),
        "the cursor is held while InfluxDB is down (head {head})"
    );
    // /health says so, with the backlog.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let h = running.health.snapshot();
        let sink = &h["remote_sinks"][0];
        if sink["ok"] == false && sink["behind_rows"] == 1200 && h["journal_depth"] == 1200 {
            let error = sink["error"].as_str().unwrap_or_default();
            assert!(error.contains("cannot reach"), "{h}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health while down: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    services(&["start", "influxdb"]);
    // Backoff is capped at 30 s; a minute is plenty.
    running.caught_up(Duration::from_secs(60)).await;
    assert_eq!(influx_count(&base, &db, "W", "value").await, 1300);
    assert!(dead_letters(&journal, "influx").is_empty());
    running.stop().await;
}

//! The PostgreSQL sink through a server outage (`--features real-sinks`). This stops and starts the
//! shared test server with `scripts/services.sh`, so it is a binary of its own: run it alone, not
//! alongside other tests that use the server.

#![cfg(feature = "real-sinks")]

mod pg_support;

use std::process::Command;

use ha_ingestor::sink::postgres::{PostgresSchema, PostgresSink};
use ha_ingestor::sink::{Sink, SinkError};
use pg_support::{count, fresh_db, rows};

fn services(action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services.sh");
    let status = Command::new("bash")
        .args([script, action, "postgres"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(status.success(), "services.sh {action} postgres: {status}");
}

/// Starts the server again however the test ends, so a failure does not leave it down.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        services("start");
    }
}

#[tokio::test]
async fn an_outage_is_unavailable_and_recovery_writes_everything() {
    for schema in [PostgresSchema::Normalized, PostgresSchema::Ltss] {
        let db = fresh_db("outage").await;
        let table = if schema == PostgresSchema::Ltss {
            "ltss"
        } else {
            "ha_states"
        };
        let mut sink = PostgresSink::new(
            "pg",
            &db.config(schema),
            Some(ha_client::Secret::new("hunter2")),
        )
        .unwrap();
        sink.prepare().await.unwrap();
        let first = rows(1, 500);
        let second = rows(501, 500);
        assert_eq!(sink.write(&first).await.unwrap().written, 500);

        let restart = Restart;
        services("stop");
        let e = sink.write(&second).await.unwrap_err();
        let SinkError::Unavailable(m) = &e else {
            panic!("{schema:?}: write during the outage: {e:?}")
        };
        assert!(m.contains("sink 'pg'") && m.contains(sink.target()), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
        eprintln!("{schema:?}, during the outage: {m}");
        // The runner calls prepare again and keeps getting Unavailable while the server is down.
        let e = sink.prepare().await.unwrap_err();
        assert!(
            matches!(e, SinkError::Unavailable(_)),
            "{schema:?}: prepare during the outage: {e:?}"
        );
        let e = sink.write(&second).await.unwrap_err();
        assert!(matches!(e, SinkError::Unavailable(_)), "{schema:?}: {e:?}");

        drop(restart); // starts the server
        sink.prepare().await.unwrap();
        // The runner replays from its cursor: the first batch again (a no-op), then the second.
        assert_eq!(sink.write(&first).await.unwrap().written, 500);
        assert_eq!(sink.write(&second).await.unwrap().written, 500);
        let c = db.client().await;
        assert_eq!(count(&c, table).await, 1000, "{schema:?}");
        drop(sink);
        db.drop_db().await;
    }
}

//! Helpers for the real-PostgreSQL tests: the server from `HA_INGESTOR_PG_DSN`, a fresh database
//! per test (so tests run in parallel), journal rows.
//!
//! Start the server with `bash scripts/services.sh start postgres` and export what
//! `bash scripts/services.sh env` prints. The dsn must be in key=value form: a test's database is
//! chosen by appending `dbname=...`.

#![allow(dead_code)] // Each test binary uses a different part.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ha_ingestor::sink::JournalRow;
use ha_ingestor::sink::TimeColumn;
use ha_ingestor::sink::postgres::{PostgresConfig, PostgresSchema};
use tokio_postgres::{Client, NoTls};

/// The server's dsn; panics (never skips) when unset.
pub fn dsn() -> String {
    std::env::var("HA_INGESTOR_PG_DSN").unwrap_or_else(|_| {
        panic!(
            "HA_INGESTOR_PG_DSN is unset: start PostgreSQL with `bash scripts/services.sh start \
             postgres` and export what `bash scripts/services.sh env` prints"
        )
    })
}

/// Connects or panics with a message that says how to get a server.
pub async fn connect(dsn: &str) -> Client {
    let attempt =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(dsn, NoTls));
    let (client, connection) = match attempt.await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "cannot reach PostgreSQL at HA_INGESTOR_PG_DSN ({e}: {:?}); is it running? \
             `bash scripts/services.sh start postgres`",
            std::error::Error::source(&e).map(|s| s.to_string())
        ),
        Err(_) => panic!("PostgreSQL at HA_INGESTOR_PG_DSN did not answer within 10 s"),
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of the test's own, dropped by [`TestDb::drop_db`] (left behind on failure, for a
/// look).
pub struct TestDb {
    pub name: String,
    pub dsn: String,
}

/// Creates an empty database with a unique name.
pub async fn fresh_db(tag: &str) -> TestDb {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "hai_{tag}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let admin = connect(&format!("{} dbname=postgres", dsn())).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
    TestDb {
        dsn: format!("{} dbname={name}", dsn()),
        name,
    }
}

impl TestDb {
    /// A client on this database, for checks.
    pub async fn client(&self) -> Client {
        connect(&self.dsn).await
    }

    /// Drops the database (forcing other sessions out).
    pub async fn drop_db(self) {
        let admin = connect(&format!("{} dbname=postgres", dsn())).await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }

    /// The sink's configuration for this database.
    pub fn config(&self, schema: PostgresSchema) -> PostgresConfig {
        config(&self.dsn, schema)
    }
}

/// A sink configuration for `dsn`, with the defaults otherwise.
pub fn config(dsn: &str, schema: PostgresSchema) -> PostgresConfig {
    PostgresConfig {
        dsn: dsn.to_string(),
        ca_file: None,
        password_file: None,
        password_env: None,
        schema,
        time_column: TimeColumn::TimeFired,
        timescaledb: true,
        metadata_columns: Vec::new(),
    }
}

/// Microseconds of 2024-01-01T00:00:00Z.
pub const T0: i64 = 1_704_067_200_000_000;

/// A journal row: `entity` gets state `state` at `T0 + id` seconds, fired 250 us later.
pub fn row(id: i64, entity: &str, state: &str) -> JournalRow {
    let updated = T0 + id * 1_000_000;
    JournalRow {
        id,
        instance: Arc::from("home"),
        entity_id: entity.into(),
        state: state.into(),
        value: state.parse().ok(),
        attributes: format!(r#"{{"friendly_name":"{entity}","seq":{id}}}"#),
        last_changed_us: updated - 500_000,
        last_updated_us: updated,
        time_fired_us: Some(updated + 250),
        context_id: Some(format!("01CTX{id:020}")),
        context_user_id: None,
    }
}

/// `n` rows over a few entities, ids from `first`.
pub fn rows(first: i64, n: i64) -> Vec<JournalRow> {
    const ENTITIES: [&str; 4] = [
        "sensor.living_room_temperature",
        "sensor.power",
        "light.kitchen",
        "binary_sensor.door",
    ];
    (first..first + n)
        .map(|id| {
            let entity = ENTITIES[(id as usize) % ENTITIES.len()];
            let state = match entity.split('.').next() {
                Some("sensor") => format!("{}.{}", 20 + id % 7, id % 10),
                Some("light") => if id % 2 == 0 { "on" } else { "off" }.to_string(),
                _ => if id % 3 == 0 { "on" } else { "off" }.to_string(),
            };
            let mut r = row(id, entity, &state);
            // A realistic attribute set, about 200 bytes.
            r.attributes = format!(
                r#"{{"state_class":"measurement","unit_of_measurement":"°C","device_class":"temperature","friendly_name":"{entity}","icon":"mdi:thermometer","seq":{id},"attribution":"Data provided by a test"}}"#
            );
            r
        })
        .collect()
}

/// `SELECT count(*) FROM <table>`.
pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

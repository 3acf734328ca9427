//! TLS and passwords to a real PostgreSQL (`--features real-sinks`): the second server of
//! `scripts/services.sh` (`postgres-tls`), which takes only TLS with a SCRAM password over TCP and
//! whose certificate, signed by a CA the script makes, names `localhost` and not `127.0.0.1`.
//!
//! Each test uses a database of its own (made over a verified connection as the test user), so
//! they run in parallel. Every connection the sink makes is checked in `pg_stat_ssl`.

#![cfg(feature = "real-sinks")]

mod pg_support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ha_client::Secret;
use ha_ingestor::sink::postgres::{PostgresSchema, PostgresSink, SslModeSetting, TlsSettings};
use ha_ingestor::sink::{Sink, SinkError};
use pg_support::{count, rows};
use tokio_postgres::Client;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is unset: start the TLS PostgreSQL with `bash scripts/services.sh start \
             postgres-tls` and export what `bash scripts/services.sh env` prints"
        )
    })
}

fn ca() -> PathBuf {
    env("HA_INGESTOR_PG_TLS_CA").into()
}

fn password() -> Secret {
    Secret::new(env("HA_INGESTOR_PG_TLS_PASSWORD"))
}

/// `host=<host> port=... user=... dbname=<db>` plus `extra`.
fn dsn(host: &str, db: &str, extra: &str) -> String {
    format!(
        "host={host} port={} user={} dbname={db} {extra}",
        env("HA_INGESTOR_PG_TLS_PORT"),
        env("HA_INGESTOR_PG_TLS_USER")
    )
}

/// A verified connection of the test's own (verify-full by name, the test CA).
async fn client(db: &str) -> Client {
    let settings = TlsSettings {
        mode: SslModeSetting::VerifyFull,
        ca_file: Some(ca()),
    };
    let tls = settings.connector().unwrap().unwrap();
    let mut pg: tokio_postgres::Config = dsn("localhost", db, "").parse().unwrap();
    pg.password(password().expose());
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), pg.connect(tls))
        .await
        .expect("the TLS PostgreSQL answers within 10 s")
        .unwrap_or_else(|e| panic!("connect to the TLS PostgreSQL: {e:?}"));
    tokio::spawn(connection);
    client
}

/// A fresh database owned by the test user.
async fn fresh_db(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "hai_tls_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    client("ha")
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    name
}

fn sink(dsn: &str, ca_file: Option<PathBuf>, password: Secret) -> PostgresSink {
    let mut config = pg_support::config(dsn, PostgresSchema::Normalized);
    config.ca_file = ca_file;
    PostgresSink::new("pg", &config, Some(password)).unwrap()
}

/// The sink's sessions on `db`: (with TLS, without).
async fn sink_sessions(db: &str) -> (i64, i64) {
    let row = client(db)
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'ha-ingestor' AND a.datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Writes 50 rows and checks they are there, 50 counted, over TLS.
async fn writes_over_tls(mut sink: PostgresSink, db: &str) {
    sink.prepare().await.unwrap();
    let report = sink.write(&rows(1, 50)).await.unwrap();
    assert_eq!((report.written, report.rejected.len()), (50, 0));
    assert_eq!(count(&client(db).await, "ha_states").await, 50);
    assert_eq!(sink_sessions(db).await, (1, 0), "the sink's session is TLS");
}

fn failed(e: SinkError) -> String {
    match e {
        SinkError::Failed(text) => text,
        other => panic!("expected a final TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn verify_full_with_the_ca_writes_over_tls() {
    let db = fresh_db("full").await;
    let dsn = dsn("localhost", &db, "sslmode=verify-full");
    writes_over_tls(sink(&dsn, Some(ca()), password()), &db).await;
}

#[tokio::test]
async fn sslrootcert_in_a_url_dsn_works_like_ca_file() {
    let db = fresh_db("url").await;
    let dsn = format!(
        "postgresql://{}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        env("HA_INGESTOR_PG_TLS_USER"),
        env("HA_INGESTOR_PG_TLS_PORT"),
        ca().display()
    );
    writes_over_tls(sink(&dsn, None, password()), &db).await;
}

#[tokio::test]
async fn verify_ca_takes_the_address_verify_full_refuses() {
    let db = fresh_db("ca").await;
    // The certificate names localhost, not 127.0.0.1: verify-full refuses, naming the way out.
    let full = dsn("127.0.0.1", &db, "sslmode=verify-full");
    let text = failed(
        sink(&full, Some(ca()), password())
            .prepare()
            .await
            .unwrap_err(),
    );
    assert!(
        text.contains("does not name the dsn's host") && text.contains("verify-ca"),
        "{text}"
    );
    assert!(
        !text.contains(&env("HA_INGESTOR_PG_TLS_PASSWORD")),
        "{text}"
    );

    let ca_only = dsn("127.0.0.1", &db, "sslmode=verify-ca");
    writes_over_tls(sink(&ca_only, Some(ca()), password()), &db).await;
}

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_ca_file() {
    let db = fresh_db("wrongca").await;
    let other: PathBuf = env("HA_INGESTOR_PG_TLS_OTHER_CA").into();
    for mode in ["verify-full", "verify-ca", "require"] {
        let dsn = dsn("localhost", &db, &format!("sslmode={mode}"));
        let text = failed(
            sink(&dsn, Some(other.clone()), password())
                .prepare()
                .await
                .unwrap_err(),
        );
        assert!(
            text.contains("TLS to PostgreSQL") && text.contains("set ca_file"),
            "{mode}: {text}"
        );
    }
    // Without a CA, verify-full trusts the system's roots, which did not sign the test CA.
    let dsn = dsn("localhost", &db, "sslmode=verify-full");
    let text = failed(sink(&dsn, None, password()).prepare().await.unwrap_err());
    assert!(text.contains("set ca_file"), "{text}");
    assert_eq!(
        count(
            &client(&db).await,
            "pg_tables WHERE tablename = 'ha_states'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_a_ca() {
    for (tag, extra) in [("req", "sslmode=require"), ("pref", "")] {
        let db = fresh_db(tag).await;
        let dsn = dsn("127.0.0.1", &db, extra);
        writes_over_tls(sink(&dsn, None, password()), &db).await;
    }
}

#[tokio::test]
async fn disable_is_refused_by_the_server() {
    let db = fresh_db("off").await;
    let dsn = dsn("127.0.0.1", &db, "sslmode=disable");
    let e = sink(&dsn, None, password()).prepare().await.unwrap_err();
    let SinkError::Unauthorized(text) = e else {
        panic!("{e:?}")
    };
    assert!(
        text.contains("no encryption") && text.contains("28000") && text.contains("pg_hba.conf"),
        "{text}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized_and_not_shown() {
    let db = fresh_db("pw").await;
    let dsn = dsn("localhost", &db, "sslmode=verify-full");
    let wrong = "not-the-password-93c1";
    let e = sink(&dsn, Some(ca()), Secret::new(wrong))
        .prepare()
        .await
        .unwrap_err();
    let SinkError::Unauthorized(text) = e else {
        panic!("{e:?}")
    };
    assert!(
        text.contains("28P01") && text.contains("password_file"),
        "{text}"
    );
    assert!(!text.contains(wrong), "{text}");
}

#[tokio::test]
async fn require_against_a_server_without_tls_says_to_turn_it_on() {
    // The plain test server (`postgres`), which has no TLS.
    let dsn = format!("{} dbname=postgres sslmode=require", pg_support::dsn());
    let config = pg_support::config(&dsn, PostgresSchema::Normalized);
    let text = failed(
        PostgresSink::new("pg", &config, None)
            .unwrap()
            .prepare()
            .await
            .unwrap_err(),
    );
    assert!(text.contains("turn on ssl"), "{text}");
}

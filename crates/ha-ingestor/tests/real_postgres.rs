//! The PostgreSQL sink against a real server (`--features real-sinks`; see `pg_support` for the
//! set-up). Each test has a database of its own, so they run in parallel. The outage test, which
//! stops the shared server, is in `real_postgres_outage.rs`.
//!
//! Access refused by the real server is covered by an unknown role (SQLSTATE 28000) and a role
//! without rights on the database (42501); a wrong password (28P01) by `real_postgres_tls.rs`,
//! against the server that takes passwords.

#![cfg(feature = "real-sinks")]

mod pg_support;
mod sinks;

use std::time::Instant;

use ha_ingestor::sink::TimeColumn;
use ha_ingestor::sink::postgres::{PostgresSchema, PostgresSink};
use ha_ingestor::sink::{JournalEvent, Sink, SinkError};
use pg_support::{T0, count, fresh_db, rows};

#[tokio::test]
async fn normalized_schema_is_created_and_written() {
    let db = fresh_db("norm").await;
    let mut sink = PostgresSink::new("pg", &db.config(PostgresSchema::Normalized), None).unwrap();
    sink.prepare().await.unwrap();

    let mut batch = rows(1, 100);
    batch[0].time_fired_us = None; // from history: time falls back to last_updated
    batch[1].value = None;
    batch[1].state = "unavailable".into();
    batch[2].attributes = r#"{"name":"a\u0000b","nested":{"list":[1,2.5,"x"]}}"#.into();
    batch[3].state = "on\0".into();
    batch[3].context_user_id = Some("user-1".into());
    let report = sink.write(&batch).await.unwrap();
    assert_eq!((report.written, report.rejected.len()), (100, 0));

    let c = db.client().await;
    assert_eq!(count(&c, "ha_states").await, 100);
    assert_eq!(count(&c, "ha_entities").await, 4);
    let versions: Vec<i32> = c
        .query("SELECT version FROM ha_ingestor_migrations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1001, 1002, 1003, 1004]);

    let get = |id: i64| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT (extract(epoch FROM time) * 1000000)::int8, state, value, attributes::text,
                        (extract(epoch FROM last_updated) * 1000000)::int8,
                        (extract(epoch FROM time_fired) * 1000000)::int8, context_id, context_user_id,
                        entity_id, domain, instance
                 FROM ha_states_view WHERE attributes->>'seq' = $1 OR context_id = $2",
                &[&id.to_string(), &format!("01CTX{id:020}")],
            )
            .await
            .unwrap()
        }
    };
    let r = get(1).await;
    let updated = T0 + 1_000_000;
    assert_eq!(
        r.get::<_, i64>(0),
        updated,
        "history row: time = last_updated"
    );
    assert_eq!(r.get::<_, Option<i64>>(5), None);
    let r = get(5).await;
    assert_eq!(
        r.get::<_, i64>(0),
        T0 + 5_000_000 + 250,
        "time = time_fired"
    );
    assert_eq!(r.get::<_, i64>(4), T0 + 5_000_000);
    assert_eq!(r.get::<_, Option<i64>>(5), Some(T0 + 5_000_000 + 250));
    assert_eq!(r.get::<_, &str>(8), "sensor.power");
    assert_eq!(r.get::<_, &str>(9), "sensor");
    assert_eq!(r.get::<_, &str>(10), "home");
    assert_eq!(r.get::<_, Option<f64>>(2), Some(25.5));
    let r = get(2).await;
    assert_eq!(
        (r.get::<_, &str>(1), r.get::<_, Option<f64>>(2)),
        ("unavailable", None)
    );
    let r = get(3).await;
    assert_eq!(
        r.get::<_, &str>(3),
        r#"{"name": "ab", "nested": {"list": [1, 2.5, "x"]}}"#,
        "\\u0000 is dropped, the rest is jsonb"
    );
    let r = get(4).await;
    assert_eq!(r.get::<_, &str>(1), "on", "NUL dropped from the state");
    assert_eq!(r.get::<_, Option<&str>>(7), Some("user-1"));

    // The key doubles as the (entity, time) index.
    let pk: String = c
        .query_one(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'ha_states'::regclass AND indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        pk.ends_with("USING btree (entity, \"time\", last_updated)"),
        "{pk}"
    );
    drop(sink);
    db.drop_db().await;
}

#[tokio::test]
async fn last_updated_can_be_the_time_column() {
    let db = fresh_db("lu").await;
    let mut config = db.config(PostgresSchema::Normalized);
    config.time_column = TimeColumn::LastUpdated;
    let mut sink = PostgresSink::new("pg", &config, None).unwrap();
    sink.prepare().await.unwrap();
    sink.write(&rows(1, 10)).await.unwrap();
    let c = db.client().await;
    let off: i64 = c
        .query_one(
            "SELECT count(*) FROM ha_states WHERE time <> last_updated",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(off, 0);
    drop(sink);
    db.drop_db().await;
}

#[tokio::test]
async fn ltss_schema_is_ltss_and_written() {
    let db = fresh_db("ltss").await;
    let mut sink = PostgresSink::new("ltss", &db.config(PostgresSchema::Ltss), None).unwrap();
    sink.prepare().await.unwrap();
    let c = db.client().await;
    let postgis: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'postgis')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let columns: Vec<String> = c
        .query(
            "SELECT column_name || ' ' || udt_name || coalesce('(' || character_maximum_length || ')', '')
                    || CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END
             FROM information_schema.columns WHERE table_name = 'ltss' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = vec![
        "time timestamptz not null",
        "entity_id varchar(255) not null",
        "state varchar(255)",
        "attributes jsonb",
    ];
    if postgis {
        expected.push("location geometry");
    }
    assert_eq!(columns, expected, "PostGIS available: {postgis}");
    let indexes: Vec<String> = c
        .query(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'ltss'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for want in [
        "CREATE INDEX ix_ltss_state ON public.ltss USING btree (state)",
        "CREATE INDEX ltss_attributes_idx ON public.ltss USING gin (attributes)",
        "CREATE INDEX ltss_entityid_time_composite_idx ON public.ltss USING btree (entity_id, \"time\" DESC)",
        "CREATE UNIQUE INDEX ltss_pkey ON public.ltss USING btree (\"time\", entity_id)",
    ] {
        assert!(
            indexes.iter().any(|i| i == want),
            "{want} not in {indexes:#?}"
        );
    }

    let mut batch = rows(1, 50);
    batch[0].state = "unknown".into(); // LTSS never records unknown
    batch[1].state = "unavailable".into(); // but does record unavailable
    batch[2].entity_id = "device_tracker.phone".into();
    batch[2].attributes = r#"{"latitude":52.37,"longitude":4.89,"gps_accuracy":12}"#.into();
    let report = sink.write(&batch).await.unwrap();
    assert_eq!(
        (report.written, report.skipped, report.rejected.len()),
        (49, 1, 0)
    );
    assert_eq!(count(&c, "ltss").await, 49);
    let r = c
        .query_one(
            "SELECT (extract(epoch FROM time) * 1000000)::int8, state, attributes->>'friendly_name'
             FROM ltss WHERE entity_id = 'sensor.living_room_temperature' AND state <> 'unavailable'
             ORDER BY time LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        r.get::<_, i64>(0),
        T0 + 4_000_000 + 250,
        "time = time_fired"
    );
    assert_eq!(r.get::<_, &str>(1), "24.4");
    assert_eq!(r.get::<_, &str>(2), "sensor.living_room_temperature");
    let attrs: String = c
        .query_one(
            "SELECT attributes::text FROM ltss WHERE entity_id = 'device_tracker.phone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if postgis {
        assert_eq!(attrs, r#"{"gps_accuracy": 12}"#);
        let point: String = c
            .query_one(
                "SELECT ST_AsText(location) || ' ' || ST_SRID(location) FROM ltss WHERE entity_id = 'device_tracker.phone'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(point, "POINT(4.89 52.37) 4326");
    } else {
        assert_eq!(
            attrs,
            r#"{"latitude": 52.37, "longitude": 4.89, "gps_accuracy": 12}"#
        );
    }
    drop(sink);
    db.drop_db().await;
}

#[tokio::test]
async fn writing_a_batch_twice_adds_nothing() {
    for schema in [PostgresSchema::Normalized, PostgresSchema::Ltss] {
        let db = fresh_db("idem").await;
        let (table, config) = match schema {
            PostgresSchema::Normalized => ("ha_states", db.config(schema)),
            PostgresSchema::Ltss => ("ltss", db.config(schema)),
        };
        let batch = rows(1, 300);
        let mut sink = PostgresSink::new("pg", &config, None).unwrap();
        sink.prepare().await.unwrap();
        assert_eq!(sink.write(&batch).await.unwrap().written, 300);
        // Replay on the same connection, after a re-prepare, and from a new sink (empty cache),
        // as the runner does after a failure or a crash.
        assert_eq!(sink.write(&batch).await.unwrap().written, 300);
        sink.prepare().await.unwrap();
        assert_eq!(sink.write(&batch[100..]).await.unwrap().written, 200);
        drop(sink);
        let mut again = PostgresSink::new("pg", &config, None).unwrap();
        again.prepare().await.unwrap();
        again.write(&batch).await.unwrap();
        // Duplicates inside one batch too.
        let doubled: Vec<_> = batch.iter().chain(batch.iter()).cloned().collect();
        assert_eq!(again.write(&doubled).await.unwrap().written, 600);

        let c = db.client().await;
        assert_eq!(count(&c, table).await, 300, "{schema:?}");
        let migrations = match schema {
            PostgresSchema::Normalized => 4,
            PostgresSchema::Ltss => 3,
        };
        assert_eq!(
            count(&c, "ha_ingestor_migrations").await,
            migrations,
            "{schema:?}"
        );
        if schema == PostgresSchema::Normalized {
            assert_eq!(count(&c, "ha_entities").await, 4);
        }
        drop(again);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn both_schemas_share_a_database() {
    let db = fresh_db("both").await;
    let mut a = PostgresSink::new("a", &db.config(PostgresSchema::Normalized), None).unwrap();
    let mut b = PostgresSink::new("b", &db.config(PostgresSchema::Ltss), None).unwrap();
    // Concurrent start-ups serialise on the migration lock.
    let (ra, rb) = tokio::join!(a.prepare(), b.prepare());
    ra.unwrap();
    rb.unwrap();
    a.write(&rows(1, 20)).await.unwrap();
    b.write(&rows(1, 20)).await.unwrap();
    let c = db.client().await;
    assert_eq!(count(&c, "ha_states").await, 20);
    assert_eq!(count(&c, "ltss").await, 20);
    assert_eq!(count(&c, "ha_ingestor_migrations").await, 7);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn bad_rows_are_isolated_and_the_rest_written() {
    let db = fresh_db("bad").await;
    let mut sink = PostgresSink::new("pg", &db.config(PostgresSchema::Normalized), None).unwrap();
    sink.prepare().await.unwrap();
    let mut batch = rows(1, 1000);
    batch[10].attributes = r#"{"broken": "#.into(); // not JSON
    batch[500].last_updated_us = -400_000_000_000_000_000; // ~10 700 BC: beyond timestamptz
    batch[500].time_fired_us = None;
    batch[501].attributes = r#"{"s":"\ud800"}"#.into(); // a lone surrogate jsonb refuses
    let report = sink.write(&batch).await.unwrap();
    let mut rejected: Vec<(i64, String)> = report
        .rejected
        .iter()
        .map(|r| (r.id, r.reason.clone()))
        .collect();
    rejected.sort();
    assert_eq!(report.written, 997, "{rejected:#?}");
    let ids: Vec<i64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![11, 501, 502]);
    assert!(
        rejected[0].1.contains("invalid input syntax for type json"),
        "{}",
        rejected[0].1
    );
    assert!(
        rejected[0].1.contains("SQLSTATE 22P02"),
        "{}",
        rejected[0].1
    );
    assert!(rejected[1].1.contains("out of range"), "{}", rejected[1].1);
    assert_eq!(
        report.rejected[0].entity_id,
        batch[report.rejected[0].id as usize - 1].entity_id
    );
    let c = db.client().await;
    assert_eq!(count(&c, "ha_states").await, 997);

    // LTSS: a state longer than varchar(255).
    let db2 = fresh_db("badltss").await;
    let mut ltss = PostgresSink::new("ltss", &db2.config(PostgresSchema::Ltss), None).unwrap();
    ltss.prepare().await.unwrap();
    let mut batch = rows(1, 100);
    batch[42].state = "x".repeat(300);
    let report = ltss.write(&batch).await.unwrap();
    assert_eq!(report.written, 99);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].id, 43);
    assert!(
        report.rejected[0].reason.contains("character varying(255)"),
        "{:?}",
        report.rejected
    );
    drop((sink, ltss));
    db.drop_db().await;
    db2.drop_db().await;
}

#[tokio::test]
async fn a_schema_problem_fails_the_batch_instead_of_dead_lettering_it() {
    let db = fresh_db("schema").await;
    let mut sink = PostgresSink::new("pg", &db.config(PostgresSchema::Normalized), None).unwrap();
    sink.prepare().await.unwrap();
    // Every row now breaks a constraint: that is the table, not the data.
    let c = db.client().await;
    c.batch_execute("ALTER TABLE ha_states ADD CONSTRAINT no_states CHECK (state = 'never')")
        .await
        .unwrap();
    let e = sink.write(&rows(1, 100)).await.unwrap_err();
    assert!(
        matches!(&e, SinkError::Failed(m) if m.contains("refused every row")),
        "{e:?}"
    );
    drop(sink);
    db.drop_db().await;
}

#[tokio::test]
async fn a_missing_database_fails_naming_it() {
    let dsn = format!("{} dbname=hai_no_such_db", pg_support::dsn());
    let config = pg_support::config(&dsn, PostgresSchema::Normalized);
    let mut sink = PostgresSink::new("pg", &config, None).unwrap();
    let e = sink.prepare().await.unwrap_err();
    let SinkError::Failed(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("database \"hai_no_such_db\" does not exist"),
        "{m}"
    );
    assert!(m.contains("CREATE DATABASE"), "{m}");
    assert!(m.contains(sink.target()), "{m}");
}

#[tokio::test]
async fn an_unknown_role_is_refused_access() {
    // A later key wins in a dsn.
    let dsn = format!("{} user=hai_no_such_role", pg_support::dsn());
    let config = pg_support::config(&dsn, PostgresSchema::Normalized);
    let mut sink =
        PostgresSink::new("pg", &config, Some(ha_client::Secret::new("hunter2"))).unwrap();
    let e = sink.prepare().await.unwrap_err();
    let SinkError::Unauthorized(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("hai_no_such_role") && m.contains("refused access") && !m.contains("hunter2"),
        "{m}"
    );
}

#[tokio::test]
async fn a_role_without_rights_on_the_database_is_refused_access() {
    let db = pg_support::fresh_db("norights").await;
    let role = format!("{}_reader", db.name);
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        ))
        .await
        .unwrap();
    let mut config = db.config(PostgresSchema::Normalized);
    config.dsn = format!("{} user={role}", db.dsn);
    let mut sink = PostgresSink::new("pg", &config, None).unwrap();
    let e = sink.prepare().await.unwrap_err();
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .ok();
    drop(admin);
    db.drop_db().await;
    let SinkError::Unauthorized(m) = &e else {
        panic!("{e:?}")
    };
    assert!(m.contains("permission denied"), "{m}");
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let config = pg_support::config(
        "host=127.0.0.1 port=1 user=postgres dbname=ha",
        PostgresSchema::Normalized,
    );
    let mut sink =
        PostgresSink::new("pg", &config, Some(ha_client::Secret::new("hunter2"))).unwrap();
    let e = sink.prepare().await.unwrap_err();
    let SinkError::Unavailable(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("127.0.0.1:1/ha (user postgres)") && !m.contains("hunter2"),
        "{m}"
    );
}

/// Prints rows/s for 5000-row batches (the runner's default), both layouts; asserts only that
/// everything arrived.
#[tokio::test]
async fn throughput_5000_row_batches() {
    for schema in [PostgresSchema::Normalized, PostgresSchema::Ltss] {
        let db = fresh_db("speed").await;
        let mut sink = PostgresSink::new("pg", &db.config(schema), None).unwrap();
        sink.prepare().await.unwrap();
        let batches: Vec<_> = (0..10).map(|i| rows(1 + i * 5000, 5000)).collect();
        let started = Instant::now();
        for b in &batches {
            assert_eq!(sink.write(b).await.unwrap().written, 5000);
        }
        let secs = started.elapsed().as_secs_f64();
        let replay = Instant::now();
        sink.write(&batches[0]).await.unwrap();
        let replay = replay.elapsed().as_secs_f64();
        println!(
            "{schema:?}: 10 x 5000 rows in {secs:.2} s = {:.0} rows/s ({:.0} ms per batch); replaying a batch: {:.0} ms",
            50_000.0 / secs,
            secs * 100.0,
            replay * 1000.0
        );
        let c = db.client().await;
        let table = if schema == PostgresSchema::Ltss {
            "ltss"
        } else {
            "ha_states"
        };
        assert_eq!(count(&c, table).await, 50_000);
        drop(sink);
        db.drop_db().await;
    }
}

/// `n` events of two types from id `first`, one without a context and one whose data holds a NUL
/// (which `jsonb` cannot).
fn events(first: i64, n: i64) -> Vec<JournalEvent> {
    (first..first + n)
        .map(|id| JournalEvent {
            id,
            instance: "home".into(),
            event_type: if id % 2 == 0 {
                "call_service"
            } else {
                "automation_triggered"
            }
            .into(),
            data: match id {
                3 => r#"{"note":"a\u0000b"}"#.to_string(),
                _ => format!(r#"{{"seq":{id},"domain":"light"}}"#),
            },
            time_fired_us: T0 + id * 1_000,
            context_id: (id != 2).then(|| format!("01CTX{id:020}")),
            origin: Some("LOCAL".into()),
        })
        .collect()
}

#[tokio::test]
async fn events_go_to_ha_events_once_in_both_layouts() {
    for schema in [PostgresSchema::Normalized, PostgresSchema::Ltss] {
        let db = fresh_db("events").await;
        let mut sink = PostgresSink::new("pg", &db.config(schema), None).unwrap();
        assert!(
            sink.kinds()
                .contains(&ha_ingestor::record::RecordKind::Event)
        );
        sink.prepare().await.unwrap();
        let batch = events(1, 50);
        let report = sink.write_events(&batch).await.unwrap();
        assert_eq!(
            (report.written, report.rejected.len()),
            (50, 0),
            "{schema:?}"
        );
        // A replay, and duplicates inside one batch, add nothing.
        let doubled: Vec<_> = batch.iter().chain(batch.iter()).cloned().collect();
        sink.write_events(&doubled).await.unwrap();
        let c = db.client().await;
        assert_eq!(count(&c, "ha_events").await, 50, "{schema:?}");
        let row = c
            .query_one(
                "SELECT (extract(epoch FROM time) * 1000000)::int8, instance, event_type, \
                 data->>'seq', context_id, origin FROM ha_events WHERE data->>'seq' = '4'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), T0 + 4_000);
        assert_eq!(row.get::<_, String>(1), "home");
        assert_eq!(row.get::<_, String>(2), "call_service");
        assert_eq!(row.get::<_, String>(4), format!("01CTX{:020}", 4));
        assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("LOCAL"));
        let no_context: String = c
            .query_one(
                "SELECT context_id FROM ha_events WHERE data->>'seq' = '2'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(no_context, "");
        let nul: String = c
            .query_one("SELECT data->>'note' FROM ha_events WHERE event_type = 'automation_triggered' AND data ? 'note'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(nul, "ab");
        drop(sink);
        db.drop_db().await;
    }
}

/// A statistic row of `ha_statistics`' key (`probe:energy`, hour `h` after T0) with `sum`.
fn statistic(id: i64, h: i64, sum: f64) -> ha_ingestor::sink::JournalStatistic {
    ha_ingestor::sink::JournalStatistic {
        id,
        instance: std::sync::Arc::from("home"),
        statistic_id: "probe:energy".into(),
        unit: Some("kWh".into()),
        period: ha_ingestor::record::StatisticPeriod::Hour,
        start_us: T0 + h * 3_600_000_000,
        mean: None,
        min: None,
        max: None,
        state: Some(100.0 + sum),
        sum: Some(sum),
        last_reset_us: None,
    }
}

#[tokio::test]
async fn statistics_go_to_ha_statistics_and_a_correction_replaces_the_row_in_both_layouts() {
    for schema in [PostgresSchema::Normalized, PostgresSchema::Ltss] {
        let db = fresh_db("statistics").await;
        let mut sink = PostgresSink::new("pg", &db.config(schema), None).unwrap();
        assert!(
            sink.kinds()
                .contains(&ha_ingestor::record::RecordKind::Statistic)
        );
        sink.prepare().await.unwrap();
        let batch: Vec<_> = (0..3).map(|h| statistic(h + 1, h, h as f64)).collect();
        let report = sink.write_statistics(&batch).await.unwrap();
        assert_eq!((report.written, report.rejected.len()), (3, 0));
        // Again (a replay after a crash): nothing new. Then HA's correction of hour 2.
        sink.write_statistics(&batch).await.unwrap();
        sink.write_statistics(&[statistic(4, 2, 2.5)])
            .await
            .unwrap();
        let client = db.client().await;
        let rows: Vec<(i64, f64, f64)> = client
            .query(
                "SELECT ((extract(epoch FROM time) * 1000000)::bigint - $1) / 3600000000, state, sum
                 FROM ha_statistics WHERE statistic_id = 'probe:energy' AND period = 'hour' ORDER BY time",
                &[&T0],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            rows,
            vec![(0, 100.0, 0.0), (1, 101.0, 1.0), (2, 102.5, 2.5)],
            "{schema:?}"
        );
        db.drop_db().await;
    }
}

/// `metadata_columns`: each entity's registry metadata (its own area, else its device's; names of
/// its labels) is kept in `ha_entities` and shown by `ha_states_view`; an area renamed in HA (here:
/// in the store's registry tables, as the registry task writes them) reaches the view with the
/// next batch, for every row of the entity.
#[tokio::test]
async fn metadata_columns_follow_the_registry_and_a_rename_reaches_the_view() {
    let db = fresh_db("meta").await;
    let dir = tempfile::tempdir().unwrap();
    let journal = sinks::journal(
        dir.path(),
        &[
            sinks::state("sensor.power", "1", T0, "{}"),
            sinks::state("light.kitchen", "on", T0 + 1_000_000, "{}"),
            sinks::state("sensor.unregistered", "3", T0 + 2_000_000, "{}"),
        ],
    );
    let registry = rusqlite::Connection::open(&journal).unwrap();
    registry
        .execute_batch(
            "INSERT INTO registry_areas (instance, area_id, name) VALUES
               ('home', 'living', 'Living Room'), ('home', 'kitchen', 'Kitchen');
             INSERT INTO registry_labels (instance, label_id, name) VALUES ('home', 'l1', 'Energy');
             INSERT INTO registry_devices (instance, device_id, name, area_id) VALUES
               ('home', 'd1', 'Ceiling lamp', 'kitchen');
             INSERT INTO registry_entities (instance, entity_id, name, original_name, platform, device_id, area_id, labels) VALUES
               ('home', 'sensor.power', 'Power', NULL, 'template', NULL, 'living', '[\"l1\"]'),
               ('home', 'light.kitchen', NULL, 'Kitchen light', 'hue', 'd1', NULL, '[]');",
        )
        .unwrap();
    let sink = sinks::sink_config(&format!(
        r#"
        [[sink]]
        name = "pg"
        [sink.postgres]
        dsn = "{dsn}"
        metadata_columns = ["name", "area", "device", "labels"]
        "#,
        dsn = db.dsn
    ));
    let running = sinks::start(&sink, &journal);
    running.caught_up(std::time::Duration::from_secs(30)).await;
    let c = db.client().await;
    type Meta = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let metadata = async |c: &tokio_postgres::Client| -> Vec<Meta> {
        c.query(
            "SELECT entity_id, name, area, floor, device, labels::text FROM ha_entities ORDER BY entity_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        metadata(&c).await,
        vec![
            (
                "light.kitchen".to_string(),
                s("Kitchen light"),
                s("Kitchen"),
                None, // not asked for
                s("Ceiling lamp"),
                s("[]")
            ),
            (
                "sensor.power".to_string(),
                s("Power"),
                s("Living Room"),
                None,
                None,
                s(r#"["Energy"]"#)
            ),
            (
                "sensor.unregistered".to_string(),
                None,
                None,
                None,
                None,
                None
            ),
        ]
    );

    // The area is renamed; the next batch of the entity carries the new name to every row.
    registry
        .execute(
            "UPDATE registry_areas SET name = 'Lounge' WHERE area_id = 'living'",
            [],
        )
        .unwrap();
    sinks::append(
        &journal,
        &[sinks::state("sensor.power", "2", T0 + 3_000_000, "{}")],
        &running.commits,
    );
    running.caught_up(std::time::Duration::from_secs(30)).await;
    let areas: Vec<(String, Option<String>)> = c
        .query(
            "SELECT state, area FROM ha_states_view WHERE entity_id = 'sensor.power' ORDER BY time",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        areas,
        vec![
            ("1".to_string(), s("Lounge")),
            ("2".to_string(), s("Lounge"))
        ]
    );
    running.stop().await;
    drop(c);
    db.drop_db().await;
}

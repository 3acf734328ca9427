//! `import-recorder` against recorder databases written by real Home Assistants (2024.3.3, schema
//! 42; 2026.2.3, schema 53), made by `tests/fixtures/make_recorder_fixture.py`: the rows HA's REST
//! API reported when each state was set (what the live `state_changed` event carries) must come
//! out of the recorder file field by field.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ha_client::time::micros_from_iso;
use ha_ingestor::config::{Config, Overrides};
use ha_ingestor::recorder::import::{RecorderImportOptions, RecorderImportSummary, import};
use ha_ingestor::run::RunError;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A config with one instance `home` that subscribes to all events, storing into `db`.
fn config(dir: &Path, db: &Path, extra: &str) -> Config {
    let file = dir.join("cfg.toml");
    std::fs::write(
        &file,
        format!(
            "db = {db:?}\n{extra}\n[[instance]]\nname = \"home\"\nsubscribe = \"all\"\n",
            db = db.display().to_string()
        ),
    )
    .unwrap();
    Config::load_offline(Some(&file), Overrides::default()).unwrap()
}

fn run(config: &Config, recorder: &Path) -> Result<RecorderImportSummary, RunError> {
    let mut options = RecorderImportOptions::new(recorder.display().to_string());
    options.progress_bar = Some(false);
    import(config, &options)
}

/// A stored state, every column live ingestion writes.
#[derive(Debug, PartialEq)]
struct Stored {
    instance: String,
    entity_id: String,
    state: String,
    value: Option<f64>,
    attributes: String,
    last_changed_us: i64,
    last_updated_us: i64,
    time_fired_us: Option<i64>,
    context_id: Option<String>,
    context_user_id: Option<String>,
    context_parent_id: Option<String>,
}

fn stored_states(db: &Path) -> Vec<Stored> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT e.instance, e.entity_id, s.state, s.value, a.json, s.last_changed_us, s.last_updated_us, \
                    s.time_fired_us, s.context_id, s.context_user_id, s.context_parent_id \
             FROM states s JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes \
             ORDER BY s.id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Stored {
            instance: r.get(0)?,
            entity_id: r.get(1)?,
            state: r.get(2)?,
            value: r.get(3)?,
            attributes: r.get(4)?,
            last_changed_us: r.get(5)?,
            last_updated_us: r.get(6)?,
            time_fired_us: r.get(7)?,
            context_id: r.get(8)?,
            context_user_id: r.get(9)?,
            context_parent_id: r.get(10)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// `(event_type, data, time_fired_us, context_id, origin)` of every stored event.
type StoredEvent = (String, String, i64, Option<String>, Option<String>);

fn stored_events(db: &Path) -> Vec<StoredEvent> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT event_type, data, time_fired_us, context_id, origin FROM events ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn count(db: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// Imports `name` and compares every state HA reported with the stored row.
fn imports_as_live(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let recorder = fixture(&format!("{name}.db"));
    let before = std::fs::read(&recorder).unwrap();
    let summary = run(&config(dir.path(), &db, ""), &recorder).unwrap();
    assert_eq!(
        std::fs::read(&recorder).unwrap(),
        before,
        "the recorder file is not changed"
    );
    assert!(!summary.interrupted);
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let expected = expected["states"].as_array().unwrap();
    let stored = stored_states(&db);
    let fixture_rows: Vec<&Stored> = stored
        .iter()
        .filter(|s| s.entity_id.contains(".fixture_"))
        .collect();
    assert_eq!(
        fixture_rows.len(),
        expected.len(),
        "one row per state set, none for the removal: {fixture_rows:#?}"
    );
    for want in expected {
        let entity_id = want["entity_id"].as_str().unwrap();
        let last_updated_us = micros_from_iso(want["last_updated"].as_str().unwrap()).unwrap();
        let got = fixture_rows
            .iter()
            .find(|s| s.entity_id == entity_id && s.last_updated_us == last_updated_us)
            .unwrap_or_else(|| {
                panic!("{entity_id} at {last_updated_us} not stored: {fixture_rows:#?}")
            });
        let state = want["state"].as_str().unwrap();
        assert_eq!(got.instance, "home");
        assert_eq!(got.state, state);
        assert_eq!(got.value, ha_ingestor::record::numeric_value(state));
        assert_eq!(
            got.last_changed_us,
            micros_from_iso(want["last_changed"].as_str().unwrap()).unwrap(),
            "{entity_id} last_changed"
        );
        assert_eq!(
            got.time_fired_us,
            Some(last_updated_us),
            "{entity_id} time_fired"
        );
        let context = &want["context"];
        assert_eq!(
            got.context_id.as_deref(),
            context["id"].as_str(),
            "{entity_id} context"
        );
        assert_eq!(got.context_user_id.as_deref(), context["user_id"].as_str());
        assert_eq!(
            got.context_parent_id.as_deref(),
            context["parent_id"].as_str()
        );
        // HA's recorder never stores supported_features; everything else, in HA's order.
        let mut attributes = want["attributes"].clone();
        attributes
            .as_object_mut()
            .unwrap()
            .remove("supported_features");
        let got_attributes: Value = serde_json::from_str(&got.attributes).unwrap();
        assert_eq!(got_attributes, attributes, "{entity_id} attributes");
        assert_eq!(
            keys(&got_attributes),
            keys(&attributes),
            "{entity_id} attribute order"
        );
    }
    // The event fired through REST: its data as live ingestion writes it, origin REMOTE.
    let events = stored_events(&db);
    let fixture_event = events
        .iter()
        .find(|e| e.0 == "fixture_event")
        .expect("fixture_event imported");
    assert_eq!(
        fixture_event.1,
        r#"{"n":1,"f":2.5,"s":"x","l":[1,{"k":null}]}"#
    );
    assert_eq!(fixture_event.4.as_deref(), Some("REMOTE"));
    let context = fixture_event.3.as_deref().unwrap();
    assert_eq!(context.len(), 26, "a ULID: {context}");
    assert!(events.iter().all(|e| e.0 != "state_changed"));
    assert_eq!(summary.states.inserted, stored.len() as u64);
    assert_eq!(
        summary.events.as_ref().unwrap().inserted,
        events.len() as u64
    );
    // Journaled like live rows: a remote sink reading the journal from the start gets them all.
    let journal = ha_ingestor::store::journal::Journal::open(&db).unwrap();
    let journaled = journal.read_after(0, 10_000).unwrap();
    assert_eq!(journaled.len(), stored.len());
    assert!(
        journaled
            .iter()
            .any(|r| r.entity_id == "sensor.fixture_power")
    );
    assert_eq!(
        journal.read_events_after(0, 10_000).unwrap().len(),
        events.len()
    );
}

#[test]
fn ha_2024_3_3_recorder_rows_are_stored_as_live_ingestion_stores_them() {
    imports_as_live("recorder-2024.3.3");
}

#[test]
fn ha_2026_2_3_recorder_rows_are_stored_as_live_ingestion_stores_them() {
    imports_as_live("recorder-2026.2.3");
}

#[test]
fn importing_twice_adds_nothing() {
    for name in ["recorder-2024.3.3.db", "recorder-2026.2.3.db"] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let config = config(dir.path(), &db, "");
        let first = run(&config, &fixture(name)).unwrap();
        let rows = stored_states(&db);
        let events = stored_events(&db);
        let attributes = count(&db, "attributes");
        assert!(first.states.inserted > 10, "{first}");
        // Resumed: nothing left to read.
        let again = run(&config, &fixture(name)).unwrap();
        assert_eq!(
            (again.states.read, again.states.inserted),
            (0, 0),
            "{again}"
        );
        // Read again from the start (--fresh): every row is already there.
        let mut options = RecorderImportOptions::new(fixture(name).display().to_string());
        options.progress_bar = Some(false);
        options.fresh = true;
        let fresh = import(&config, &options).unwrap();
        assert_eq!(fresh.states.read, first.states.read, "{fresh}");
        assert_eq!(fresh.states.inserted, 0, "{fresh}");
        assert_eq!(
            fresh.states.already_stored, first.states.inserted,
            "{fresh}"
        );
        assert_eq!(fresh.events.as_ref().unwrap().inserted, 0, "{fresh}");
        assert_eq!(stored_states(&db), rows);
        assert_eq!(stored_events(&db), events);
        assert_eq!(
            count(&db, "attributes"),
            attributes,
            "no attribute set added"
        );
    }
}

#[test]
fn an_interrupted_import_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = fixture("recorder-2026.2.3.db");
    // In one go.
    let whole_db = dir.path().join("whole.db");
    run(&config(dir.path(), &whole_db, ""), &recorder).unwrap();
    // Stopped after the first chunk of 4 rows (as Ctrl-C does), then run again.
    let db = dir.path().join("resumed.db");
    let config = config(dir.path(), &db, "");
    let mut options = RecorderImportOptions::new(recorder.display().to_string());
    options.progress_bar = Some(false);
    options.chunk = 4;
    options.stop = Some(Arc::new(AtomicBool::new(true)));
    let part = import(&config, &options).unwrap();
    assert!(part.interrupted, "{part}");
    assert_eq!(part.states.read, 4, "{part}");
    assert!(part.events.is_none(), "{part}");
    assert_eq!(stored_states(&db).len() as u64, part.states.inserted);
    let (last_id, rows): (i64, i64) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT last_id, rows FROM recorder_import_progress WHERE instance = 'home' AND kind = 'state'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (last_id, rows),
        (4, 4),
        "HA's first four state ids are done"
    );
    options.stop = None;
    let rest = import(&config, &options).unwrap();
    assert!(!rest.interrupted, "{rest}");
    assert_eq!(
        part.states.read + rest.states.read,
        22,
        "every recorder state read once: {rest}"
    );
    assert_eq!(stored_states(&db), stored_states(&whole_db));
    assert_eq!(stored_events(&db), stored_events(&whole_db));
}

#[test]
fn since_and_until_keep_to_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = fixture("recorder-2026.2.3.db");
    let whole_db = dir.path().join("whole.db");
    run(&config(dir.path(), &whole_db, ""), &recorder).unwrap();
    let all = stored_states(&whole_db);
    let mut times: Vec<i64> = all.iter().map(|s| s.last_updated_us).collect();
    times.sort();
    let (since, until) = (times[3], times[times.len() - 3]);
    let db = dir.path().join("window.db");
    let mut options = RecorderImportOptions::new(recorder.display().to_string());
    options.progress_bar = Some(false);
    options.since_us = Some(since);
    options.until_us = Some(until);
    import(&config(dir.path(), &db, ""), &options).unwrap();
    let want: Vec<&Stored> = all
        .iter()
        .filter(|s| (since..until).contains(&s.last_updated_us))
        .collect();
    let got = stored_states(&db);
    assert_eq!(got.len(), want.len());
    assert!(
        got.iter()
            .all(|s| (since..until).contains(&s.last_updated_us))
    );
    for s in &got {
        assert!(want.contains(&s), "{s:?}");
    }
}

#[test]
fn the_instance_filter_and_attribute_rules_apply() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let config = config(
        dir.path(),
        &db,
        "[filter.exclude]\ndomains = [\"light\"]\n[attributes]\nexclude = [\"friendly_name\"]\n",
    );
    let summary = run(&config, &fixture("recorder-2024.3.3.db")).unwrap();
    let stored = stored_states(&db);
    assert!(stored.iter().all(|s| !s.entity_id.starts_with("light.")));
    assert!(
        stored
            .iter()
            .all(|s| !s.attributes.contains("friendly_name"))
    );
    let power = stored
        .iter()
        .find(|s| s.entity_id == "sensor.fixture_power")
        .unwrap();
    assert!(
        power
            .attributes
            .starts_with(r#"{"unit_of_measurement":"W","device_class":"power","nested""#),
        "{}",
        power.attributes
    );
    assert!(summary.states.left_out >= 2, "{summary}");
}

fn error_of(recorder: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut options = RecorderImportOptions::new(recorder);
    options.progress_bar = Some(false);
    let e = import(&config(dir.path(), &db, ""), &options).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    e.to_string()
}

#[test]
fn an_unsupported_schema_version_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (version, advice) in [
        (41, "Start a newer Home Assistant"),
        (54, "newer Home Assistant"),
    ] {
        let copy = dir.path().join(format!("v{version}.db"));
        std::fs::copy(fixture("recorder-2026.2.3.db"), &copy).unwrap();
        rusqlite::Connection::open(&copy)
            .unwrap()
            .execute(
                "INSERT INTO schema_changes (schema_version, changed) VALUES (?1, '2026-12-07 00:00:00')",
                [version],
            )
            .unwrap();
        let e = error_of(&copy.display().to_string());
        assert!(e.contains(&format!("schema version {version};")), "{e}");
        assert!(
            e.contains("42 (HA 2024.3) to 53 (HA 2026.2)") && e.contains(advice),
            "{e}"
        );
    }
}

#[test]
fn files_that_are_not_a_recorder_database_are_refused() {
    // A SQLite file of another program (this ingestor's own store; a copy: it is in WAL mode, and
    // a reader of a WAL file creates the -wal and -shm files beside it).
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.db");
    std::fs::copy(fixture("release-8d9f81c.db"), &other).unwrap();
    let e = error_of(&other.display().to_string());
    assert!(
        e.contains("is not a Home Assistant recorder database")
            && e.contains("no such table: schema_changes"),
        "{e}"
    );
    // Not SQLite at all.
    let e = error_of(&fixture("make_recorder_fixture.py").display().to_string());
    assert!(
        e.contains("is not a Home Assistant recorder database") && e.contains("not a database"),
        "{e}"
    );
    let e = error_of("/nonexistent/home-assistant_v2.db");
    assert!(
        e.contains("does not exist")
            && e.contains("home-assistant_v2.db in its configuration folder"),
        "{e}"
    );
    let e = error_of("postgresql://ha:hunter2@db.local/homeassistant");
    assert!(
        e.contains("postgresql:// URL") && e.contains("backfill --since"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn with_several_instances_the_import_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let file = dir.path().join("two.toml");
    std::fs::write(
        &file,
        format!(
            "db = {:?}\n[[instance]]\nname = \"home\"\n[[instance]]\nname = \"cabin\"\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let config = Config::load_offline(Some(&file), Overrides::default()).unwrap();
    let recorder = fixture("recorder-2026.2.3.db");
    let e = run(&config, &recorder).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("several instances (home, cabin)")
            && e.to_string().contains("--instance NAME"),
        "{e}"
    );
    let mut options = RecorderImportOptions::new(recorder.display().to_string());
    options.progress_bar = Some(false);
    options.instance = Some("elsewhere".into());
    let e = import(&config, &options).unwrap_err().to_string();
    assert!(
        e.contains("--instance elsewhere") && e.contains("home, cabin"),
        "{e}"
    );
    options.instance = Some("cabin".into());
    let summary = import(&config, &options).unwrap();
    assert_eq!(summary.instance, "cabin");
    // `subscribe` is state_changed (the default): events are left to live ingestion's choice.
    assert!(summary.events.is_none(), "{summary}");
    let stored = stored_states(&db);
    assert!(!stored.is_empty() && stored.iter().all(|s| s.instance == "cabin"));
    assert_eq!(count(&db, "events"), 0);
}

/// A stored statistics row with its metadata.
#[derive(Debug, PartialEq)]
struct StoredStatistic {
    /// statistic_id, unit, unit_class, mean_type, has_sum.
    meta: (String, Option<String>, Option<String>, i64, bool),
    period: String,
    start_us: i64,
    /// mean, min, max, state, sum.
    values: [Option<f64>; 5],
    last_reset_us: Option<i64>,
}

fn stored_statistics(db: &Path) -> Vec<StoredStatistic> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT m.statistic_id, m.unit, m.unit_class, m.mean_type, m.has_sum, s.period, s.start_us, \
                    s.mean, s.min, s.max, s.state, s.sum, s.last_reset_us \
             FROM statistics s JOIN statistics_meta m ON m.id = s.meta ORDER BY s.id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(StoredStatistic {
            meta: (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
            period: r.get(5)?,
            start_us: r.get(6)?,
            values: [r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?],
            last_reset_us: r.get(12)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A copy of a fixture with statistics as each schema holds them: a meter (sum) and a
/// measurement (mean), hourly and 5-minute rows.
fn with_statistics(name: &str, dir: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(fixture(name), &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let newer = name.contains("2026");
    if newer {
        conn.execute_batch(
            "INSERT INTO statistics_meta (id, statistic_id, source, unit_of_measurement, unit_class, has_mean, has_sum, name, mean_type) VALUES
               (1, 'sensor.energy', 'recorder', 'kWh', 'energy', NULL, 1, NULL, 0),
               (2, 'sensor.temp', 'recorder', '°C', 'temperature', NULL, 0, NULL, 1);",
        )
        .unwrap();
    } else {
        conn.execute_batch(
            "INSERT INTO statistics_meta (id, statistic_id, source, unit_of_measurement, has_mean, has_sum, name) VALUES
               (1, 'sensor.energy', 'recorder', 'kWh', 0, 1, NULL),
               (2, 'sensor.temp', 'recorder', '°C', 1, 0, NULL);",
        )
        .unwrap();
    }
    // 2026-12-06T10:00:00Z = 1796551200.
    conn.execute_batch(
        "INSERT INTO statistics (id, created_ts, metadata_id, start_ts, mean, min, max, last_reset_ts, state, sum) VALUES
           (1, 1796554800.5, 1, 1796551200.0, NULL, NULL, NULL, 1796500000.25, 10.5, 0.0),
           (2, 1796554800.5, 2, 1796551200.0, 20.5, 19.0, 22.25, NULL, NULL, NULL),
           (3, 1796558400.5, 1, 1796554800.0, NULL, NULL, NULL, 1796500000.25, 12.0, 1.5);
         INSERT INTO statistics_short_term (id, created_ts, metadata_id, start_ts, mean, min, max, last_reset_ts, state, sum) VALUES
           (1, 1796551500.5, 2, 1796551200.0, 20.0, 19.5, 20.5, NULL, NULL, NULL),
           (2, 1796551800.5, 2, 1796551500.0, 21.0, 20.5, 21.5, NULL, NULL, NULL);",
    )
    .unwrap();
    path
}

#[test]
fn statistics_are_imported_on_both_schemas_and_once() {
    for name in ["recorder-2024.3.3.db", "recorder-2026.2.3.db"] {
        let dir = tempfile::tempdir().unwrap();
        let recorder = with_statistics(name, dir.path());
        let db = dir.path().join("store.db");
        let config = config(dir.path(), &db, "");
        let first = run(&config, &recorder).unwrap();
        let t = 1_796_551_200_000_000i64;
        let hour = 3_600_000_000i64;
        let reset = Some(1_796_500_000_250_000i64);
        let class = |c: &str| (name.contains("2026")).then(|| c.to_string());
        let energy = |start: i64, state: f64, sum: f64| StoredStatistic {
            meta: (
                "sensor.energy".to_string(),
                Some("kWh".to_string()),
                class("energy"),
                0,
                true,
            ),
            period: "hour".to_string(),
            start_us: start,
            values: [None, None, None, Some(state), Some(sum)],
            last_reset_us: reset,
        };
        let temp = |period: &str, start: i64, mean: f64, min: f64, max: f64| StoredStatistic {
            meta: (
                "sensor.temp".to_string(),
                Some("°C".to_string()),
                class("temperature"),
                1,
                false,
            ),
            period: period.to_string(),
            start_us: start,
            values: [Some(mean), Some(min), Some(max), None, None],
            last_reset_us: None,
        };
        let want = vec![
            energy(t, 10.5, 0.0),
            temp("hour", t, 20.5, 19.0, 22.25),
            energy(t + hour, 12.0, 1.5),
            temp("5minute", t, 20.0, 19.5, 20.5),
            temp("5minute", t + 300_000_000, 21.0, 20.5, 21.5),
        ];
        assert_eq!(stored_statistics(&db), want, "{name}");
        let s = first.statistics.as_ref().unwrap();
        assert_eq!((s.read, s.inserted, s.left_out), (5, 5, 0), "{first}");
        // Read again from the start: the same values are stored already.
        let mut options = RecorderImportOptions::new(recorder.display().to_string());
        options.progress_bar = Some(false);
        options.fresh = true;
        let fresh = import(&config, &options).unwrap();
        let s = fresh.statistics.as_ref().unwrap();
        assert_eq!((s.inserted, s.already_stored), (0, 5), "{fresh}");
        assert_eq!(stored_statistics(&db), want, "{name}");
    }
}

/// `--until` is exclusive for statistics too: the hour that starts at the bound is left out.
#[test]
fn the_window_keeps_statistics_to_their_start() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = with_statistics("recorder-2026.2.3.db", dir.path());
    let db = dir.path().join("store.db");
    let config = config(dir.path(), &db, "");
    let t = 1_796_551_200_000_000i64;
    let mut options = RecorderImportOptions::new(recorder.display().to_string());
    options.progress_bar = Some(false);
    options.until_us = Some(t + 3_600_000_000);
    import(&config, &options).unwrap();
    let starts: Vec<(String, i64)> = stored_statistics(&db)
        .into_iter()
        .map(|s| (s.period, s.start_us))
        .collect();
    assert_eq!(
        starts,
        vec![
            ("hour".to_string(), t),
            ("hour".to_string(), t),
            ("5minute".to_string(), t),
            ("5minute".to_string(), t + 300_000_000),
        ]
    );
}

/// The 2026.2.3 fixture with `n` more states of 7 sensors, written in `dir`: enough rows that
/// the store inserts them in groups (`SqliteStore::set_group_inserts`). Two sensors share
/// attribute sets, as HA shares identical ones.
fn with_generated_states(dir: &Path, n: i64) -> PathBuf {
    let path = dir.join("generated.db");
    std::fs::copy(fixture("recorder-2026.2.3.db"), &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO states_meta (entity_id) VALUES ('sensor.g0'), ('sensor.g1'), ('sensor.g2'),
             ('sensor.g3'), ('sensor.g4'), ('sensor.g5'), ('sensor.g6');
         INSERT INTO state_attributes (hash, shared_attrs) VALUES
             (1, '{\"unit_of_measurement\":\"W\",\"friendly_name\":\"G\"}'),
             (2, '{\"unit_of_measurement\":\"kW\",\"friendly_name\":\"G\"}');",
    )
    .unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
         INSERT INTO states (metadata_id, state, attributes_id, last_updated_ts, last_changed_ts,
                             context_id_bin, origin_idx)
             SELECT (SELECT metadata_id FROM states_meta WHERE entity_id = 'sensor.g' || (i % 7)),
                    printf('%.1f', i / 3.0),
                    (SELECT max(attributes_id) FROM state_attributes) - (i / 7) % 2,
                    1700000000.0 + i * 0.25, NULL, randomblob(16), 0
             FROM n",
        [n],
    )
    .unwrap();
    path
}

#[test]
fn a_store_holding_part_of_the_rows_ends_with_the_rows_an_empty_store_gets() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = with_generated_states(dir.path(), 700);
    let sorted = |db: &Path| {
        let mut rows = stored_states(db);
        rows.sort_by(|a, b| {
            (&a.entity_id, a.last_updated_us).cmp(&(&b.entity_id, b.last_updated_us))
        });
        rows
    };
    let empty_db = dir.path().join("empty.db");
    let whole = run(&config(dir.path(), &empty_db, ""), &recorder).unwrap();
    assert_eq!(whole.states.inserted, 700 + 20, "{whole}");
    // A window in the middle first (its own progress), then everything: the groups the second
    // run inserts are partly stored already.
    let db = dir.path().join("part.db");
    let config = config(dir.path(), &db, "");
    let mut options = RecorderImportOptions::new(recorder.display().to_string());
    options.progress_bar = Some(false);
    options.since_us = Some(1_700_000_040_000_000);
    options.until_us = Some(1_700_000_120_000_000);
    let part = import(&config, &options).unwrap();
    assert_eq!(part.states.inserted, 320, "{part}");
    let rest = run(&config, &recorder).unwrap();
    assert_eq!(
        (rest.states.inserted, rest.states.already_stored),
        (whole.states.inserted - 320, 320),
        "{rest}"
    );
    assert_eq!(sorted(&db), sorted(&empty_db));
}

#[test]
fn a_state_whose_entity_is_missing_from_states_meta_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = with_generated_states(dir.path(), 10);
    let clean_db = dir.path().join("clean.db");
    run(&config(dir.path(), &clean_db, ""), &recorder).unwrap();
    rusqlite::Connection::open(&recorder)
        .unwrap()
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO states (metadata_id, state, last_updated_ts, origin_idx)
             VALUES (999999, '1', 1700000100.0, 0), (999999, '2', 1700000101.0, 0);",
        )
        .unwrap();
    let db = dir.path().join("store.db");
    let summary = run(&config(dir.path(), &db, ""), &recorder).unwrap();
    assert_eq!(summary.states.left_out, 2 + 2, "{summary}");
    assert_eq!(stored_states(&db), stored_states(&clean_db));
}

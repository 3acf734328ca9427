//! A database written by the release before versioned migrations upgrades in place at the first
//! open, every row kept. The file, `fixtures/release-8d9f81c.db` (schema version 1), was written by
//! that release's own binaries; `fixtures/README.md` says how.

use std::path::Path;

use ha_ingestor::record::{Record, RecordKind, StateRow};
use ha_ingestor::store::journal::Journal;
use ha_ingestor::store::{SqliteStore, schema};
use rusqlite::Connection;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/release-8d9f81c.db"
);

/// Every table of the release, its rows as text, in id order (what an upgrade must keep).
const TABLES: [(&str, &str); 8] = [
    (
        "entities",
        "SELECT id, instance, entity_id, domain FROM entities ORDER BY id",
    ),
    (
        "attributes",
        "SELECT id, hash, json FROM attributes ORDER BY id",
    ),
    (
        "states",
        "SELECT id, entity, state, value, attributes, last_changed_us, last_updated_us, time_fired_us, \
         context_id, context_user_id, context_parent_id FROM states ORDER BY id",
    ),
    (
        "events",
        "SELECT id, instance, event_type, data, time_fired_us, context_id, origin FROM events ORDER BY id",
    ),
    (
        "gaps",
        "SELECT id, instance, since_us FROM gaps ORDER BY id",
    ),
    (
        "sink_cursors",
        "SELECT sink, last_id FROM sink_cursors ORDER BY sink",
    ),
    (
        "dead_letters",
        "SELECT id, sink, state_id, reason, at_us FROM dead_letters ORDER BY id",
    ),
    (
        "import_progress",
        "SELECT instance, start_us, end_us, states FROM import_progress ORDER BY instance, start_us",
    ),
];

fn rows(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n)
            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn snapshot(path: &Path) -> Vec<(&'static str, Vec<String>)> {
    let conn = Connection::open(path).unwrap();
    TABLES
        .iter()
        .map(|(t, sql)| (*t, rows(&conn, sql)))
        .collect()
}

fn version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_release_database_upgrades_in_place_keeping_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    assert_eq!(version(&path), 1, "the fixture is a schema version 1 file");
    let before = snapshot(&path);
    for (table, rows) in &before {
        assert!(!rows.is_empty(), "the fixture has rows in {table}");
    }

    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(version(&path), schema::VERSION);
    let after = snapshot(&path);
    for ((table, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(old, new, "{table} changed in the upgrade");
    }

    // What the new columns say of the old rows: every cursor and dead letter was of states.
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        rows(
            &conn,
            "SELECT DISTINCT kind FROM sink_cursors UNION SELECT DISTINCT kind FROM dead_letters"
        ),
        vec![format!("{:?}", rusqlite::types::ValueRef::Text(b"state"))]
    );
    let (sink, last_id): (String, i64) = conn
        .query_row("SELECT sink, last_id FROM sink_cursors LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let journal = Journal::open(&path).unwrap();
    assert_eq!(
        journal.cursor(&sink, RecordKind::State, 0).unwrap(),
        last_id
    );
    let states = before.iter().find(|(t, _)| *t == "states").unwrap().1.len();
    assert_eq!(journal.read_after(0, 1 << 20).unwrap().len(), states);
    assert_eq!(
        journal.head(RecordKind::Event).unwrap() > 0,
        !before
            .iter()
            .find(|(t, _)| *t == "events")
            .unwrap()
            .1
            .is_empty()
    );

    // The upgraded file takes new rows, and a second open changes nothing.
    let row = Record::State(StateRow {
        instance: "fixture".into(),
        entity_id: "sensor.after_upgrade".into(),
        state: "1".into(),
        value: Some(1.0),
        attributes: "{}".into(),
        last_changed_us: 1,
        last_updated_us: 1,
        time_fired_us: Some(1),
        context_id: None,
        context_user_id: None,
        context_parent_id: None,
    });
    assert_eq!(store.write_batch(&[row]).unwrap().inserted, 1);
    drop(store);
    let again = snapshot(&path);
    SqliteStore::open(&path).unwrap();
    assert_eq!(snapshot(&path), again);
}

#[test]
fn a_database_of_a_newer_release_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", schema::VERSION + 1)
        .unwrap();
    let e = SqliteStore::open(&path).err().expect("refused");
    let text = e.to_string();
    assert!(text.contains("newer") && text.contains("--db"), "{text}");
    assert_eq!(version(&path), schema::VERSION + 1, "left as it was");
}

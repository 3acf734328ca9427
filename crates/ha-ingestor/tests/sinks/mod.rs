//! Shared by the real-sink tests: a journal with rows, a sink runner, and waiting on its cursor.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::config;
use ha_ingestor::filter::{AttributeRules, EntityFilter};
use ha_ingestor::health::Health;
use ha_ingestor::record::{Record, StateRow, numeric_value};
use ha_ingestor::sink::runner::SinkRunner;
use ha_ingestor::sink::{SinkConfig, SinkStart};
use ha_ingestor::store::SqliteStore;
use tokio::sync::watch;

/// An environment variable the conformance script sets; a clear failure when it is missing.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the servers with `bash scripts/services.sh start` and export `bash scripts/services.sh env`")
    })
}

/// An event at `us` microseconds.
pub fn event(event_type: &str, us: i64, data: &str) -> Record {
    Record::Event(ha_ingestor::record::EventRow {
        instance: Arc::from("home"),
        event_type: event_type.into(),
        data: data.into(),
        time_fired_us: us,
        context_id: Some(format!("01CTX{us}")),
        origin: Some("LOCAL".into()),
    })
}

/// A state row at `us` microseconds.
pub fn state(entity: &str, state: &str, us: i64, attributes: &str) -> Record {
    Record::State(StateRow {
        instance: Arc::from("home"),
        entity_id: entity.into(),
        state: state.into(),
        value: numeric_value(state),
        attributes: attributes.into(),
        last_changed_us: us,
        last_updated_us: us,
        time_fired_us: Some(us),
        context_id: None,
        context_user_id: None,
        context_parent_id: None,
    })
}

/// A journal file in `dir` holding `records`.
pub fn journal(dir: &Path, records: &[Record]) -> PathBuf {
    let path = dir.join("journal.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.write_batch(records).unwrap();
    path
}

/// Appends more rows to the journal and ticks the commit watch.
pub fn append(path: &Path, records: &[Record], commits: &watch::Sender<u64>) {
    let mut store = SqliteStore::open(path).unwrap();
    store.write_batch(records).unwrap();
    commits.send_modify(|n| *n += 1);
}

/// A running sink: stop it with `stop`.
pub struct Running {
    pub health: Arc<Health>,
    pub stop: watch::Sender<bool>,
    pub commits: watch::Sender<u64>,
    pub handle: tokio::task::JoinHandle<()>,
    pub journal: PathBuf,
    pub name: String,
}

/// Parses a `[[sink]]` block.
pub fn sink_config(toml_text: &str) -> SinkConfig {
    let file = config::parse(toml_text).unwrap_or_else(|e| panic!("{e}"));
    file.sinks.into_iter().next().expect("one [[sink]]")
}

/// Starts the runner of `sink` on `journal`.
pub fn start(sink: &SinkConfig, journal: &Path) -> Running {
    let built = ha_ingestor::sink::build(sink).unwrap_or_else(|e| panic!("{e}"));
    let (commits, commits_rx) = watch::channel(0);
    let (stop, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let runner = SinkRunner {
        name: sink.name.clone(),
        sink: built,
        journal: journal.to_path_buf(),
        filter: EntityFilter::new(&sink.filter).unwrap(),
        attributes: AttributeRules::new(&sink.attributes).unwrap(),
        instances: sink.instances.clone(),
        batch_size: sink.batch_size,
        start: SinkStart::All,
        commits: commits_rx,
        health: health.clone(),
    };
    let handle = tokio::spawn(runner.run(stop_rx));
    Running {
        health,
        stop,
        commits,
        handle,
        journal: journal.to_path_buf(),
        name: sink.name.clone(),
    }
}

impl Running {
    /// Waits until the sink's cursor reached the journal's head.
    pub async fn caught_up(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Caught up on every kind it keeps a cursor for (states always).
            let (cursor, head) = cursor_and_head(&self.journal, &self.name);
            let (event_cursor, event_head) = cursor_and_head_of(&self.journal, &self.name, "event");
            if cursor == Some(head) && event_cursor.is_none_or(|c| c == event_head) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sink '{}' did not catch up within {within:?}: cursor {cursor:?}, head {head}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the runner and waits for it.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.handle.await.unwrap();
    }
}

/// The sink's cursor of states and the journal's newest state.
pub fn cursor_and_head(journal: &Path, sink: &str) -> (Option<i64>, i64) {
    cursor_and_head_of(journal, sink, "state")
}

/// The sink's cursor of `kind` (`state`, `event`) and the journal's newest record of that kind.
pub fn cursor_and_head_of(journal: &Path, sink: &str, kind: &str) -> (Option<i64>, i64) {
    let conn = rusqlite::Connection::open(journal).unwrap();
    let cursor = conn
        .query_row(
            "SELECT last_id FROM sink_cursors WHERE sink = ?1 AND kind = ?2",
            [sink, kind],
            |r| r.get(0),
        )
        .ok();
    let table = if kind == "event" { "events" } else { "states" };
    let head: Option<i64> = conn
        .query_row(&format!("SELECT max(id) FROM {table}"), [], |r| r.get(0))
        .unwrap();
    (cursor, head.unwrap_or(0))
}

/// Dead letters of a sink: (state id, reason).
pub fn dead_letters(journal: &Path, sink: &str) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(journal).unwrap();
    let mut stmt = conn
        .prepare("SELECT state_id, reason FROM dead_letters WHERE sink = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([sink], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A unique name for a database or bucket.
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

/// Runs an InfluxQL query and returns the JSON answer.
pub async fn influxql(base: &str, db: &str, q: &str) -> serde_json::Value {
    influxql_as(base, None, db, q).await
}

/// [`influxql`] with a user and password (for a server with authentication on).
pub async fn influxql_as(
    base: &str,
    credentials: Option<(&str, &str)>,
    db: &str,
    q: &str,
) -> serde_json::Value {
    let mut request = reqwest_client().post(format!("{base}/query"));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    request
        .form(&[("db", db), ("q", q)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A reqwest client (rustls with the ring provider, as the crate builds it).
pub fn reqwest_client() -> reqwest::Client {
    ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .build()
        .unwrap()
}

/// `SELECT count(<field>) FROM <measurement>` as a number (0 when there is no series).
pub async fn influx_count(base: &str, db: &str, measurement: &str, field: &str) -> i64 {
    let v = influxql(
        base,
        db,
        &format!("SELECT count(\"{field}\") FROM \"{measurement}\""),
    )
    .await;
    v["results"][0]["series"][0]["values"][0][1]
        .as_i64()
        .unwrap_or(0)
}

/// (entity_id, time in µs, state) of every point of the clean schema's `states` measurement from
/// `since_us` on, one per point (repeats stay visible).
pub async fn influx_rows(base: &str, db: &str, since_us: i64) -> Vec<(String, i64, String)> {
    let q = format!(
        "SELECT \"state\" FROM \"states\" WHERE time >= {} GROUP BY \"entity_id\"",
        since_us * 1000
    );
    let v: serde_json::Value = reqwest_client()
        .post(format!("{base}/query"))
        .form(&[("db", db), ("q", q.as_str()), ("epoch", "u")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    for series in v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let entity = series["tags"]["entity_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for value in series["values"].as_array().cloned().unwrap_or_default() {
            out.push((
                entity.clone(),
                value[0].as_i64().unwrap(),
                value[1].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

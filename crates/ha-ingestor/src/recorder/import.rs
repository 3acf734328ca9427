//! The recorder import: HA's recorder rows as the records live ingestion writes, through the
//! store, resumably.
//!
//! A recorder row becomes exactly the row the live `state_changed` (or other) event of the same
//! change becomes: the microseconds of HA's ISO strings
//! ([`ha_client::time::micros_from_seconds`]), `time_fired` = `last_updated` (HA fires
//! `state_changed` at the state's `last_updated`), the context ids' text, the instance's entity
//! filter and attribute rules. The store's unique keys ((entity, `last_updated`) for states;
//! (instance, type, `time_fired`, context) for events) then make a re-import add nothing.
//!
//! Rows are read in recorder id order, a chunk per read statement and per store transaction;
//! after each commit the last id done is recorded (`recorder_import_progress`), so an interrupted
//! import resumes there, and a later run with the same window picks up what HA recorded since.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ha_client::time::micros_from_seconds;

use super::context::{context_id, user_id};
use super::read::{IdWindow, RecorderDb, RecorderEvent, RecorderState};
use super::statistics::{Statistic, StatisticsPeriod};
use crate::config::{Config, Subscribe};
use crate::filter::{AttributeRules, EntityFilter};
use crate::record::{EventRow, Record, RecordKind, StateRow, numeric_value};
use crate::run::RunError;
use crate::store::SqliteStore;
use crate::store::progress::{RecorderImportKey, RecorderProgress};

/// Whether to import the recorder's events (other than state changes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsChoice {
    /// As live ingestion would store them: when the instance has `subscribe = "all"`.
    #[default]
    Auto,
    /// Always.
    Yes,
    /// Never.
    No,
}

/// What to import.
#[derive(Clone, Debug)]
pub struct RecorderImportOptions {
    /// The recorder database: a path, or HA's `sqlite:///` URL.
    pub recorder_db: String,
    /// The configured instance to store the rows under (required with several).
    pub instance: Option<String>,
    /// Rows from this time on (`last_updated`, `time_fired`), microseconds.
    pub since_us: Option<i64>,
    /// Rows before this time, microseconds.
    pub until_us: Option<i64>,
    /// Events too?
    pub events: EventsChoice,
    /// Forget the progress of earlier runs.
    pub fresh: bool,
    /// Recorder rows per read and per store transaction.
    pub chunk: usize,
    /// Draw a progress bar (default: when stderr is a terminal); otherwise a line per table.
    pub progress_bar: Option<bool>,
    /// Set to stop after the chunk in hand is committed (Ctrl-C); the next run resumes.
    pub stop: Option<Arc<AtomicBool>>,
}

impl RecorderImportOptions {
    /// The defaults for `recorder_db`.
    pub fn new(recorder_db: impl Into<String>) -> Self {
        RecorderImportOptions {
            recorder_db: recorder_db.into(),
            instance: None,
            since_us: None,
            until_us: None,
            events: EventsChoice::Auto,
            fresh: false,
            chunk: 20_000,
            progress_bar: None,
            stop: None,
        }
    }
}

/// What one table's import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSummary {
    /// Recorder rows read in this run.
    pub read: u64,
    /// Rows new to the store.
    pub inserted: u64,
    /// Rows the store held already (same key).
    pub already_stored: u64,
    /// States skipped as unchanged re-announcements (`[store] skip_unchanged`).
    pub unchanged: u64,
    /// Rows left out: filtered entities, removed-entity markers, rows just outside the window.
    pub left_out: u64,
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct RecorderImportSummary {
    /// The instance the rows went to.
    pub instance: String,
    /// The recorder's schema version.
    pub schema_version: i64,
    /// States.
    pub states: TableSummary,
    /// Events; `None` when not imported.
    pub events: Option<TableSummary>,
    /// Statistics, hourly and 5-minute (`inserted`: new or corrected; `already_stored`: the same
    /// values stored already); `None` when not imported.
    pub statistics: Option<TableSummary>,
    /// Stopped before the end (the next run resumes).
    pub interrupted: bool,
    /// Seconds taken.
    pub seconds: f64,
}

impl std::fmt::Display for RecorderImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = |t: &TableSummary| {
            format!(
                "{} read, {} new, {} already stored, {} unchanged skipped, {} left out",
                t.read, t.inserted, t.already_stored, t.unchanged, t.left_out
            )
        };
        let rows = self.states.read
            + self.events.as_ref().map_or(0, |e| e.read)
            + self.statistics.as_ref().map_or(0, |e| e.read);
        write!(
            f,
            "{} recorder (schema {}) into instance '{}': states {}; events {}; statistics {}; {:.1} s ({:.0} rows/s){}",
            if self.interrupted {
                "interrupted: imported part of the"
            } else {
                "imported the"
            },
            self.schema_version,
            self.instance,
            table(&self.states),
            self.events
                .as_ref()
                .map_or_else(|| "not imported".to_string(), table),
            self.statistics
                .as_ref()
                .map_or_else(|| "not imported".to_string(), table),
            self.seconds,
            rows as f64 / self.seconds.max(1e-9),
            if self.interrupted {
                "; run the same command again to resume"
            } else {
                ""
            }
        )
    }
}

/// Imports the recorder database into `config`'s store.
pub fn import(
    config: &Config,
    options: &RecorderImportOptions,
) -> Result<RecorderImportSummary, RunError> {
    let started = Instant::now();
    let instance = pick_instance(config, options.instance.as_deref())?;
    let recorder =
        RecorderDb::open(&options.recorder_db).map_err(|e| RunError::Config(e.to_string()))?;
    // The instance's own rules on top of the global ones, as live ingestion applies them.
    let (filter, rules) = config
        .rules_for(instance)
        .map_err(|e| RunError::Config(e.0))?;
    let events = match options.events {
        EventsChoice::Auto => instance.subscribe == Subscribe::All,
        EventsChoice::Yes => true,
        EventsChoice::No => false,
    };
    let since_us = options.since_us.unwrap_or(0);
    let until_us = options.until_us.unwrap_or(i64::MAX);
    if since_us >= until_us {
        return Err(RunError::Config("--since is not before --until".into()));
    }
    let mut store = SqliteStore::open(&config.db)?;
    store.set_skip_unchanged(config.store.skip_unchanged);
    store.set_sinks(crate::store::sink_scopes(config));
    store.set_cache_mib(256)?;
    store.set_group_inserts(true)?;
    let progress = RecorderProgress::open(&config.db)?;
    if options.fresh {
        progress.forget()?;
    }
    let mut job = Job {
        recorder: &recorder,
        store: &mut store,
        progress: &progress,
        bound: config
            .store
            .max_db_bytes
            .map(|max| (max, config.store.on_full)),
        converter: Converter {
            instance: Arc::from(instance.name.as_str()),
            filter: &filter,
            rules: &rules,
            entities: Default::default(),
            attributes: Default::default(),
            statistics_meta: Default::default(),
            since_us,
            until_us,
        },
        options,
        since_us,
        until_us,
        bar: options
            .progress_bar
            .unwrap_or_else(|| std::io::stderr().is_terminal()),
    };
    let mut summary = RecorderImportSummary {
        instance: instance.name.clone(),
        schema_version: recorder.schema_version,
        ..Default::default()
    };
    summary.interrupted = job.run(Table::States, &mut summary.states)?;
    if events && !summary.interrupted {
        let mut table = TableSummary::default();
        summary.interrupted = job.run(Table::Events, &mut table)?;
        summary.events = Some(table);
    }
    if instance.mirrors_statistics() && !summary.interrupted {
        let mut table = TableSummary::default();
        for period in [StatisticsPeriod::Hour, StatisticsPeriod::FiveMinute] {
            if job.run(Table::Statistics(period), &mut table)? {
                summary.interrupted = true;
                break;
            }
        }
        summary.statistics = Some(table);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn pick_instance<'c>(
    config: &'c Config,
    name: Option<&str>,
) -> Result<&'c crate::config::InstanceConfig, RunError> {
    let names = || {
        config
            .instances
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => config
            .instances
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                RunError::Config(format!(
                    "--instance {name}: no such [[instance]] in the configuration (there are: {})",
                    names()
                ))
            }),
        None if config.instances.len() == 1 => Ok(&config.instances[0]),
        None => Err(RunError::Config(format!(
            "the configuration has several instances ({}): say with --instance NAME which one the \
             recorder database belongs to",
            names()
        ))),
    }
}

/// A recorder table the import reads, with its own position in `recorder_import_progress`.
#[derive(Clone, Copy, Debug)]
enum Table {
    States,
    Events,
    Statistics(StatisticsPeriod),
}

impl Table {
    /// The progress key (`recorder_import_progress.kind`).
    fn key(self) -> &'static str {
        match self {
            Table::States => RecordKind::State.as_str(),
            Table::Events => RecordKind::Event.as_str(),
            Table::Statistics(StatisticsPeriod::Hour) => "statistic_hour",
            Table::Statistics(StatisticsPeriod::FiveMinute) => "statistic_5minute",
        }
    }

    /// For people: the store's table, and the period.
    fn label(self) -> &'static str {
        match self {
            Table::States => "states",
            Table::Events => "events",
            Table::Statistics(StatisticsPeriod::Hour) => "statistics (hour)",
            Table::Statistics(StatisticsPeriod::FiveMinute) => "statistics (5minute)",
        }
    }
}

struct Job<'a> {
    recorder: &'a RecorderDb,
    store: &'a mut SqliteStore,
    progress: &'a RecorderProgress,
    bound: Option<(u64, crate::config::FullPolicy)>,
    converter: Converter<'a>,
    options: &'a RecorderImportOptions,
    since_us: i64,
    until_us: i64,
    bar: bool,
}

impl Job<'_> {
    /// Imports one table; returns whether it was stopped before the end.
    fn run(&mut self, kind: Table, summary: &mut TableSummary) -> Result<bool, RunError> {
        let instance = self.converter.instance.clone();
        let key = RecorderImportKey {
            instance: &instance,
            recorder: &self.recorder.identity,
            kind: kind.key(),
            since_us: self.since_us,
            until_us: self.until_us,
        };
        let (mut after, rows_before) = self.progress.get(&key)?;
        let read_err = |e: super::RecorderError| RunError::Other(e.to_string());
        let up_to = match kind {
            Table::States => self.recorder.newest_state_id(),
            Table::Events => self.recorder.newest_event_id(),
            Table::Statistics(period) => self.recorder.newest_statistic_id(period),
        }
        .map_err(read_err)?;
        let window = |after| IdWindow::new(after, up_to, self.since_us, self.until_us);
        let todo = match kind {
            Table::States => self.recorder.count_states(window(after)),
            Table::Events => self.recorder.count_events(window(after)),
            Table::Statistics(period) => self.recorder.count_statistics(period, window(after)),
        }
        .map_err(read_err)?;
        if let Table::Statistics(_) = kind
            && self.converter.statistics_meta.is_empty()
        {
            self.converter.statistics_meta = self
                .recorder
                .statistics_meta()
                .map_err(read_err)?
                .into_iter()
                .map(|m| (m.id, Arc::new(store_meta(m))))
                .collect();
        }
        let bar = self.bar.then(|| {
            crate::history::progress_bar(
                todo,
                format!("{instance} {}", kind.label()),
                "{pos}/{len} recorder rows, {per_sec}",
            )
        });
        if bar.is_none() {
            eprintln!(
                "import-recorder: {} {}: {todo} rows to read{}",
                instance,
                kind.label(),
                if after > 0 {
                    format!(" (resuming after recorder id {after})")
                } else {
                    String::new()
                }
            );
        }
        let chunk = self.options.chunk.max(1);
        let mut states = Vec::with_capacity(chunk);
        let mut events = Vec::with_capacity(chunk);
        let mut statistics = Vec::with_capacity(chunk);
        let mut records = Vec::with_capacity(chunk);
        let mut stopped = false;
        let mut reported = Instant::now();
        loop {
            let last = match kind {
                Table::States => {
                    states.clear();
                    let last = self
                        .recorder
                        .read_states(window(after), chunk, &mut states)
                        .map_err(read_err)?;
                    summary.read += states.len() as u64;
                    for s in states.drain(..) {
                        if let Some(record) =
                            self.converter.state(self.recorder, s).map_err(read_err)?
                        {
                            records.push(record);
                        }
                    }
                    last
                }
                Table::Statistics(period) => {
                    statistics.clear();
                    let last = self
                        .recorder
                        .read_statistics(period, window(after), chunk, &mut statistics)
                        .map_err(read_err)?;
                    summary.read += statistics.len() as u64;
                    // A statistic HA created since the metadata was read: read it again, once.
                    if statistics
                        .iter()
                        .any(|r| !self.converter.statistics_meta.contains_key(&r.metadata_id))
                    {
                        self.converter.statistics_meta = self
                            .recorder
                            .statistics_meta()
                            .map_err(read_err)?
                            .into_iter()
                            .map(|m| (m.id, Arc::new(store_meta(m))))
                            .collect();
                    }
                    records.extend(
                        statistics
                            .drain(..)
                            .filter_map(|r| self.converter.statistic(period, r)),
                    );
                    last
                }
                Table::Events => {
                    events.clear();
                    let last = self
                        .recorder
                        .read_events(window(after), chunk, &mut events)
                        .map_err(read_err)?;
                    summary.read += events.len() as u64;
                    records.extend(events.drain(..).filter_map(|e| self.converter.event(e)));
                    last
                }
            };
            let Some(last) = last else {
                break;
            };
            let outcome = crate::store::commit_within_bound(self.store, &records, self.bound)?;
            if let Table::Statistics(_) = kind {
                // New or corrected; the rest held the same values already.
                summary.inserted += outcome.statistics;
                summary.already_stored += records.len() as u64 - outcome.statistics;
            } else {
                summary.inserted += outcome.inserted;
                summary.already_stored += outcome.duplicates;
                summary.unchanged += outcome.unchanged;
            }
            after = last;
            self.progress.set(&key, after, rows_before + summary.read)?;
            records.clear();
            match &bar {
                Some(bar) => bar.set_position(summary.read),
                // Without a terminal (a service's log), a line every 10 s.
                None if reported.elapsed().as_secs() >= 10 => {
                    reported = Instant::now();
                    eprintln!(
                        "import-recorder: {instance} {}: {}/{todo} rows read, up to recorder id {after}",
                        kind.label(),
                        summary.read
                    );
                }
                None => {}
            }
            if self
                .options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                stopped = true;
                break;
            }
        }
        summary.left_out = summary.read
            - (summary.inserted + summary.already_stored + summary.unchanged).min(summary.read);
        match bar {
            Some(bar) => bar.finish(),
            None => eprintln!(
                "import-recorder: {instance} {}: {} rows read{}",
                kind.label(),
                summary.read,
                if stopped { ", stopped" } else { "" }
            ),
        }
        Ok(stopped)
    }
}

/// Recorder rows into records, as live ingestion makes them.
struct Converter<'a> {
    instance: Arc<str>,
    filter: &'a EntityFilter,
    rules: &'a AttributeRules,
    /// Per recorder `metadata_id`: the entity id, or `None` when the filter leaves it out.
    entities: foldhash::HashMap<i64, Option<String>>,
    /// Per recorder (`metadata_id`, `attributes_id`): the attribute set as stored, converted once
    /// (the entity's attribute rules apply to it). Bounded: cleared when full.
    attributes: foldhash::HashMap<(i64, Option<i64>), ConvertedAttributes>,
    /// The recorder's statistics metadata by its id, read once.
    statistics_meta: std::collections::HashMap<i64, Arc<crate::record::StatisticMeta>>,
    since_us: i64,
    until_us: i64,
}

impl Converter<'_> {
    /// A statistics row as the live mirror stores it (the entity filters do not apply to
    /// statistics, as live). A row whose metadata is gone (HA removed the statistic) is left out.
    fn statistic(&self, period: StatisticsPeriod, r: Statistic) -> Option<Record> {
        // The id window reads 1 ms wide on both ends (see `IdWindow`); the window is exact.
        if !(self.since_us..self.until_us).contains(&r.start_us) {
            return None;
        }
        let meta = self.statistics_meta.get(&r.metadata_id)?.clone();
        Some(Record::Statistic(crate::record::StatisticRow {
            instance: self.instance.clone(),
            meta,
            period: match period {
                StatisticsPeriod::Hour => crate::record::StatisticPeriod::Hour,
                StatisticsPeriod::FiveMinute => crate::record::StatisticPeriod::FiveMinute,
            },
            start_us: r.start_us,
            mean: r.mean,
            min: r.min,
            max: r.max,
            state: r.state,
            sum: r.sum,
            last_reset_us: r.last_reset_us,
        }))
    }

    /// The recorder state as a record (`None`: left out), resolving its entity and attribute set
    /// from `recorder` when not known yet.
    fn state(
        &mut self,
        recorder: &RecorderDb,
        s: RecorderState,
    ) -> Result<Option<Record>, super::RecorderError> {
        if !self.entities.contains_key(&s.metadata_id) {
            // A new entity (or the first row): read the entity list again, once for all.
            for (id, entity_id) in recorder.entity_ids()? {
                let allowed = self.filter.allows(&entity_id);
                self.entities
                    .entry(id)
                    .or_insert_with(|| allowed.then_some(entity_id));
            }
            // Still unknown: a row without an entity; its id is not looked up again.
            self.entities.entry(s.metadata_id).or_insert(None);
        }
        // An entity `states_meta` does not hold: the row has no entity (left out, as a join
        // leaves it out).
        let Some(Some(entity_id)) = self.entities.get(&s.metadata_id) else {
            return Ok(None);
        };
        let key = (s.metadata_id, s.attributes_id);
        if !self.attributes.contains_key(&key) {
            let raw = match s.attributes_id {
                Some(id) => recorder.shared_attrs(id)?,
                None => None,
            };
            if self.attributes.len() >= ATTRIBUTE_SETS_CACHED {
                self.attributes.clear();
            }
            self.attributes
                .insert(key, convert_attributes(self.rules, entity_id, raw));
        }
        let attributes = &self.attributes[&key];
        let Some(record) = state_record(&self.instance, entity_id, attributes, s) else {
            return Ok(None);
        };
        let t = record.time_order().0;
        Ok((self.since_us..self.until_us)
            .contains(&t)
            .then_some(record))
    }

    fn event(&self, e: RecorderEvent) -> Option<Record> {
        let record = event_record(&self.instance, e)?;
        let t = record.time_order().0;
        (self.since_us..self.until_us)
            .contains(&t)
            .then_some(record)
    }
}

/// How many converted attribute sets the import keeps (see `Converter::attributes`).
const ATTRIBUTE_SETS_CACHED: usize = 100_000;

/// A recorder attribute set as one entity's rows store it.
#[derive(Clone, Debug)]
pub struct ConvertedAttributes {
    /// The JSON stored (after the entity's attribute rules).
    pub json: String,
    /// HA's attributes were empty (`{}`, or none): with an empty state, the row HA writes when an
    /// entity is removed.
    pub empty: bool,
}

/// `shared_attrs` of a recorder attribute set (`None`: none) as `entity_id`'s rows store it.
pub fn convert_attributes(
    rules: &AttributeRules,
    entity_id: &str,
    shared_attrs: Option<String>,
) -> ConvertedAttributes {
    let attributes = shared_attrs.unwrap_or_else(|| "{}".to_string());
    let empty = attributes == "{}";
    let json = match rules.for_entity(entity_id).retain_json(&attributes) {
        Ok(std::borrow::Cow::Owned(kept)) => kept,
        Ok(std::borrow::Cow::Borrowed(_)) => attributes,
        Err(e) => {
            tracing::warn!(entity = %entity_id, %e, "recorder attributes are not a JSON object; stored as {{}}");
            "{}".to_string()
        }
    };
    ConvertedAttributes { json, empty }
}

/// A recorder state of `entity_id`, with its attribute set converted, as the row its live
/// `state_changed` event gives. `None` for the row HA writes when an entity is removed (an empty
/// state with no attributes; the live event has no new state, and live ingestion stores nothing
/// for it).
pub fn state_record(
    instance: &Arc<str>,
    entity_id: &str,
    attributes: &ConvertedAttributes,
    s: RecorderState,
) -> Option<Record> {
    let state = s.state?;
    if state.is_empty() && attributes.empty {
        return None;
    }
    let last_updated_us = micros_from_seconds(s.last_updated_ts);
    let last_changed_us = s
        .last_changed_ts
        .map_or(last_updated_us, micros_from_seconds);
    fn bin(b: &Option<[u8; 16]>) -> Option<&[u8]> {
        b.as_ref().map(|b| &b[..])
    }
    Some(Record::State(StateRow {
        instance: instance.clone(),
        value: numeric_value(&state),
        state,
        attributes: attributes.json.clone(),
        last_changed_us,
        last_updated_us,
        // HA fires `state_changed` with the state's `last_updated` as `time_fired`.
        time_fired_us: Some(last_updated_us),
        context_id: context_id(bin(&s.context_id), last_updated_us),
        context_user_id: user_id(bin(&s.context_user_id)),
        context_parent_id: context_id(bin(&s.context_parent_id), last_updated_us),
        entity_id: entity_id.to_string(),
    }))
}

/// A recorder event as the row its live event gives: `data` as live ingestion writes it (read
/// into a JSON value and written back), origin `LOCAL`/`REMOTE`. `None` for `state_changed`
/// (stored as states) and data that is not JSON.
pub fn event_record(instance: &Arc<str>, e: RecorderEvent) -> Option<Record> {
    if e.event_type == "state_changed" || e.event_type.is_empty() {
        return None;
    }
    let data = match e.data.as_deref() {
        None => "{}".to_string(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => v.to_string(),
            Err(err) => {
                tracing::warn!(event_id = e.event_id, event_type = %e.event_type, %err, "recorder event data is not JSON; event skipped");
                return None;
            }
        },
    };
    let time_fired_us = micros_from_seconds(e.time_fired_ts);
    Some(Record::Event(EventRow {
        instance: instance.clone(),
        event_type: e.event_type,
        data,
        time_fired_us,
        context_id: context_id(e.context_id.as_deref(), time_fired_us),
        // HA reads a missing origin as local.
        origin: Some(
            if e.origin_idx == Some(1) {
                "REMOTE"
            } else {
                "LOCAL"
            }
            .to_string(),
        ),
    }))
}

/// The recorder's metadata of a statistic, in the store's terms.
fn store_meta(m: super::statistics::StatisticMeta) -> crate::record::StatisticMeta {
    crate::record::StatisticMeta {
        statistic_id: m.statistic_id,
        source: m.source,
        unit: m.unit,
        unit_class: m.unit_class,
        mean_type: u8::try_from(m.mean_type).unwrap_or(0),
        has_sum: m.has_sum,
        name: m.name,
    }
}

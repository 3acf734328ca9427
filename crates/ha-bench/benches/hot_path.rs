//! Micro-benchmarks of the ingestor's hot path, on the firehose's realistic events (about 1 kB:
//! sensors, binary sensors, lights, a thermostat).
//!
//! `cargo bench -p ha-bench --bench hot_path`
//!
//! Each benchmark handles a batch of `SAMPLE` events per iteration; divan's `item/s` column is per
//! event (or per row).

use std::sync::{Arc, LazyLock};

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use ha_client::ws::StateChangedRef;
use ha_ingestor::filter::{
    AttributeRules, AttributesConfig, EntityFilter, FilterConfig, FilterSet,
};
use ha_ingestor::record::{Record, StateRow};
use ha_ingestor::sink::JournalRow;
use ha_ingestor::sink::TimeColumn;
use ha_ingestor::sink::influx::HaEncoder;
use ha_ingestor::sink::influx::HaSchemaOptions;
use ha_ingestor::source::convert;
use ha_ingestor::store::SqliteStore;
use ha_sim::{FirehoseTemplates, SimConfig};

const SAMPLE: usize = 1000;

fn main() {
    divan::main();
}

/// `SAMPLE` consecutive `state_changed` bodies of the firehose (seed 1), as the client hands them
/// to the source.
static EVENTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let t = FirehoseTemplates::build(&SimConfig::default().entities, 1, 4096);
    let base = 1_780_000_000_000_000;
    (0..SAMPLE as u64)
        .map(|i| t.event_json(i, base + i as i64 * 1000))
        .collect()
});

static INSTANCE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("home"));

fn rows() -> Vec<StateRow> {
    let (f, a) = (everything(), no_rules());
    EVENTS
        .iter()
        .filter_map(|e| match convert(&INSTANCE, e, &f, &a) {
            Ok(Some(Record::State(s))) => Some(s),
            _ => None,
        })
        .collect()
}

fn everything() -> EntityFilter {
    EntityFilter::new(&FilterConfig::default()).unwrap()
}

fn no_rules() -> AttributeRules {
    AttributeRules::new(&AttributesConfig::default()).unwrap()
}

fn set(domains: &[&str], entities: &[&str], globs: &[&str]) -> FilterSet {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
    FilterSet {
        domains: v(domains),
        entities: v(entities),
        entity_globs: v(globs),
    }
}

/// frame → event: the borrowed parse of `ha_client::ws::StateChangedRef`.
#[divan::bench]
fn decode_state_changed(b: Bencher) {
    let events = &*EVENTS;
    b.counter(ItemsCount::new(events.len())).bench(|| {
        for e in events {
            let ev: StateChangedRef<'_> = serde_json::from_str(black_box(e)).unwrap();
            black_box(&ev);
        }
    });
}

/// event text → `StateRow` as the source does it (`source::convert`: event-type peek, borrowed
/// parse, filter, attribute rules, timestamps, the owned row). Minus `decode_state_changed`, this
/// is the row encoding.
#[divan::bench]
fn convert_to_state_row(b: Bencher) {
    let events = &*EVENTS;
    let (f, a) = (everything(), no_rules());
    b.counter(ItemsCount::new(events.len())).bench(|| {
        for e in events {
            black_box(convert(&INSTANCE, black_box(e), &f, &a).unwrap());
        }
    });
}

/// The same with attribute rules that drop two attributes (the attributes are re-serialized).
#[divan::bench]
fn convert_with_attribute_rules(b: Bencher) {
    let events = &*EVENTS;
    let f = everything();
    let a = AttributeRules::new(&AttributesConfig {
        exclude: vec!["friendly_name".into(), "supported_features".into()],
        ..AttributesConfig::default()
    })
    .unwrap();
    b.counter(ItemsCount::new(events.len())).bench(|| {
        for e in events {
            black_box(convert(&INSTANCE, black_box(e), &f, &a).unwrap());
        }
    });
}

/// `EntityFilter::allows` for the sample's entity ids, with HA's filter cases.
#[divan::bench(args = ["all", "exclude domains + glob", "include domains + globs + excludes"])]
fn filter_allows(b: Bencher, case: &str) {
    let config = match case {
        "all" => FilterConfig::default(),
        "exclude domains + glob" => FilterConfig {
            include: FilterSet::default(),
            exclude: set(&["automation", "update"], &[], &["sensor.*_linkquality"]),
        },
        _ => FilterConfig {
            include: set(
                &["binary_sensor", "light"],
                &["climate.living_room"],
                &["sensor.*_temperature", "sensor.power_*"],
            ),
            exclude: set(&[], &["light.kitchen"], &["sensor.outdoor_*"]),
        },
    };
    let filter = EntityFilter::new(&config).unwrap();
    let ids: Vec<String> = rows().into_iter().map(|r| r.entity_id).collect();
    b.counter(ItemsCount::new(ids.len())).bench(|| {
        let mut n = 0;
        for id in &ids {
            n += usize::from(filter.allows(black_box(id)));
        }
        n
    });
}

/// `SqliteStore::write_batch` of 1000 rows (fresh timestamps each time, so every row is inserted):
/// in memory, and in a WAL file as the writer uses it.
#[divan::bench(args = ["memory", "file"], sample_count = 30)]
fn sqlite_write_batch_1000(b: Bencher, kind: &str) {
    let dir = std::env::temp_dir().join(format!("ha-bench-divan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut store = match kind {
        "memory" => SqliteStore::in_memory().unwrap(),
        _ => SqliteStore::open(&dir.join("bench.db")).unwrap(),
    };
    let template = rows();
    let mut round = 0i64;
    b.counter(ItemsCount::new(template.len()))
        .with_inputs(|| {
            round += 1;
            template
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.last_updated_us += round * 10_000_000_000;
                    r.last_changed_us = r.last_updated_us;
                    Record::State(r)
                })
                .collect::<Vec<_>>()
        })
        .bench_local_refs(|batch| {
            let o = store.write_batch(batch).unwrap();
            assert_eq!(o.inserted as usize, batch.len());
        });
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// InfluxDB line protocol, HA-compatible schema (`sink::influx::HaEncoder`, default options).
#[divan::bench]
fn influx_ha_line(b: Bencher) {
    let enc = HaEncoder::new(&HaSchemaOptions::default()).unwrap();
    let journal: Vec<JournalRow> = rows()
        .into_iter()
        .enumerate()
        .map(|(i, r)| JournalRow {
            id: i as i64,
            instance: r.instance,
            entity_id: r.entity_id,
            state: r.state,
            value: r.value,
            attributes: r.attributes,
            last_changed_us: r.last_changed_us,
            last_updated_us: r.last_updated_us,
            time_fired_us: r.time_fired_us,
            context_id: r.context_id,
            context_user_id: r.context_user_id,
        })
        .collect();
    let mut out = String::with_capacity(1 << 20);
    b.counter(ItemsCount::new(journal.len())).bench_local(|| {
        out.clear();
        for r in &journal {
            black_box(enc.encode(black_box(r), TimeColumn::TimeFired, &mut out));
        }
        out.len()
    });
}

//! HA event → record (`ha_ingestor::source::convert`, the ingestor's hot path), under an
//! allow-all and a restrictive filter and attribute rule set; short inputs also go straight to
//! the timestamp parser.
//!
//! Invariants: a state row's entity passes the filter; its attributes are a JSON object holding
//! only attributes the rules keep; its value is `numeric_value(state)`; its times are
//! `parse_time_us` of the event's strings. An event row is not a `state_changed`, and its data is
//! JSON. Errors say something. "JSON" is the grammar: rows keep HA's values as raw text, and a
//! number beyond f64 (which serde_json's `Value` refuses) is JSON too, so the oracle reads through
//! `RawValue`, which does not evaluate numbers. `parse_time_us` (with its fast path for HA's own format) gives what
//! the general ISO 8601 parser (jiff) gives, for every string.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use ha_ingestor::filter::{AttributeRules, EntityFilter};
use ha_ingestor::record::{Record, numeric_value, parse_time_us};
use ha_ingestor::source::convert;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

struct Setup {
    filter: EntityFilter,
    rules: AttributeRules,
}

static SETUPS: LazyLock<Vec<Setup>> = LazyLock::new(|| {
    let setup = |filter: &str, rules: &str| Setup {
        filter: EntityFilter::new(&toml::from_str(filter).unwrap()).unwrap(),
        rules: AttributeRules::new(&toml::from_str(rules).unwrap()).unwrap(),
    };
    vec![
        setup("", ""),
        setup(
            r#"
            include = { domains = ["sensor", "light"], entity_globs = ["binary_sensor.*door*"] }
            exclude = { entities = ["sensor.secret"], entity_globs = ["sensor.*_rssi"] }
            "#,
            r#"
            exclude = ["friendly_name", "icon"]
            [[entity]]
            match = "sensor.*"
            include = ["unit_of_measurement", "device_class", "state_class"]
            "#,
        ),
    ]
});

static INSTANCE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("home"));

fn jiff_us(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_microsecond())
}

fn check_time(s: &str) {
    assert_eq!(parse_time_us(s), jiff_us(s), "parse_time_us({s:?})");
}

/// A JSON object's members, values unread (the last of a repeated key, as serde reads a map).
fn members(json: &str) -> Option<BTreeMap<String, &RawValue>> {
    serde_json::from_str(json).ok()
}

/// The JSON text at `path` in the JSON object `json`.
fn raw_at<'j>(json: &'j str, path: &[&str]) -> Option<&'j str> {
    let mut text = json;
    for key in path {
        text = members(text)?.get(*key)?.get();
    }
    Some(text)
}

/// The string at `path` in the JSON object `json`.
fn string_at(json: &str, path: &[&str]) -> Option<String> {
    let (last, outer) = path.split_last()?;
    let mut object = json;
    for key in outer {
        object = members(object)?.get(*key)?.get();
    }
    serde_json::from_str(members(object)?.get(*last)?.get()).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if raw.len() <= 40 {
        check_time(raw);
    }
    for setup in SETUPS.iter() {
        match convert(&INSTANCE, raw, &setup.filter, &setup.rules) {
            Ok(None) => {}
            Ok(Some(Record::State(row))) => {
                assert!(setup.filter.allows(&row.entity_id));
                let policy = setup.rules.for_entity(&row.entity_id);
                match members(&row.attributes) {
                    Some(attrs) => {
                        for key in attrs.keys() {
                            assert!(policy.keeps(key), "kept an attribute the rules drop: {key}");
                        }
                    }
                    None => {
                        // A key serde cannot decode (an unpaired surrogate escape: valid JSON
                        // syntax, no Unicode; HA's encoder never writes one) may pass only when
                        // every attribute is kept, and then exactly as sent.
                        assert!(policy.keeps_all(), "undecodable attributes filtered");
                        let sent = raw_at(raw, &["data", "new_state", "attributes"])
                            .expect("the event's attributes");
                        assert_eq!(row.attributes, sent);
                    }
                }
                assert_eq!(
                    row.value.map(f64::to_bits),
                    numeric_value(&row.state).map(f64::to_bits)
                );
                for (field, us) in [
                    ("last_changed", row.last_changed_us),
                    ("last_updated", row.last_updated_us),
                ] {
                    let text = string_at(raw, &["data", "new_state", field])
                        .expect("the row's time is a string");
                    check_time(&text);
                    assert_eq!(parse_time_us(&text), Some(us));
                }
                if let Some(fired) = string_at(raw, &["time_fired"]) {
                    check_time(&fired);
                    assert_eq!(row.time_fired_us, parse_time_us(&fired));
                }
            }
            Ok(Some(Record::Event(row))) => {
                assert_ne!(row.event_type, "state_changed");
                serde_json::from_str::<&RawValue>(&row.data).expect("event data is JSON");
            }
            Ok(Some(Record::Statistic(_))) => panic!("an event never becomes a statistics row"),
            Err(e) => assert!(!e.is_empty(), "an error says what is wrong"),
        }
    }
});

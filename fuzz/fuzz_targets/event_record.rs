//! HA event → record (`ha_ingestor::source::convert`, the ingestor's hot path), under an
//! allow-all and a restrictive filter and attribute rule set; short inputs also go straight to
//! the timestamp parser.
//!
//! Invariants: a state row's entity passes the filter; its attributes are a JSON object holding
//! only attributes the rules keep; its value is `numeric_value(state)`; its times are
//! `parse_time_us` of the event's strings. An event row is not a `state_changed`, and its data is
//! JSON. Errors say something. `parse_time_us` (with its fast path for HA's own format) gives what
//! the general ISO 8601 parser (jiff) gives, for every string.
#![no_main]

use std::sync::{Arc, LazyLock};

use ha_ingestor::filter::{AttributeRules, EntityFilter};
use ha_ingestor::record::{Record, numeric_value, parse_time_us};
use ha_ingestor::source::convert;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

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

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if raw.len() <= 40 {
        check_time(raw);
    }
    let value: Option<Value> = serde_json::from_str(raw).ok();
    let new_state = value.as_ref().map(|v| &v["data"]["new_state"]);
    for setup in SETUPS.iter() {
        match convert(&INSTANCE, raw, &setup.filter, &setup.rules) {
            Ok(None) => {}
            Ok(Some(Record::State(row))) => {
                assert!(setup.filter.allows(&row.entity_id));
                let attrs: Value =
                    serde_json::from_str(&row.attributes).expect("attributes are JSON");
                let attrs = attrs.as_object().expect("attributes are an object");
                let policy = setup.rules.for_entity(&row.entity_id);
                for key in attrs.keys() {
                    assert!(policy.keeps(key), "kept an attribute the rules drop: {key}");
                }
                assert_eq!(
                    row.value.map(f64::to_bits),
                    numeric_value(&row.state).map(f64::to_bits)
                );
                let s = new_state.expect("a row comes from JSON");
                for (field, us) in [
                    ("last_changed", row.last_changed_us),
                    ("last_updated", row.last_updated_us),
                ] {
                    let text = s[field].as_str().expect("the row's time is a string");
                    check_time(text);
                    assert_eq!(parse_time_us(text), Some(us));
                }
                if let Some(fired) = value.as_ref().and_then(|v| v["time_fired"].as_str()) {
                    check_time(fired);
                    assert_eq!(row.time_fired_us, parse_time_us(fired));
                }
            }
            Ok(Some(Record::Event(row))) => {
                assert_ne!(row.event_type, "state_changed");
                serde_json::from_str::<Value>(&row.data).expect("event data is JSON");
            }
            Ok(Some(Record::Statistic(_))) => panic!("an event never becomes a statistics row"),
            Err(e) => assert!(!e.is_empty(), "an error says what is wrong"),
        }
    }
});

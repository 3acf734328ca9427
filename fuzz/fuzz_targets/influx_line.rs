//! The InfluxDB line encoders (`HaEncoder`, HA's own points with Python's `str()`/`repr()`/`float()`
//! emulated, and `CleanEncoder`, rows and events) on a journal row made from the input, under
//! several option sets. Input: a byte choosing the options, then `entity_id \n state \n attributes`
//! (a non-empty entity id).
//!
//! Invariants, read back with a line protocol reader: one line, ending in its only raw newline; a
//! non-empty measurement; tags and fields as escaped `key=value` with non-empty keys (and tag
//! values), each key once, sorted by key in the `ha` schema (influxdb-python sorts them); field
//! values that are quoted strings, floats (finite, but for the `ha` schema's `value`, which HA
//! does not check either), `i` integers or booleans; an integer timestamp, the row's.
#![no_main]

use std::sync::{Arc, LazyLock};

use ha_ingestor::record::numeric_value;
use ha_ingestor::sink::influx::{CleanEncoder, Encoded, HaEncoder};
use ha_ingestor::sink::{JournalEvent, JournalRow, TimeColumn};
use libfuzzer_sys::fuzz_target;

static HA: LazyLock<Vec<HaEncoder>> = LazyLock::new(|| {
    [
        "",
        r#"
        measurement_attr = "entity_id"
        tags_attributes = ["friendly_name", "device_class", "zone"]
        ignore_attributes = ["icon"]
        tags = { instance = "home", entity_id = "fixed" }
        "#,
        r#"
        measurement_attr = "domain__device_class"
        default_measurement = "ha"
        component_config = { "sensor.override" = { override_measurement = "one" } }
        component_config_domain = { light = { ignore_attributes = ["brightness"] } }
        component_config_glob = { "sensor.*" = { override_measurement = "sensors" }, "*[0-9]" = { ignore_attributes = ["unit_of_measurement"] } }
        "#,
        r#"override_measurement = "all values""#,
    ]
    .iter()
    .map(|opts| HaEncoder::new(&toml::from_str(opts).unwrap()).unwrap())
    .collect()
});

static CLEAN: LazyLock<Vec<CleanEncoder>> = LazyLock::new(|| {
    [
        "",
        r#"
        measurement = "ha.states"
        events_measurement = "ha events"
        attributes = ["unit_of_measurement", "friendly_name", "brightness", "on", "state", "value", "time", "temperature", "x y"]
        field_types = { brightness = "int", friendly_name = "string", on = "bool", temperature = "float" }
        "#,
    ]
    .iter()
    .map(|opts| CleanEncoder::new(&toml::from_str(opts).unwrap()).unwrap())
    .collect()
});

const UPDATED: i64 = 1_796_591_204_845_887;
const FIRED: i64 = 1_796_591_204_845_999;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return; // rows hold strings
    };
    let mut parts = text.splitn(3, '\n');
    let entity_id = parts.next().unwrap_or_default();
    let state = parts.next().unwrap_or_default();
    let attributes = parts.next().unwrap_or("{}");
    if entity_id.is_empty() {
        return; // HA's entity ids are `domain.object_id`; with none the measurement may be empty
    }
    let from_history = choice & 0x80 != 0;
    let row = JournalRow {
        id: 1,
        instance: Arc::from("home"),
        entity_id: entity_id.into(),
        state: state.into(),
        value: numeric_value(state),
        attributes: attributes.into(),
        last_changed_us: UPDATED - 1,
        last_updated_us: UPDATED,
        time_fired_us: (!from_history).then_some(FIRED),
        context_id: None,
        context_user_id: None,
    };
    let time = if choice & 0x40 != 0 {
        TimeColumn::LastUpdated
    } else {
        TimeColumn::TimeFired
    };
    let expected_time = time.micros(&row);

    let ha = &HA[usize::from(choice) % HA.len()];
    let mut out = String::new();
    match ha.encode(&row, time, &mut out) {
        Encoded::Written => check_line(&out, Schema::Ha, expected_time),
        Encoded::Skipped => {
            assert!(out.is_empty());
            assert!(matches!(state, "" | "unknown" | "unavailable"));
        }
    }

    let clean = &CLEAN[usize::from(choice) % CLEAN.len()];
    out.clear();
    assert_eq!(clean.encode(&row, time, &mut out), Encoded::Written);
    check_line(&out, Schema::Clean, expected_time);

    let event = JournalEvent {
        id: 1,
        instance: Arc::from("home"),
        event_type: entity_id.into(),
        data: attributes.into(),
        time_fired_us: FIRED,
        context_id: (!state.is_empty()).then(|| state.into()),
        origin: Some("LOCAL".into()),
    };
    out.clear();
    clean.encode_event(&event, &mut out);
    check_line(&out, Schema::Clean, FIRED);
});

#[derive(Clone, Copy, PartialEq)]
enum Schema {
    Ha,
    Clean,
}

/// Reads `line` as InfluxDB does and checks it (see the module docs).
fn check_line(line: &str, schema: Schema, time: i64) {
    let body = line
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no final newline: {line:?}"));
    assert!(!body.contains('\n'), "raw newline inside {line:?}");
    let mut r = Reader {
        s: body.as_bytes(),
        i: 0,
        line,
    };
    let (measurement, mut stop) = r.token(b", ");
    assert!(!measurement.is_empty(), "empty measurement: {line:?}");
    let mut tags: Vec<Vec<u8>> = Vec::new();
    while stop == Some(b',') {
        let (key, s) = r.token(b"=, ");
        assert!(
            s == Some(b'=') && !key.is_empty(),
            "bad tag key in {line:?}"
        );
        let (value, s) = r.token(b", ");
        assert!(!value.is_empty(), "empty tag value in {line:?}");
        tags.push(key);
        stop = s;
    }
    assert_eq!(stop, Some(b' '), "no fields in {line:?}");
    let mut fields: Vec<Vec<u8>> = Vec::new();
    loop {
        let (key, s) = r.token(b"=, ");
        assert!(
            s == Some(b'=') && !key.is_empty(),
            "bad field key in {line:?}"
        );
        let s = if r.peek() == Some(b'"') {
            r.quoted();
            r.next()
        } else {
            let (value, s) = r.token(b", ");
            let value = std::str::from_utf8(&value).unwrap();
            let may_be_non_finite = schema == Schema::Ha && key == b"value";
            check_value(value, may_be_non_finite, line);
            s
        };
        fields.push(key);
        match s {
            Some(b',') => continue,
            Some(b' ') => break,
            _ => panic!("no timestamp in {line:?}"),
        }
    }
    let rest = std::str::from_utf8(&r.s[r.i..]).unwrap();
    assert_eq!(
        rest.parse::<i64>().ok(),
        Some(time),
        "timestamp of {line:?}"
    );
    for keys in [&tags, &fields] {
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "a key twice in {line:?}");
        if schema == Schema::Ha {
            // Sorted as influxdb-python sorts the unescaped keys (escaping keeps the order of
            // these ASCII-led names only where no escape is involved, so compare unescaped).
            let unescaped: Vec<Vec<u8>> = keys.iter().map(|k| unescape(k)).collect();
            assert!(unescaped.is_sorted(), "keys not sorted in {line:?}");
        }
    }
}

fn check_value(value: &str, may_be_non_finite: bool, line: &str) {
    if matches!(value, "true" | "false") {
        return;
    }
    if let Some(int) = value.strip_suffix('i') {
        assert!(
            int.parse::<i64>().is_ok(),
            "bad integer {value:?} in {line:?}"
        );
        return;
    }
    let f: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value {value:?} in {line:?}"));
    assert!(
        f.is_finite() || may_be_non_finite,
        "non-finite field {value:?} in {line:?}"
    );
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)),
        "odd float {value:?} in {line:?}"
    );
}

fn unescape(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len());
    let mut bytes = key.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(b'n') => out.push(b'\n'),
                Some(&c) => out.push(c),
                None => out.push(b'\\'),
            },
            _ => out.push(b),
        }
    }
    out
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    line: &'a str,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        self.i += 1;
        b
    }

    /// Up to an unescaped stop byte (consumed and returned); `\x` is an escaped pair.
    fn token(&mut self, stops: &[u8]) -> (Vec<u8>, Option<u8>) {
        let mut out = Vec::new();
        while let Some(b) = self.next() {
            if b == b'\\' {
                let escaped = self
                    .next()
                    .unwrap_or_else(|| panic!("trailing \\ in {:?}", self.line));
                out.extend([b, escaped]);
            } else if stops.contains(&b) {
                return (out, Some(b));
            } else {
                out.push(b);
            }
        }
        (out, None)
    }

    /// A quoted string field value; `\` escapes the next byte.
    fn quoted(&mut self) {
        assert_eq!(self.next(), Some(b'"'));
        loop {
            match self.next() {
                Some(b'\\') => {
                    self.next()
                        .unwrap_or_else(|| panic!("unterminated string in {:?}", self.line));
                }
                Some(b'"') => return,
                Some(_) => {}
                None => panic!("unterminated string in {:?}", self.line),
            }
        }
    }
}

//! History decoding: `history/history_during_period`'s compressed result (`ha_client`'s decoder,
//! its exact float seconds) into rows (`ha_ingestor::history::history_record`); the float seconds
//! → microseconds conversion on raw float bits; `import --since` parsing and the day slices it
//! reads. An input starting with `{` is a history result, 8 or 16 bytes are floats, anything else
//! is a `--since` text.
//!
//! Invariants: a decoded state's microseconds are `micros_from_seconds` of its seconds, and a row
//! carries them; its attributes are a JSON object and its value `numeric_value(state)`.
//! `micros_from_seconds` is monotone (never decreases from a float to the next) and gives the
//! nearest microsecond (exact integer arithmetic, half a microsecond plus the product's rounding).
//! `--since` is never before 1970. The slices of `[since, now)` are contiguous, cover it exactly, are at most a day long and end on
//! a day boundary (but the last).
#![no_main]

use std::sync::{Arc, LazyLock};

use ha_client::fuzzing::decode_history;
use ha_client::time::micros_from_seconds;
use ha_ingestor::filter::AttributeRules;
use ha_ingestor::fuzzing::history_slices;
use ha_ingestor::history::history_record;
use ha_ingestor::history::import::parse_since;
use ha_ingestor::record::{Record, numeric_value};
use libfuzzer_sys::fuzz_target;

const DAY_US: i64 = 86_400_000_000;
const NOW_US: i64 = 1_796_591_204_845_887;

static RULES: LazyLock<AttributeRules> = LazyLock::new(|| {
    AttributeRules::new(&toml::from_str(r#"exclude = ["friendly_name"]"#).unwrap()).unwrap()
});
static INSTANCE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("home"));

fuzz_target!(|data: &[u8]| {
    match data {
        [b'{', ..] => history(data),
        _ if data.len() == 8 || data.len() == 16 => {
            for bits in data.chunks_exact(8) {
                seconds(f64::from_le_bytes(bits.try_into().unwrap()));
            }
        }
        _ => since(data),
    }
});

fn history(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(history) = decode_history(json) else {
        return;
    };
    for (entity_id, states) in history {
        for s in states {
            seconds(s.last_changed);
            seconds(s.last_updated);
            let (lc, lu) = (s.last_changed_us(), s.last_updated_us());
            assert_eq!(lc, micros_from_seconds(s.last_changed));
            assert_eq!(lu, micros_from_seconds(s.last_updated));
            let Record::State(row) = history_record(&INSTANCE, &RULES, &entity_id, s) else {
                panic!("history gives state rows");
            };
            assert_eq!((row.last_changed_us, row.last_updated_us), (lc, lu));
            assert_eq!(row.time_fired_us, None);
            let attrs: serde_json::Value = serde_json::from_str(&row.attributes).unwrap();
            assert!(attrs.is_object() && attrs.get("friendly_name").is_none());
            assert_eq!(
                row.value.map(f64::to_bits),
                numeric_value(&row.state).map(f64::to_bits)
            );
        }
    }
}

fn seconds(x: f64) {
    let us = micros_from_seconds(x);
    if x.is_nan() {
        assert_eq!(us, 0);
        return;
    }
    if x < f64::INFINITY {
        let next = micros_from_seconds(x.next_up());
        assert!(
            us <= next,
            "not monotone: {x:e} -> {us}, next float -> {next}"
        );
    }
    // Exact: x = m * 2^-k; |us * 2^k - m * 10^6| <= 2^k / 2 plus the rounding of the product
    // (below a 2^-30 of a microsecond here), in i128 for 2^-20 <= |x| < 2^33.
    let a = x.abs();
    if (2f64.powi(-20)..2f64.powi(33)).contains(&a) {
        let bits = a.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32 - 1075;
        let m = i128::from((bits & ((1 << 52) - 1)) | (1 << 52)) * if x < 0.0 { -1 } else { 1 };
        let (scaled_us, scaled_x) = if exp < 0 {
            (i128::from(us) << -exp, m * 1_000_000)
        } else {
            (i128::from(us), (m * 1_000_000) << exp)
        };
        let k = (-exp).max(0);
        let bound = (1i128 << k) / 2 + ((1i128 << k) >> 30) + 1;
        let diff = (scaled_us - scaled_x).abs();
        assert!(diff <= bound, "{x:e} gave {us} µs, off by {diff} / 2^{k}");
    }
}

fn since(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(since) = parse_since(text, NOW_US) else {
        return;
    };
    assert!(since >= 0, "{text:?} gave {since}, before 1970");
    let slices = history_slices(since, NOW_US);
    if since >= NOW_US {
        assert!(slices.is_empty());
        return;
    }
    assert_eq!(slices.first().map(|s| s.0), Some(since));
    assert_eq!(slices.last().map(|s| s.1), Some(NOW_US));
    for pair in slices.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "contiguous");
        assert_eq!(pair[0].1.rem_euclid(DAY_US), 0, "ends on a day boundary");
    }
    for &(start, end) in &slices {
        assert!(start < end && end - start <= DAY_US);
    }
}

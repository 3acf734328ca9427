//! HA's float seconds against the ISO strings of the same changes, captured from real HA 2024.3.3
//! and 2026.2.3 (`fixtures/ha_time_pairs.json`: the history's `lu`/`lc` and the live event's
//! `last_updated`/`last_changed` of 301 changes on each).

use std::time::UNIX_EPOCH;

use ha_client::time::{Seconds, micros_from_seconds};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    pairs: Vec<Pair>,
}

#[derive(Deserialize)]
struct Pair {
    ha: String,
    seconds: Seconds,
    iso: String,
}

/// Microseconds of HA's ISO form (`...+00:00`, as HA writes UTC).
fn iso_us(iso: &str) -> i64 {
    let utc = iso
        .strip_suffix("+00:00")
        .unwrap_or_else(|| panic!("{iso} is not UTC as HA writes it"));
    let t = humantime::parse_rfc3339(&format!("{utc}Z")).unwrap();
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn pairs() -> Vec<Pair> {
    let text = include_str!("fixtures/ha_time_pairs.json");
    serde_json::from_str::<Fixture>(text).unwrap().pairs
}

#[test]
fn every_real_float_becomes_the_microsecond_of_its_iso_string() {
    let pairs = pairs();
    assert!(pairs.len() >= 600, "{} pairs", pairs.len());
    let wrong: Vec<String> = pairs
        .iter()
        .filter(|p| micros_from_seconds(p.seconds.0) != iso_us(&p.iso))
        .map(|p| {
            format!(
                "{} {:?} -> {} (HA: {})",
                p.ha,
                p.seconds,
                micros_from_seconds(p.seconds.0),
                p.iso
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        pairs.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_fixture_holds_floats_that_naive_rounding_gets_wrong() {
    // Without such floats the test above could not fail for the rounding this module replaced.
    // HA 2024.3.3 made its floats from microsecond datetimes; 2026.2.3 keeps time.time()'s digits.
    let naive_wrong = |ha: &str| {
        pairs()
            .iter()
            .filter(|p| p.ha == ha && (p.seconds.0 * 1e6).round() as i64 != iso_us(&p.iso))
            .count()
    };
    assert_eq!(naive_wrong("2024.3.3"), 0);
    assert!(naive_wrong("2026.2.3") >= 20, "{}", naive_wrong("2026.2.3"));
}

#[test]
fn the_floats_must_be_parsed_exactly() {
    // serde_json's default float parser (without `float_roundtrip`) reads some of HA's floats one
    // unit in the last place off; `Seconds` parses the number's text exactly.
    #[derive(Deserialize)]
    struct Lossy {
        pairs: Vec<LossyPair>,
    }
    #[derive(Deserialize)]
    struct LossyPair {
        seconds: f64,
    }
    let text = include_str!("fixtures/ha_time_pairs.json");
    let lossy = serde_json::from_str::<Lossy>(text).unwrap().pairs;
    let exact = pairs();
    let off = lossy
        .iter()
        .zip(&exact)
        .filter(|(l, e)| l.seconds.to_bits() != e.seconds.0.to_bits())
        .count();
    let wrong_us = lossy
        .iter()
        .zip(&exact)
        .filter(|(l, e)| micros_from_seconds(l.seconds) != iso_us(&e.iso))
        .count();
    println!(
        "serde_json's default parse: {off} of {} floats off, {wrong_us} a microsecond wrong",
        exact.len()
    );
    assert!(
        wrong_us > 0,
        "the fixture no longer shows why exact parsing matters"
    );
}

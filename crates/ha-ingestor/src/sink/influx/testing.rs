//! Rows and encoders for the unit tests of the schemas and of escaping.

use std::sync::Arc;

use super::Encoded;
use super::clean_schema::CleanEncoder;
use super::ha_schema::HaEncoder;
use crate::sink::JournalRow;
use crate::sink::config::TimeColumn;

pub const FIRED: i64 = 1_700_000_000_123_456;
pub const UPDATED: i64 = 1_700_000_000_000_001;

pub fn row(entity_id: &str, state: &str, attributes: &str) -> JournalRow {
    JournalRow {
        id: 1,
        instance: Arc::from("home"),
        entity_id: entity_id.into(),
        state: state.into(),
        value: crate::record::numeric_value(state),
        attributes: attributes.into(),
        last_changed_us: 1,
        last_updated_us: UPDATED,
        time_fired_us: Some(FIRED),
        context_id: None,
        context_user_id: None,
    }
}

pub fn ha(options: &str) -> HaEncoder {
    HaEncoder::new(&toml::from_str(options).unwrap()).unwrap()
}

pub fn clean(options: &str) -> CleanEncoder {
    CleanEncoder::new(&toml::from_str(options).unwrap()).unwrap()
}

pub fn encode_clean(enc: &CleanEncoder, row: &JournalRow) -> String {
    let mut out = String::new();
    assert_eq!(
        enc.encode(row, TimeColumn::TimeFired, &mut out),
        Encoded::Written
    );
    out
}

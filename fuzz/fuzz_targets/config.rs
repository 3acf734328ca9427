//! The TOML config loader (`ha_ingestor::config::parse` and `Config::resolve`, as `Config::load`
//! runs them), then what start-up builds from a valid config without I/O: the entity filters,
//! attribute rules and InfluxDB encoders of the sinks.
//!
//! Invariants: an error is a non-empty message; a resolved config has at least one instance,
//! instance and sink names that are unique and not empty, a URL on every instance, and sinks
//! whose filters and rules compile (`resolve` checked them).
#![no_main]

use std::collections::HashSet;

use ha_ingestor::config::{Config, Overrides, parse};
use ha_ingestor::filter::{AttributeRules, EntityFilter};
use ha_ingestor::sink::SinkKind;
use ha_ingestor::sink::influx::{CleanEncoder, HaEncoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // Config::load reads the file with read_to_string: UTF-8 or an I/O error
    };
    let file = match parse(text) {
        Ok(file) => file,
        Err(e) => {
            assert!(!e.0.is_empty(), "a parse error says what is wrong");
            return;
        }
    };
    let config = match Config::resolve(file, Overrides::default()) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.0.is_empty(), "a config error says what is wrong");
            return;
        }
    };
    assert!(!config.instances.is_empty());
    let mut names = HashSet::new();
    for inst in &config.instances {
        assert!(!inst.name.trim().is_empty());
        assert!(names.insert(&inst.name), "instance names are unique");
        assert!(inst.url.is_some());
    }
    // `run` builds (and reports) the global ones itself.
    if let Err(e) = EntityFilter::new(&config.filter) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = AttributeRules::new(&config.attributes) {
        assert!(!e.to_string().is_empty());
    }
    let mut sinks = HashSet::new();
    for sink in &config.sinks {
        assert!(!sink.name.trim().is_empty() && sink.name != "sqlite");
        assert!(sinks.insert(&sink.name), "sink names are unique");
        assert!(sink.batch_size >= 1);
        EntityFilter::new(&sink.filter).expect("resolve checked the sink's filter");
        AttributeRules::new(&sink.attributes).expect("resolve checked the sink's rules");
        if let SinkKind::Influxdb(influx) = &sink.kind {
            // Built when the sink starts; an error must be a message, never a panic.
            if let Err(e) = HaEncoder::new(&influx.ha) {
                assert!(!e.is_empty());
            }
            if let Err(e) = CleanEncoder::new(&influx.clean) {
                assert!(!e.is_empty());
            }
        }
    }
});

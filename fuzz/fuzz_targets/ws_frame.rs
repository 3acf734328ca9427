//! WebSocket text frame → messages (`ha_client`'s frame decoder, coalesced arrays included), and
//! each event body through the `subscribe_entities` decoder.
//!
//! Invariants: a frame that is not an array is exactly one message, decoded as a lone message
//! would be; an array frame gives one entry per item, each equal to that item decoded alone (the
//! one-pass fast path and the item-by-item fallback agree); anything else is one error. Event and
//! result bodies are valid JSON. An entities update leaves every changed entity in the map (unless the
//! same message removed it) and no removed one.
#![no_main]

use std::collections::HashMap;

use ha_client::fuzzing::{Message, apply_entities, decode_frame, decode_message};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // tungstenite hands over text frames as valid UTF-8 only
    };
    let messages = decode_frame(text);
    if !text.trim_start().starts_with('[') {
        assert_eq!(messages.len(), 1);
        same(&messages[0], &decode_message(text));
    } else {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => {
                assert_eq!(messages.len(), items.len(), "one entry per item");
                for (m, item) in messages.iter().zip(&items) {
                    same(m, &decode_message(item.get()));
                }
            }
            Err(_) => {
                assert_eq!(messages.len(), 1);
                assert!(messages[0].is_err());
            }
        }
    }
    let mut entities = HashMap::new();
    for m in messages.iter().flatten() {
        for body in [&m.result, &m.event].into_iter().flatten() {
            // JSON's grammar (a `Value` would refuse numbers past f64's range, such as 1e400).
            serde_json::from_str::<&RawValue>(body).expect("a body is valid JSON");
        }
        if let Some(event) = &m.event
            && let Ok(update) = apply_entities(&mut entities, event)
        {
            for changed in &update.changed {
                let id = &changed.entity_id;
                assert!(entities.contains_key(id) || update.removed.contains(id));
            }
            for removed in &update.removed {
                assert!(!entities.contains_key(removed));
            }
        }
    }
});

/// The same message, or both errors (the texts differ by path, not by meaning).
fn same(a: &Result<Message, String>, b: &Result<Message, String>) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("frame decoding {a:?} differs from the message alone {b:?}"),
    }
}

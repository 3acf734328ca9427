//! WebSocket text frame → messages: the connection task's splitter (`ha_client`'s `ws::frame`,
//! which finds events by their braces, SSE2 on x86-64, and parses only the rest of each message),
//! checked against serde, and each event body through the `subscribe_entities` decoder.
//!
//! Invariants, when the splitter takes a frame (it may decline; the task then uses serde):
//! - if serde reads the frame (one object, or an array of them), the splitter found the same
//!   messages: one piece per item, an `Other` piece is the item's exact text, an `Event` piece's id
//!   is the item's `id`, its type is `event`, and its body is the item's `event` text exactly;
//! - if serde does not, the fault is inside a piece: an `Other` piece or an event body is not JSON
//!   on its own (event bodies are not validated by the task; the caller's parse fails). A
//!   mis-bracketed split (a brace inside a string taken for structure) breaks one of these.
//!
//! An entities update leaves every changed entity in the map (unless the same message removed it)
//! and no removed one.
#![no_main]

use std::collections::HashMap;

use ha_client::fuzzing::{Piece, apply_entities, split_frame};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // tungstenite hands over text frames as valid UTF-8 only
    };
    let Some(pieces) = split_frame(text) else {
        return;
    };
    assert!(!pieces.is_empty());
    let items: Option<Vec<&RawValue>> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).ok()
    } else {
        serde_json::from_str::<&RawValue>(text)
            .ok()
            .map(|r| vec![r])
    };
    match items {
        Some(items) => {
            assert_eq!(pieces.len(), items.len(), "one piece per message: {text}");
            for (piece, item) in pieces.iter().zip(&items) {
                match piece {
                    Piece::Other(s) => assert_eq!(s, item.get()),
                    Piece::Event { id, event } => {
                        #[derive(serde::Deserialize)]
                        struct Msg<'a> {
                            id: u64,
                            #[serde(rename = "type")]
                            kind: String,
                            #[serde(borrow)]
                            event: &'a RawValue,
                        }
                        let msg: Msg = serde_json::from_str(item.get())
                            .expect("an event piece is an event message");
                        assert_eq!((msg.id, msg.kind.as_str()), (*id, "event"));
                        assert_eq!(msg.event.get(), event);
                    }
                }
            }
        }
        // serde stops at 128 levels of nesting: a body just under it alone is over it in a frame.
        None if text.bytes().filter(|b| *b == b'{' || *b == b'[').count() > 100 => {}
        None => {
            let fault_inside = pieces.iter().any(|p| {
                let s = match p {
                    Piece::Other(s) | Piece::Event { event: s, .. } => s,
                };
                serde_json::from_str::<&RawValue>(s).is_err()
            });
            assert!(
                fault_inside,
                "serde refuses a frame whose pieces are all JSON: {:.300}",
                text
            );
        }
    }
    let mut entities = HashMap::new();
    for piece in &pieces {
        if let Piece::Event { event, .. } = piece
            && serde_json::from_str::<Value>(event).is_ok()
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

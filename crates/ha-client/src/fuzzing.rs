//! The crate's private decoders, for the fuzz targets in `fuzz/` (the `fuzzing` feature). Not an
//! API: it may change at any time. Each function drives the code the client itself runs.

use std::collections::{BTreeMap, HashMap};

use crate::ws::{EntitiesUpdate, EntityState, HistoryState};

/// An owned copy of one decoded WebSocket message, for comparing decodings.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// `id`.
    pub id: Option<u64>,
    /// `type`.
    pub kind: String,
    /// `success`.
    pub success: Option<bool>,
    /// `result`'s JSON text.
    pub result: Option<String>,
    /// `error`'s code and message.
    pub error: Option<(String, String)>,
    /// `event`'s JSON text.
    pub event: Option<String>,
}

impl From<crate::ws::frame::Incoming<'_>> for Message {
    fn from(m: crate::ws::frame::Incoming<'_>) -> Self {
        Message {
            id: m.id,
            kind: m.kind.into_owned(),
            success: m.success,
            result: m.result.map(|r| r.get().to_owned()),
            error: m.error.map(|e| (e.code, e.message)),
            event: m.event.map(|e| e.get().to_owned()),
        }
    }
}

/// A text frame's messages, as the connection task dispatches them.
pub fn decode_frame(text: &str) -> Vec<Result<Message, String>> {
    crate::ws::frame::decode_frame(text)
        .map(|m| m.map(Message::from))
        .collect()
}

/// One message's text, as a frame's items are decoded when the whole array does not parse.
pub fn decode_message(text: &str) -> Result<Message, String> {
    crate::ws::frame::decode_message(text).map(Message::from)
}

/// `history/history_during_period`'s result.
pub fn decode_history(json: &str) -> Result<BTreeMap<String, Vec<HistoryState>>, String> {
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    crate::ws::types::decode_history(raw).map_err(|e| e.to_string())
}

/// One `subscribe_entities` message applied to the entity map.
pub fn apply_entities(
    entities: &mut HashMap<String, EntityState>,
    json: &str,
) -> Result<EntitiesUpdate, String> {
    crate::ws::entities::apply(entities, json).map_err(|e| e.to_string())
}

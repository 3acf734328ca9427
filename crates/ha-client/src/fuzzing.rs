//! The crate's private decoders, for the fuzz targets in `fuzz/` (the `fuzzing` feature). Not an
//! API: it may change at any time. Each function drives the code the client itself runs.

use std::collections::{BTreeMap, HashMap};

use crate::ws::{EntitiesUpdate, EntityState, HistoryState, StatisticMetadata, StatisticsAnswer};

/// One message of a text frame, as the connection task's splitter finds it.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// An event message: its subscription id and the event object's text.
    Event {
        /// The message's `id`.
        id: u64,
        /// The `event` object, as it stands in the frame.
        event: String,
    },
    /// Any other message, as it stands in the frame (the task parses it with serde).
    Other(String),
}

/// A text frame split as the connection task splits it; `None` when the splitter declines (the
/// task then parses the frame with serde).
pub fn split_frame(text: &str) -> Option<Vec<Piece>> {
    let (mut skeleton, mut out) = (String::new(), Vec::new());
    if !crate::ws::frame::split(text, &mut skeleton, &mut out) {
        return None;
    }
    Some(
        out.into_iter()
            .map(|p| match p {
                crate::ws::frame::Piece::Event { id, event } => Piece::Event {
                    id,
                    event: text[event].to_owned(),
                },
                crate::ws::frame::Piece::Other(r) => Piece::Other(text[r].to_owned()),
            })
            .collect(),
    )
}

/// `history/history_during_period`'s result.
pub fn decode_history(json: &str) -> Result<BTreeMap<String, Vec<HistoryState>>, String> {
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    crate::ws::types::decode_history(raw).map_err(|e| e.to_string())
}

/// `recorder/statistics_during_period`'s result, decoded as [`crate::ws::WsClient::command`] does.
pub fn decode_statistics(json: &str) -> Result<StatisticsAnswer, String> {
    decode_result(json)
}

/// `recorder/list_statistic_ids`' (and `recorder/get_statistics_metadata`'s) result.
pub fn decode_statistic_metadata(json: &str) -> Result<Vec<StatisticMetadata>, String> {
    decode_result(json)
}

fn decode_result<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    crate::ws::decode_result(raw).map_err(|e| e.to_string())
}

/// One `subscribe_entities` message applied to the entity map.
pub fn apply_entities(
    entities: &mut HashMap<String, EntityState>,
    json: &str,
) -> Result<EntitiesUpdate, String> {
    crate::ws::entities::apply(entities, json).map_err(|e| e.to_string())
}

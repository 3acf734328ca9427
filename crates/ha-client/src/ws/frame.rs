//! A text frame from HA into its messages: one object, or a JSON array of them when HA coalesces
//! (`coalesce_messages`). Pure and synchronous, apart from the connection task that acts on the
//! messages, so it can be tested and fuzzed on its own.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One message of HA's, borrowed from the frame.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming<'a> {
    #[serde(default)]
    pub(crate) id: Option<u64>,
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    #[serde(default)]
    pub(crate) success: Option<bool>,
    #[serde(default, borrow)]
    pub(crate) result: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) error: Option<ErrorBody>,
    #[serde(default, borrow)]
    pub(crate) event: Option<&'a RawValue>,
}

/// The `error` of a failed result.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

/// The messages of a frame, in order: each one parsed, or why it could not be (a protocol error
/// to report; the others still count).
pub(crate) struct Messages<'a>(Repr<'a>);

enum Repr<'a> {
    /// The whole array parsed in one pass (the hot path).
    Parsed(std::vec::IntoIter<Incoming<'a>>),
    /// Some item did not parse: each is parsed on its own, so one bad item does not cost the rest.
    Items(std::vec::IntoIter<&'a RawValue>),
    /// A frame that is one message.
    Single(Option<&'a str>),
    /// Not even a JSON array.
    Invalid(Option<String>),
}

/// Splits `text` into its messages (see [`Messages`]).
pub(crate) fn decode_frame(text: &str) -> Messages<'_> {
    if !text.trim_start().starts_with('[') {
        return Messages(Repr::Single(Some(text)));
    }
    if let Ok(items) = serde_json::from_str::<Vec<Incoming<'_>>>(text) {
        return Messages(Repr::Parsed(items.into_iter()));
    }
    Messages(match serde_json::from_str::<Vec<&RawValue>>(text) {
        Ok(items) => Repr::Items(items.into_iter()),
        Err(e) => Repr::Invalid(Some(format!("invalid JSON array frame: {e}"))),
    })
}

/// One message's text.
pub(crate) fn decode_message(text: &str) -> Result<Incoming<'_>, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid message: {e}"))
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Incoming<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Repr::Parsed(items) => items.next().map(Ok),
            Repr::Items(items) => items.next().map(|item| decode_message(item.get())),
            Repr::Single(text) => text.take().map(decode_message),
            Repr::Invalid(error) => error.take().map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Result<String, String>> {
        decode_frame(text)
            .map(|m| m.map(|m| m.kind.into_owned()))
            .collect()
    }

    #[test]
    fn a_coalesced_frame_gives_each_message_and_a_bad_item_costs_only_itself() {
        let frame = r#"[{"id":1,"type":"event","event":{"a":1}},{"id":2,"type":"result","success":true,"result":null}]"#;
        let messages: Vec<_> = decode_frame(frame).collect::<Result<_, _>>().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].event.unwrap().get(), r#"{"a":1}"#);
        assert_eq!(messages[1].success, Some(true));

        let got = kinds(r#"[{"id":1,"type":"pong"},{"id":"x"},{"type":"result"}]"#);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_deref(), Ok("pong"));
        assert!(got[1].as_ref().unwrap_err().starts_with("invalid message"));
        assert_eq!(got[2].as_deref(), Ok("result"));
    }

    #[test]
    fn a_single_message_and_broken_frames() {
        assert_eq!(kinds(r#" {"type":"pong","id":3}"#), vec![Ok("pong".into())]);
        let got = kinds("[{\"type\":\"pong\"}");
        assert_eq!(got.len(), 1);
        assert!(
            got[0]
                .as_ref()
                .unwrap_err()
                .starts_with("invalid JSON array frame")
        );
        let got = kinds("nonsense");
        assert!(got[0].as_ref().unwrap_err().starts_with("invalid message"));
        assert!(kinds("[]").is_empty());
    }
}

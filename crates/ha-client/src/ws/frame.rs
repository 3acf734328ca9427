//! Splitting HA's frames into messages without parsing the events in them.
//!
//! The connection task only needs to know, per message, whether it is an event and for which
//! subscription; the event's body is parsed once, by the caller, into the caller's type. Parsing
//! it here as well (serde's `RawValue` has to read a value to find its end) cost as much as the
//! caller's own borrowed parse. So braces are matched outside strings, 64 bytes at a time
//! (SSE2 on x86-64), and only what is left of a message around its one nested object is parsed
//! with serde. Anything else (results, errors, pongs, malformed frames) takes serde's path.
//!
//! Event bodies are not validated here: a malformed one fails the caller's parse.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

/// One message of a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// `{"type":"event","event":{...},"id":N}` in any key order: the subscription id and where
    /// the event object is in the frame.
    Event { id: u64, event: Range<usize> },
    /// Any other message (its range in the frame), for serde.
    Other(Range<usize>),
}

/// Splits a frame (one message, or a JSON array of them) into `out`, in order. `false` when it
/// is not a well-bracketed frame of objects; the caller then parses it with serde, which says
/// what is wrong. `skeleton` is scratch space, reused between frames.
pub(crate) fn split(text: &str, skeleton: &mut String, out: &mut Vec<Piece>) -> bool {
    out.clear();
    let bytes = text.as_bytes();
    // Several messages only inside an array: `{..},{..}` alone is not JSON (found by fuzzing).
    let array = bytes.iter().find(|b| !is_json_space(b)) == Some(&b'[');
    let mut depth = 0usize;
    let mut msg_start = 0;
    let mut gap_start = 0;
    let mut nested = 0usize;
    let mut inner = 0..0;
    let mut ok = true;
    let ended_in_string = braces(bytes, |pos, brace| {
        if !ok {
            return;
        }
        if brace == b'{' {
            match depth {
                0 => {
                    ok = (array || out.is_empty())
                        && is_separator(&bytes[gap_start..pos], out.is_empty());
                    msg_start = pos;
                    nested = 0;
                }
                1 => {
                    nested += 1;
                    inner.start = pos;
                }
                _ => {}
            }
            depth += 1;
        } else {
            match depth {
                0 => ok = false,
                1 => {
                    let msg = msg_start..pos + 1;
                    out.push(classify(
                        text,
                        msg,
                        (nested == 1).then(|| inner.clone()),
                        skeleton,
                    ));
                    gap_start = pos + 1;
                }
                2 => inner.end = pos + 1,
                _ => {}
            }
            depth = depth.saturating_sub(1);
        }
    });
    ok && !ended_in_string
        && depth == 0
        && !out.is_empty()
        && is_closing(&bytes[gap_start..], array)
}

/// JSON's whitespace: not the form feed that `is_ascii_whitespace` also takes (found by fuzzing).
fn is_json_space(b: &&u8) -> bool {
    matches!(**b, b' ' | b'\t' | b'\n' | b'\r')
}

/// What may stand before a message: whitespace, and `[` before the first or `,` before the others.
fn is_separator(gap: &[u8], first: bool) -> bool {
    let mut punct = gap.iter().filter(|b| !is_json_space(b));
    let expected = if first { None } else { Some(&b',') };
    match (first, punct.next(), punct.next()) {
        (true, None, None) => true,
        (true, Some(b'['), None) => true,
        (false, p, None) => p == expected,
        _ => false,
    }
}

/// What may follow the last message: whitespace, and `]` if the frame is an array.
fn is_closing(tail: &[u8], array: bool) -> bool {
    let mut punct = tail.iter().filter(|b| !is_json_space(b));
    match (punct.next(), punct.next()) {
        (None, None) => !array,
        (Some(b']'), None) => array,
        _ => false,
    }
}

/// What a message with `inner` as its only nested object says, from the rest of it.
fn classify(
    text: &str,
    msg: Range<usize>,
    inner: Option<Range<usize>>,
    skeleton: &mut String,
) -> Piece {
    #[derive(Deserialize)]
    struct Skeleton<'a> {
        #[serde(default)]
        id: Option<u64>,
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default)]
        event: Option<u8>,
    }
    let Some(inner) = inner else {
        return Piece::Other(msg);
    };
    // The nested object must be the value of `event`...
    let before = text[msg.start..inner.start].trim_end();
    let Some(before) = before.strip_suffix(':') else {
        return Piece::Other(msg);
    };
    if !before.trim_end().ends_with("\"event\"") {
        return Piece::Other(msg);
    }
    // ...and the rest `"type":"event"` with an id. HA's own layout is matched as text (serde for a
    // few dozen bytes per event was a visible share of the split); any other is parsed with a
    // stand-in for the object.
    if let Some(id) = ha_layout_id(&text[msg.start..inner.start], &text[inner.end..msg.end]) {
        return Piece::Event { id, event: inner };
    }
    skeleton.clear();
    skeleton.push_str(&text[msg.start..inner.start]);
    skeleton.push('0');
    skeleton.push_str(&text[inner.end..msg.end]);
    match serde_json::from_str::<Skeleton<'_>>(skeleton) {
        Ok(Skeleton {
            id: Some(id),
            kind,
            event: Some(0),
        }) if kind == "event" => Piece::Event { id, event: inner },
        _ => Piece::Other(msg),
    }
}

/// The id of an event message in HA's layout, `{"type":"event","event":{...},"id":N}`.
fn ha_layout_id(before: &str, after: &str) -> Option<u64> {
    if before != r#"{"type":"event","event":"# {
        return None;
    }
    let digits = after.strip_prefix(r#","id":"#)?.strip_suffix('}')?;
    // JSON's grammar: no leading zero (`05` is not a number; serde then says so). Found by fuzzing.
    if digits.is_empty()
        || digits.len() > 19
        || (digits.len() > 1 && digits.starts_with('0'))
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

/// Calls `f` with the position and byte of every `{` and `}` outside JSON strings, in order.
/// Returns whether the text ended inside a string.
fn braces(bytes: &[u8], mut f: impl FnMut(usize, u8)) -> bool {
    let mut state = Scalar::default();
    let mut chunks = bytes.chunks_exact(64);
    let mut base = 0;
    for block in &mut chunks {
        let block: &[u8; 64] = block.try_into().unwrap_or(&[b' '; 64]);
        block_braces(block, base, &mut state, &mut f);
        base += 64;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Spaces after the end: no quotes, no braces.
        let mut last = [b' '; 64];
        last[..rest.len()].copy_from_slice(rest);
        block_braces(&last, base, &mut state, &mut f);
    }
    state.in_string
}

/// Where a string stands at the end of what was scanned.
#[derive(Default, Clone, Copy)]
struct Scalar {
    in_string: bool,
    escaped: bool,
}

fn block_braces(block: &[u8; 64], base: usize, state: &mut Scalar, f: &mut impl FnMut(usize, u8)) {
    let m = masks(block);
    if m.backslash != 0 || state.escaped {
        // Escapes are rare in HA's JSON: such a block goes byte by byte.
        scalar_braces(block, base, state, f);
        return;
    }
    // Bit i of `inside` is set when byte i lies after an odd number of quotes (a string's
    // opening quote and its content): the prefix XOR of the quote bits, flipped when the block
    // starts inside a string.
    let mut inside = m.quote;
    for shift in [1, 2, 4, 8, 16, 32] {
        inside ^= inside << shift;
    }
    if state.in_string {
        inside = !inside;
    }
    state.in_string = inside >> 63 == 1;
    let mut structural = (m.open | m.close) & !inside;
    while structural != 0 {
        let i = structural.trailing_zeros() as usize;
        f(base + i, block[i]);
        structural &= structural - 1;
    }
}

fn scalar_braces(block: &[u8], base: usize, state: &mut Scalar, f: &mut impl FnMut(usize, u8)) {
    for (i, &c) in block.iter().enumerate() {
        if state.in_string {
            if state.escaped {
                state.escaped = false;
            } else if c == b'\\' {
                state.escaped = true;
            } else if c == b'"' {
                state.in_string = false;
            }
        } else if c == b'"' {
            state.in_string = true;
        } else if c == b'{' || c == b'}' {
            f(base + i, c);
        }
    }
}

/// Bit i set where byte i of the block is that character.
struct Masks {
    quote: u64,
    backslash: u64,
    open: u64,
    close: u64,
}

#[cfg(target_arch = "x86_64")]
fn masks(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mut m = Masks {
        quote: 0,
        backslash: 0,
        open: 0,
        close: 0,
    };
    for part in 0..4 {
        // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics are always available;
        // the load reads the 16 bytes at `16 * part`, inside the 64-byte block, and `loadu` has no
        // alignment requirement.
        let [quote, backslash, open, close] = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * part).cast::<__m128i>());
            [b'"', b'\\', b'{', b'}']
                .map(|c| _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8))) as u16)
        };
        let at = |bits: u16| u64::from(bits) << (16 * part);
        m.quote |= at(quote);
        m.backslash |= at(backslash);
        m.open |= at(open);
        m.close |= at(close);
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
fn masks(block: &[u8; 64]) -> Masks {
    let bits = |c: u8| {
        block
            .iter()
            .enumerate()
            .fold(0u64, |m, (i, &b)| m | (u64::from(b == c) << i))
    };
    Masks {
        quote: bits(b'"'),
        backslash: bits(b'\\'),
        open: bits(b'{'),
        close: bits(b'}'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use serde_json::{Map, Value};

    /// A message as the tests compare them: id, type, the event's text.
    type Message = (Option<u64>, String, Option<String>);

    /// The reference: serde's reading of the same frame.
    fn by_serde(text: &str) -> Option<Vec<Message>> {
        #[derive(Deserialize)]
        struct M<'a> {
            #[serde(default)]
            id: Option<u64>,
            #[serde(rename = "type")]
            kind: String,
            #[serde(default, borrow)]
            event: Option<&'a RawValue>,
        }
        let msgs: Vec<&RawValue> = if text.trim_start().starts_with('[') {
            serde_json::from_str(text).ok()?
        } else {
            vec![serde_json::from_str(text).ok()?]
        };
        msgs.iter()
            .map(|m| {
                let m: M<'_> = serde_json::from_str(m.get()).ok()?;
                Some((m.id, m.kind, m.event.map(|e| e.get().to_string())))
            })
            .collect()
    }

    /// What `split` says, in the same shape (Other messages parsed by serde).
    fn by_split(text: &str) -> Option<Vec<Message>> {
        let mut out = Vec::new();
        if !split(text, &mut String::new(), &mut out) {
            return None;
        }
        out.iter()
            .map(|p| match p {
                Piece::Event { id, event } => Some((
                    Some(*id),
                    "event".to_string(),
                    Some(text[event.clone()].to_string()),
                )),
                Piece::Other(r) => by_serde(&text[r.clone()]).and_then(|mut v| v.pop()),
            })
            .collect()
    }

    fn real_frames() -> Vec<&'static str> {
        [
            include_str!("../../tests/fixtures/state_changed_frames_2024.3.3.jsonl"),
            include_str!("../../tests/fixtures/state_changed_frames_2026.2.3.jsonl"),
        ]
        .iter()
        .flat_map(|f| f.lines())
        .collect()
    }

    #[test]
    fn real_frames_split_as_serde_reads_them() {
        let frames = real_frames();
        let mut events = 0;
        for f in &frames {
            let expected = by_serde(f).unwrap();
            assert_eq!(by_split(f), Some(expected.clone()), "{f}");
            events += expected.iter().filter(|m| m.1 == "event").count();
            // Every event was found without serde (its braces), results went to serde.
            let mut out = Vec::new();
            assert!(split(f, &mut String::new(), &mut out));
            for (p, m) in out.iter().zip(&expected) {
                assert_eq!(matches!(p, Piece::Event { .. }), m.1 == "event", "{f}");
            }
        }
        assert!(events >= 14, "{events}");
    }

    #[test]
    fn strings_escapes_and_block_edges() {
        // Braces and quotes inside strings, escaped quotes and backslashes, at every offset from
        // a 64-byte block edge.
        let bodies = [
            r#"{"event_type":"x","data":{"s":"{ not } a \" brace {","t":"\\","u":"\\\"}"}}"#,
            r#"{"a":"}}}","b":[{"c":{}},{}],"d":"\u007b"}"#,
            r#"{}"#,
        ];
        for pad in 0..130 {
            for body in bodies {
                let spaces = " ".repeat(pad);
                let frame = format!(
                    r#"[{spaces}{{"type":"event","event":{body},"id":7}},{{"id":8,"type":"result","success":true,"result":{{"x":"{{"}}}},{{"type":"pong","id":9}}]"#
                );
                assert_eq!(by_split(&frame), by_serde(&frame), "{frame}");
                let mut out = Vec::new();
                assert!(split(&frame, &mut String::new(), &mut out), "{frame}");
                assert!(matches!(out[0], Piece::Event { id: 7, .. }), "{frame}");
                assert!(matches!(out[1], Piece::Other(_)) && matches!(out[2], Piece::Other(_)));
                // The same as a single message frame, key order changed.
                let single = format!(r#"{spaces}{{"id":3,"event":{body},"type":"event"}}"#);
                assert_eq!(by_split(&single), by_serde(&single), "{single}");
            }
        }
    }

    #[test]
    fn ha_layout_is_read_as_text_and_anything_else_by_serde() {
        assert_eq!(
            ha_layout_id(r#"{"type":"event","event":"#, r#","id":12}"#),
            Some(12)
        );
        for (before, after) in [
            (r#"{"type":"event","event":"#, r#","id":}"#),
            (r#"{"type":"event","event":"#, r#","id":-1}"#),
            (
                r#"{"type":"event","event":"#,
                r#","id":99999999999999999999}"#,
            ),
            (r#"{"type":"event","event":"#, r#","id":1,"x":2}"#),
            (r#"{"type": "event","event":"#, r#","id":1}"#),
        ] {
            assert_eq!(ha_layout_id(before, after), None, "{before}{after}");
        }
        // The same messages still split right, through serde.
        for text in [
            r#"{"type": "event","event":{"a":1},"id":1}"#,
            r#"{"type":"event","event":{"a":1},"id":1,"x":2}"#,
            r#"{"type":"event","event":{"a":1},"id":1.5}"#,
        ] {
            assert_eq!(by_split(text), by_serde(text), "{text}");
        }
    }

    #[test]
    fn what_is_not_an_event_or_not_a_frame() {
        let mut out = Vec::new();
        let mut sk = String::new();
        // An event-shaped object under another key, or an event without id: serde decides.
        for text in [
            r#"{"type":"event","result":{"a":1},"id":1}"#,
            r#"{"type":"result","event":{"a":1},"id":1}"#,
            r#"{"type":"event","event":{"a":1}}"#,
            r#"{"type":"event","event":{"a":1},"extra":{"b":2},"id":1}"#,
        ] {
            assert!(split(text, &mut sk, &mut out), "{text}");
            assert_eq!(out, vec![Piece::Other(0..text.len())], "{text}");
        }
        // Not frames of objects: refused, for serde to report.
        for text in [
            "",
            "[",
            "{",
            "}",
            r#"{"a":"}"#,
            r#"[{"a":1}"#,
            r#"[{"a":1}]]"#,
            r#"[{"a":1}{"b":2}]"#,
            r#"[{"a":1},,{"b":2}]"#,
            r#"x{"a":1}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}]"#,
            r#"[1,{"a":1}]"#,
        ] {
            assert!(!split(text, &mut sk, &mut out), "{text}");
            let v: Result<Vec<Map<String, Value>>, _> = serde_json::from_str(text);
            let o: Result<Map<String, Value>, _> = serde_json::from_str(text);
            assert!(v.is_err() && o.is_err(), "{text}");
        }
    }

    /// A deterministic generator of JSON values whose strings are full of braces, quotes,
    /// backslashes and multi-byte characters.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn string(&mut self) -> String {
            const PARTS: [&str; 12] = [
                "{", "}", "[", "]", "\\\"", "\\\\", "a", "é", "°C", "\\n", "\\u007b", " ",
            ];
            let len = self.below(12);
            let body: String = (0..len)
                .map(|_| PARTS[self.below(PARTS.len() as u64) as usize])
                .collect();
            format!("\"{body}\"")
        }

        fn value(&mut self, depth: u32) -> String {
            match self.below(if depth > 3 { 3 } else { 6 }) {
                0 => self.string(),
                1 => self.below(100_000).to_string(),
                2 => ["true", "null", "-1.5e3"][self.below(3) as usize].to_string(),
                3 => {
                    let n = self.below(4);
                    let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                    format!("[{}]", items.join(","))
                }
                _ => self.object(depth + 1),
            }
        }

        fn object(&mut self, depth: u32) -> String {
            let n = self.below(5);
            let fields: Vec<String> = (0..n)
                .map(|_| format!("{}:{}", self.string(), self.value(depth)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }

    #[test]
    fn random_frames_split_as_serde_reads_them() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let mut events = 0;
        for _ in 0..3000 {
            let n = 1 + g.below(6);
            let messages: Vec<String> = (0..n)
                .map(|i| match g.below(4) {
                    0 => format!(
                        r#"{{"id":{i},"type":"result","success":true,"result":{}}}"#,
                        g.value(0)
                    ),
                    1 => format!(r#"{{"id":{i},"event":{},"type":"event"}}"#, g.object(0)),
                    _ => format!(r#"{{"type":"event","event":{},"id":{i}}}"#, g.object(0)),
                })
                .collect();
            let pad = " ".repeat(g.below(70) as usize);
            let frame = if n == 1 && g.below(2) == 0 {
                format!("{pad}{}", messages[0])
            } else {
                format!("{pad}[{}]", messages.join(","))
            };
            let expected =
                by_serde(&frame).unwrap_or_else(|| panic!("generated bad JSON: {frame}"));
            events += expected.iter().filter(|m| m.1 == "event").count();
            assert_eq!(by_split(&frame), Some(expected), "{frame}");
            // Cut short anywhere, it is refused or read as serde reads it.
            let cut = g.below(frame.len() as u64) as usize;
            if frame.is_char_boundary(cut) {
                let short = &frame[..cut];
                let mut out = Vec::new();
                if split(short, &mut String::new(), &mut out) {
                    assert_eq!(by_split(short), by_serde(short), "{short}");
                }
            }
        }
        assert!(events > 3000, "{events}");
    }

    #[test]
    fn the_simulators_firehose_splits_as_serde_reads_it() {
        // Long frames of many events: blocks of 64 bytes end anywhere in them.
        let mut frame = String::from("[");
        for i in 0..200u64 {
            if i > 0 {
                frame.push(',');
            }
            let body = format!(
                r#"{{"event_type":"state_changed","data":{{"entity_id":"sensor.s{i}","old_state":null,"new_state":{{"entity_id":"sensor.s{i}","state":"{}","attributes":{{"friendly_name":"S {i} «x»","unit":"°C","list":[{i},{{"k":"v"}}]}},"last_changed":"2026-11-22T11:05:59.395949+00:00","last_updated":"2026-11-22T11:05:59.395949+00:00","context":{{"id":"01M{i}","parent_id":null,"user_id":null}}}}}},"origin":"LOCAL","time_fired":"2026-11-22T11:05:59.395949+00:00","context":{{"id":"01M{i}","parent_id":null,"user_id":null}}}}"#,
                if i % 7 == 0 {
                    "a \\\"q\\\" {".to_string()
                } else {
                    i.to_string()
                }
            );
            frame.push_str(&format!(
                r#"{{"type":"event","event":{body},"id":{}}}"#,
                i % 3
            ));
        }
        frame.push(']');
        let split = by_split(&frame).unwrap();
        assert_eq!(split.len(), 200);
        assert_eq!(Some(split), by_serde(&frame));
    }

    #[test]
    fn an_id_with_a_leading_zero_is_not_read_as_text() {
        assert_eq!(
            ha_layout_id(r#"{"type":"event","event":"#, r#","id":05}"#),
            None
        );
        assert_eq!(
            ha_layout_id(r#"{"type":"event","event":"#, r#","id":0}"#),
            Some(0)
        );
        assert_eq!(
            ha_layout_id(r#"{"type":"event","event":"#, r#","id":50}"#),
            Some(50)
        );
    }

    #[test]
    fn a_form_feed_is_not_json_whitespace() {
        let (mut skeleton, mut out) = (String::new(), Vec::new());
        assert!(!split(
            "\u{c}{\"id\":1,\"type\":\"pong\"}",
            &mut skeleton,
            &mut out
        ));
        assert!(split(
            "\n {\"id\":1,\"type\":\"pong\"}\r\n",
            &mut skeleton,
            &mut out
        ));
    }

    #[test]
    fn objects_outside_an_array_are_not_a_frame() {
        let (mut skeleton, mut out) = (String::new(), Vec::new());
        let text = r#"{"id":1,"type":"pong"},{"id":2,"type":"pong"}"#;
        assert!(!split(text, &mut skeleton, &mut out), "{out:?}");
        let text = r#"[{"id":1,"type":"pong"},{"id":2,"type":"pong"}]"#;
        assert!(split(text, &mut skeleton, &mut out));
        assert_eq!(out.len(), 2);
    }
}

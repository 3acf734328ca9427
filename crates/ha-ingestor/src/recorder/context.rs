//! HA's context ids as the recorder stores them (16-byte bins) back to the text live events carry.
//!
//! A context id is a ULID (26 Crockford base32 characters) since HA 2022.x; older rows held a
//! UUID4 as 32 hex digits, which HA's migration packed into the same 16 bytes. HA itself reads
//! every bin back as a ULID; the live event of such an old row carried the hex form. A UUID4 is
//! told apart by its version and variant bits *and* a ULID time far from the row's own time (a
//! context is made when its chain starts, so a real ULID's time lies shortly before the row's).
//! User ids were always UUID hex.

/// How far before its row a ULID context may have been made and still count as a ULID: scripts
/// and automations carry their context through delays. A UUID4's first 48 bits are random, so one
/// lands in this window about once in 10^5 (and must also pass the UUID bit test to be misread).
const ULID_BEFORE_ROW_MS: i64 = 366 * 86_400_000;
/// Clocks are not perfect: a context a little after its row still counts as a ULID.
const ULID_AFTER_ROW_MS: i64 = 86_400_000;

/// A context id or parent id (`context_id_bin`, `context_parent_id_bin`) as live events write it;
/// `row_us` is the row's time (`last_updated`, `time_fired`). `None` for a missing or malformed
/// bin, as HA reads it.
pub fn context_id(bin: Option<&[u8]>, row_us: i64) -> Option<String> {
    let bytes: [u8; 16] = bin?.try_into().ok()?;
    if looks_like_uuid4(&bytes, row_us) {
        return Some(hex(&bytes));
    }
    Some(ulid::Ulid::from_bytes(bytes).to_string())
}

/// A user id (`context_user_id_bin`): 32 lowercase hex digits, as HA's user ids are.
pub fn user_id(bin: Option<&[u8]>) -> Option<String> {
    let bytes: [u8; 16] = bin?.try_into().ok()?;
    Some(hex(&bytes))
}

fn looks_like_uuid4(bytes: &[u8; 16], row_us: i64) -> bool {
    let version_4 = bytes[6] >> 4 == 4 && bytes[8] & 0xC0 == 0x80;
    if !version_4 {
        return false;
    }
    let ulid_ms = bytes[..6]
        .iter()
        .fold(0i64, |ms, b| (ms << 8) | i64::from(*b));
    let row_ms = row_us.div_euclid(1000);
    !(row_ms - ULID_BEFORE_ROW_MS..=row_ms + ULID_AFTER_ROW_MS).contains(&ulid_ms)
}

fn hex(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ULID context reads back as its own text.
    #[test]
    fn ulid_bins_read_back_as_the_live_ulid() {
        let live = "01KBSXQ0N4ZJ3M8Y2TW5QG7V9D";
        let ulid: ulid::Ulid = live.parse().unwrap();
        let bin = ulid.to_bytes();
        let row_us = i64::try_from(ulid.timestamp_ms()).unwrap() * 1000 + 5;
        assert_eq!(context_id(Some(&bin), row_us).as_deref(), Some(live));
        assert_eq!(context_id(None, row_us), None);
        assert_eq!(context_id(Some(&bin[..15]), row_us), None);
    }

    #[test]
    fn old_uuid4_contexts_read_back_as_hex() {
        // uuid.uuid4().hex of a context from before HA used ULIDs, packed by HA's migration.
        let live = "9f1c3b2e8a7d4c1fb3e2a1d0c9b8a7f6";
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&live[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let row_us = 1_650_000_000_000_000; // 2022-04
        assert_eq!(context_id(Some(&bytes), row_us).as_deref(), Some(live));
        assert_eq!(user_id(Some(&bytes)).as_deref(), Some(live));
        // A real ULID with UUID-like bits but a time just before its row stays a ULID.
        let mut ulid_bytes = ulid::Ulid::from_parts(1_650_000_000_000 - 5_000, 0).to_bytes();
        ulid_bytes[6] = 0x4a;
        ulid_bytes[8] = 0x9c;
        let text = context_id(Some(&ulid_bytes), row_us).unwrap();
        assert_eq!(text.len(), 26, "{text}");
        assert_eq!(
            text,
            ulid::Ulid::from_bytes(ulid_bytes).to_string(),
            "read as a ULID"
        );
    }
}

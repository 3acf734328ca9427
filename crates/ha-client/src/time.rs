//! HA's float timestamps as the microseconds of its ISO strings.
//!
//! HA sends the same instant two ways. Live events and REST carry ISO strings with microseconds;
//! history, `history/stream`, statistics, `subscribe_entities` and the recorder's database carry
//! float epoch seconds (the unrounded `time.time()` the ISO string was made from). HA makes the ISO
//! string with Python's `datetime.fromtimestamp`, which splits the float with `modf` and rounds the
//! fraction's microseconds half to even. `(seconds * 1e6).round()` does not: the product has only
//! a quarter-microsecond of precision at today's dates and rounds ties away from zero, and it
//! misses by one microsecond for about one float in six. A row read back from history then differs
//! from the live row of the same change, and a store keyed on the time keeps both.
//!
//! [`micros_from_iso`] reads the ISO strings; both give the same microsecond for the same change.

/// Microseconds since the Unix epoch of HA's float epoch `seconds`, rounded as Python's
/// `datetime.fromtimestamp` rounds them, so the result is the microsecond of the ISO string HA
/// shows for the same instant.
///
/// ```
/// use ha_client::time::micros_from_seconds;
/// // Seen on a real HA: the live event said 2026-11-28T13:22:46.522226+00:00.
/// assert_eq!(micros_from_seconds(1795872166.5222263), 1_795_872_166_522_226);
/// ```
///
/// Not finite (never in valid JSON): 0. Out of `i64` range: saturates.
pub fn micros_from_seconds(seconds: f64) -> i64 {
    // CPython's _PyTime_DoubleToDenominator with _PyTime_ROUND_HALF_EVEN: `fract` is exact (the
    // integer part's bits are simply dropped), and scaling the fraction alone keeps its precision.
    let whole = seconds.trunc();
    let micros = (seconds.fract() * 1e6).round_ties_even();
    (whole as i64)
        .saturating_mul(1_000_000)
        .saturating_add(micros as i64)
}

/// HA's float seconds as a JSON field, parsed from the number's text by Rust's correctly rounded
/// parser. serde_json's default float parsing may be one unit in the last place off (a quarter
/// of a microsecond at today's dates), enough to round a time to another microsecond; its
/// `float_roundtrip` feature fixes that for every float at twice the cost, this only where the
/// microseconds matter. Needs a deserializer that lends its input (`serde_json::from_str`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds(pub f64);

impl<'de> serde::Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(d)?;
        raw.get()
            .parse()
            .map(Seconds)
            .map_err(|_| serde::de::Error::custom(format!("not epoch seconds: {}", raw.get())))
    }
}

/// Microseconds since the Unix epoch of an ISO 8601 time with an offset, as HA writes them in live
/// events and REST answers (`2026-11-22T11:05:59.395949+00:00`). `None` if it is not such a time.
///
/// ```
/// use ha_client::time::micros_from_iso;
/// assert_eq!(micros_from_iso("2026-11-28T13:22:46.522226+00:00"), Some(1_795_872_166_522_226));
/// assert_eq!(micros_from_iso("yesterday"), None);
/// ```
pub fn micros_from_iso(s: &str) -> Option<i64> {
    if let Some(us) = micros_from_utc_isoformat(s) {
        return Some(us);
    }
    let ts: jiff::Timestamp = s.parse().ok()?;
    Some(ts.as_microsecond())
}

/// The shape HA always sends, Python's `isoformat()` in UTC (`YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`),
/// without the general parser (three times per `state_changed` event: this is on the hot path).
/// `None` for anything else, which the general parser then decides.
fn micros_from_utc_isoformat(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if !(b.len() == 25 || (b.len() == 32 && b[19] == b'.'))
        || !s.ends_with("+00:00")
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |v, c| {
            c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let frac = if b.len() == 32 { num(20, 26)? } else { 0 };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    // Years at the ends of the general parser's range are left to it.
    if !(1..=9998).contains(&y) || d < 1 || d > month_days || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000 + frac)
}

#[cfg(test)]
mod tests {
    use super::{micros_from_iso, micros_from_seconds, micros_from_utc_isoformat};

    #[test]
    fn seconds_parse_exactly_from_the_number_text() {
        #[derive(serde::Deserialize)]
        struct S {
            lu: Option<super::Seconds>,
        }
        // Parsed by the std parser: the very double Python wrote with repr().
        let s: S = serde_json::from_str(r#"{"lu":1796591204.8458867}"#).unwrap();
        assert_eq!(s.lu.unwrap().0.to_bits(), 1796591204.8458867f64.to_bits());
        assert!(serde_json::from_str::<S>(r#"{"lu":"x"}"#).is_err());
        assert!(serde_json::from_str::<S>(r#"{}"#).unwrap().lu.is_none());
    }

    #[test]
    fn ties_round_to_even_and_carry_into_the_second() {
        // Exact ties (the fraction times 1e6 is exactly n.5), as Python rounds them.
        assert_eq!(micros_from_seconds(2.5e-6), 2);
        assert_eq!(micros_from_seconds(3.5e-6), 4);
        assert_eq!(micros_from_seconds(1.25e-5), 12);
        assert_eq!(micros_from_seconds(1.9999996), 2_000_000); // carries into the next second
        assert_eq!(micros_from_seconds(-1.5), -1_500_000);
        assert_eq!(micros_from_seconds(0.0), 0);
        assert_eq!(micros_from_seconds(f64::NAN), 0);
        assert_eq!(micros_from_seconds(1e300), i64::MAX);
    }

    #[test]
    fn iso_times() {
        assert_eq!(
            micros_from_iso("1970-01-01T00:00:01.000002+00:00"),
            Some(1_000_002)
        );
        assert_eq!(
            micros_from_iso("2026-11-22T11:05:59.395949+00:00"),
            Some(1_795_345_559_395_949)
        );
        assert_eq!(
            micros_from_iso("2026-11-22T12:05:59.395949+01:00"),
            Some(1_795_345_559_395_949)
        );
        assert_eq!(micros_from_iso("yesterday"), None);
    }

    #[test]
    fn fast_iso_path_agrees_with_the_general_parser() {
        let general = |s: &str| {
            s.parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_microsecond())
        };
        let mut checked = 0;
        for y in [1, 1969, 1970, 2000, 2024, 2026, 2100, 9999] {
            for mo in 0..=13 {
                for d in [0, 1, 15, 28, 29, 30, 31, 32] {
                    for (h, mi, sec) in
                        [(0, 0, 0), (23, 59, 59), (12, 5, 7), (24, 0, 0), (1, 60, 0)]
                    {
                        for frac in ["", ".000000", ".395949", ".999999"] {
                            let s = format!(
                                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}{frac}+00:00"
                            );
                            assert_eq!(micros_from_iso(&s), general(&s), "{s}");
                            checked += usize::from(micros_from_utc_isoformat(&s).is_some());
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "the fast path was used ({checked})");
        // Other shapes go to the general parser.
        for s in [
            "2026-11-22T11:05:59.3959+00:00",
            "2026-11-22T11:05:59Z",
            "2026-11-22 11:05:59+00:00",
            "2026-11-22T11:05:59.395949-00:00",
            "+2026-11-22T11:05:59+00:00",
        ] {
            assert_eq!(micros_from_utc_isoformat(s), None, "{s}");
            assert_eq!(micros_from_iso(s), general(s), "{s}");
        }
    }
}

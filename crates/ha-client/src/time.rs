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

#[cfg(test)]
mod tests {
    use super::micros_from_seconds;

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
}

//! Timestamps as HA writes them: microseconds since the Unix epoch, shown as Python's
//! `datetime.isoformat()` in UTC (`2024-03-05T10:11:12.345678+00:00`, no fraction when it is zero)
//! or as float epoch seconds in the compressed formats.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Float epoch seconds as HA has them: the unrounded `time.time()` its ISO string of `us` was made
/// from. Such a float lies anywhere within half a microsecond of `us`, and a client that rounds
/// `seconds * 1e6` gets about one in six wrong by a microsecond; the nearest float to `us` would
/// hide that. Of the floats Python's `datetime.fromtimestamp` turns into `us`, one is picked by a
/// hash of `us`, so a state shows the same float in every answer.
pub fn epoch_f64(us: i64) -> f64 {
    let nearest = us as f64 / 1e6;
    // Up to two floats either side of the nearest (a float is about 0.24 µs wide at today's dates):
    // start at one picked by the hash and take the first that shows as `us`; the nearest always does.
    let bits = nearest.to_bits() as i64;
    let start = ((us as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as i64 % 5 - 2;
    (0..5)
        .map(|i| f64::from_bits((bits + (start + i + 2) % 5 - 2) as u64))
        .find(|f| f.is_finite() && (*f >= 0.0) == (us >= 0) && python_us(*f) == us)
        .unwrap_or(nearest)
}

/// CPython's `datetime.fromtimestamp` rounding: whole seconds, then the fraction's microseconds
/// half to even. The simulator's own model of HA's side (the client has its own, tested against it).
fn python_us(seconds: f64) -> i64 {
    seconds.trunc() as i64 * 1_000_000 + (seconds.fract() * 1e6).round_ties_even() as i64
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn push_2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn second_prefix(secs: i64) -> [u8; 19] {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let mut v = Vec::with_capacity(19);
    let y = y.clamp(0, 9999) as u32;
    push_2(&mut v, y / 100);
    push_2(&mut v, y % 100);
    v.push(b'-');
    push_2(&mut v, mo);
    v.push(b'-');
    push_2(&mut v, d);
    v.push(b'T');
    push_2(&mut v, sod / 3600);
    v.push(b':');
    push_2(&mut v, sod / 60 % 60);
    v.push(b':');
    push_2(&mut v, sod % 60);
    let mut a = [0u8; 19];
    a.copy_from_slice(&v);
    a
}

thread_local! {
    static PREFIX: std::cell::Cell<(i64, [u8; 19])> = const { std::cell::Cell::new((i64::MIN, [0; 19])) };
}

/// Appends the ISO form of `us` to `out` (the date part is cached per second and thread).
pub fn write_iso(out: &mut String, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000) as u32;
    let prefix = PREFIX.with(|c| {
        let (s, p) = c.get();
        if s == secs {
            p
        } else {
            let p = second_prefix(secs);
            c.set((secs, p));
            p
        }
    });
    let mut buf = [0u8; 32];
    buf[..19].copy_from_slice(&prefix);
    let mut n = 19;
    if frac != 0 {
        buf[n] = b'.';
        let mut f = frac;
        for i in (0..6).rev() {
            buf[n + 1 + i] = b'0' + (f % 10) as u8;
            f /= 10;
        }
        n += 7;
    }
    buf[n..n + 6].copy_from_slice(b"+00:00");
    n += 6;
    // Only ASCII digits and punctuation were written.
    out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or(""));
}

/// The ISO form of `us`.
pub fn iso(us: i64) -> String {
    let mut s = String::with_capacity(32);
    write_iso(&mut s, us);
    s
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an ISO 8601 date-time like HA's `dt_util.parse_datetime` (naive times are UTC, the time
/// zone of the simulated instance). Returns microseconds since the epoch.
pub fn parse_iso(input: &str) -> Option<i64> {
    let s = input.trim();
    if s.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let mut dp = date.split('-');
    let y = num(dp.next()?)? as i64;
    let mo = num(dp.next()?)?;
    let d = num(dp.next()?)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut us = days_from_civil(y, mo, d) * 86_400_000_000;
    if rest.is_empty() {
        return Some(us);
    }
    let rest = rest.strip_prefix(['T', ' '])?;
    // Split off the zone.
    let (time, offset_s) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0i64)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = &z[1..];
        let (hh, mm) = if let Some((h, m)) = z.split_once(':') {
            (num(h)?, num(m)?)
        } else if z.len() == 4 {
            (num(&z[..2])?, num(&z[2..])?)
        } else {
            (num(z)?, 0)
        };
        (t, sign * i64::from(hh * 3600 + mm * 60))
    } else {
        (rest, 0)
    };
    let (hms, frac) = match time.split_once(['.', ',']) {
        Some((a, b)) => (a, Some(b)),
        None => (time, None),
    };
    let mut tp = hms.split(':');
    let h = num(tp.next()?)?;
    let mi = num(tp.next()?)?;
    let sec = match tp.next() {
        Some(x) => num(x)?,
        None => 0,
    };
    if tp.next().is_some() || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    us += i64::from(h * 3600 + mi * 60 + sec) * 1_000_000;
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut digits: String = f.chars().take(6).collect();
        while digits.len() < 6 {
            digits.push('0');
        }
        us += i64::from(num(&digits)?);
    }
    Some(us - offset_s * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let us = 1_795_345_559_428_451;
        assert_eq!(iso(us), "2026-11-22T11:05:59.428451+00:00");
        assert_eq!(parse_iso(&iso(us)), Some(us));
        assert_eq!(iso(1_700_000_000_000_000), "2023-11-14T22:13:20+00:00");
        assert_eq!(parse_iso("2026-11-22T11:05:59.428451Z"), Some(us));
        assert_eq!(parse_iso("2026-11-22T12:05:59.428451+01:00"), Some(us));
        assert_eq!(parse_iso("2026-11-22 11:05:59.428451"), Some(us));
        assert_eq!(parse_iso("yesterday"), None);
        assert_eq!(parse_iso("2026-11-22T11:05:59.428451 00:00"), None);
        assert_eq!(epoch_f64(us), 1795345559.428451);
    }
}

#[cfg(test)]
mod float_tests {
    use super::{epoch_f64, python_us};

    #[test]
    fn floats_carry_sub_microsecond_digits_as_has_do() {
        let base = 1_795_000_000_000_000i64;
        let (mut naive_misses, n) = (0, 20_000);
        for i in 0..n {
            let us = base + i * 7_919;
            let f = epoch_f64(us);
            assert_eq!(python_us(f), us, "{f} does not show as {us}");
            if (f * 1e6).round() as i64 != us {
                naive_misses += 1;
            }
        }
        // HA's floats: about one in six is off by a microsecond when rounded naively.
        assert!(
            naive_misses > n / 20,
            "only {naive_misses} of {n} floats catch naive rounding"
        );
    }
}

//! Python's semantics, where HA's points depend on them: attribute values as `json.loads` gives
//! them to HA ([`Py`], parsed in the JSON's order), `float()` of a string ([`py_float`]), `str()`
//! and `repr()` of values ([`py_str`], [`write_py_repr`]), `repr()` of a float
//! ([`write_py_float`]), and the regexes of HA's numeric companion fields ([`has_digit_tail`],
//! [`digits_value`]).
//!
//! Why emulate rather than approximate: the `ha` schema promises HA's own points byte for byte, and
//! a float rendered `21` instead of `21.0`, or a list rendered as JSON instead of Python, is a
//! different field value (or type) in InfluxDB.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// An attribute value as HA holds it after `json.loads`: the JSON types, with ints kept apart from
/// floats (Python's `str(21)` is `21`, `str(21.0)` is `21.0`) and objects kept in their order
/// (Python's `repr` of a dict follows it). Strings borrow from the row when they have no escapes.
#[derive(Debug, PartialEq)]
pub(crate) enum Py<'a> {
    None,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    List(Vec<Py<'a>>),
    Dict(Vec<(Cow<'a, str>, Py<'a>)>),
}

impl Py<'_> {
    /// The value of a JSON number or bool.
    pub(super) fn number(&self) -> Option<f64> {
        match *self {
            Py::Bool(b) => Some(f64::from(u8::from(b))),
            Py::Int(i) => Some(i as f64),
            Py::UInt(u) => Some(u as f64),
            Py::Float(f) => Some(f),
            _ => None,
        }
    }

    /// An exact i64: integers, integral floats, integer strings.
    pub(super) fn integer(&self) -> Option<i64> {
        match self {
            Py::Int(i) => Some(*i),
            Py::UInt(u) => i64::try_from(*u).ok(),
            // The range check is exclusive at the top: 2^63 is not an i64.
            Py::Float(f) if f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63) => {
                Some(*f as i64)
            }
            Py::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// The row's attribute object, in order. Unparsable JSON counts as no attributes (the journal
/// only holds what HA sent, so this does not happen in practice).
pub(super) fn parse_attributes(json: &str) -> Vec<(Cow<'_, str>, Py<'_>)> {
    if json == "{}" {
        return Vec::new();
    }
    match serde_json::from_str(json) {
        Ok(Py::Dict(entries)) => entries,
        _ => Vec::new(),
    }
}

impl<'de> Deserialize<'de> for Py<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PyVisitor)
    }
}

struct PyVisitor;

impl<'de> Visitor<'de> for PyVisitor {
    type Value = Py<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Py<'de>, E> {
        Ok(Py::None)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Py<'de>, E> {
        Ok(Py::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Py<'de>, E> {
        Ok(Py::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Py<'de>, E> {
        Ok(Py::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Py<'de>, E> {
        Ok(Py::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Py<'de>, E> {
        Ok(Py::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Py<'de>, E> {
        Ok(Py::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Py<'de>, E> {
        Ok(Py::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Py<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Py::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Py<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(ObjKey(k)) = map.next_key()? {
            entries.push((k, map.next_value()?));
        }
        Ok(Py::Dict(entries))
    }
}

/// An object key, borrowed when it has no escapes.
struct ObjKey<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for ObjKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(PyVisitor)? {
            Py::Str(s) => Ok(ObjKey(s)),
            _ => Err(de::Error::custom("object key is not a string")),
        }
    }
}

/// Python's `float(value)` for an attribute: `None` where Python raises (None, lists, dicts,
/// strings that do not parse).
pub(super) fn py_float_of(v: &Py<'_>) -> Option<f64> {
    match v {
        Py::Str(s) => py_float(s),
        v => v.number(),
    }
}

/// Python's `float(str)`: surrounding whitespace (Unicode's; `char::is_whitespace` is the same
/// set), `_` between digits, any Unicode decimal digit, `inf`/`infinity`/`nan` in any case, and
/// overflow to ±inf. Rust's own grammar matches Python's for the rest (checked in the tests).
pub(crate) fn py_float(s: &str) -> Option<f64> {
    let t = s.trim_matches(char::is_whitespace);
    if t.is_ascii() && !t.contains('_') {
        return t.parse().ok();
    }
    let mut ascii = String::with_capacity(t.len());
    let mut prev = '\0';
    for c in t.chars() {
        let c = match c {
            c if c.is_ascii() => c,
            c => char::from(b'0' + decimal_digit(c)?),
        };
        if c == '_' {
            if !prev.is_ascii_digit() {
                return None;
            }
        } else {
            if prev == '_' && !c.is_ascii_digit() {
                return None;
            }
            ascii.push(c);
        }
        prev = c;
    }
    if prev == '_' {
        return None;
    }
    ascii.parse().ok()
}

/// HA's `RE_DIGIT_TAIL` (`^[^.]*\d+\.?\d+[^.]*$`, `\d` being any Unicode decimal digit): with no
/// dot, two adjacent digits anywhere; with one dot, digits on both sides of it; never with two.
pub(crate) fn has_digit_tail(s: &str) -> bool {
    let mut dots = s.match_indices('.').map(|(i, _)| i);
    match (dots.next(), dots.next()) {
        (_, Some(_)) => false,
        (Some(dot), None) => {
            let before = s[..dot].chars().next_back();
            let after = s[dot + 1..].chars().next();
            before.is_some_and(is_digit) && after.is_some_and(is_digit)
        }
        (None, None) => {
            let mut prev = false;
            s.chars().any(|c| {
                let d = is_digit(c);
                let pair = prev && d;
                prev = d;
                pair
            })
        }
    }
}

/// HA's `float(RE_DECIMAL.sub("", text))`: the digits and the dot, everything else removed.
pub(crate) fn digits_value(s: &str) -> f64 {
    let kept: String = s
        .chars()
        .filter_map(|c| match c {
            '.' => Some('.'),
            c => decimal_digit(c).map(|d| char::from(b'0' + d)),
        })
        .collect();
    kept.parse().unwrap_or(f64::NAN) // cannot fail after `has_digit_tail`
}

fn is_digit(c: char) -> bool {
    decimal_digit(c).is_some()
}

/// The value of a Unicode decimal digit (category Nd). Nd digits come in runs of ten from a zero.
fn decimal_digit(c: char) -> Option<u8> {
    if c.is_ascii() {
        return c.is_ascii_digit().then(|| c as u8 - b'0');
    }
    let c = c as u32;
    let i = ND_ZEROS.partition_point(|&z| z <= c).checked_sub(1)?;
    let d = c - ND_ZEROS[i];
    (d < 10).then_some(d as u8)
}

/// First code point of each run of Unicode decimal digits (Unicode 15.0, Python 3.12's).
const ND_ZEROS: [u32; 68] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950,
    0x1FBF0,
];

/// Python's `str(value)`: strings as they are, everything else as `repr`.
pub(crate) fn py_str<'b>(v: &'b Py<'_>) -> Cow<'b, str> {
    match v {
        Py::Str(s) => Cow::Borrowed(s),
        Py::None => Cow::Borrowed("None"),
        v => {
            let mut s = String::new();
            let _ = write_py_repr(&mut s, v);
            Cow::Owned(s)
        }
    }
}

pub(super) fn write_py_str(w: &mut impl fmt::Write, v: &Py<'_>) -> fmt::Result {
    match v {
        Py::Str(s) => w.write_str(s),
        v => write_py_repr(w, v),
    }
}

/// Python's `repr`: `['a', 1, 2.5, True, None, {'k': 'v'}]`.
pub(crate) fn write_py_repr(w: &mut impl fmt::Write, v: &Py<'_>) -> fmt::Result {
    match v {
        Py::None => w.write_str("None"),
        Py::Bool(b) => w.write_str(if *b { "True" } else { "False" }),
        Py::Int(i) => write!(w, "{i}"),
        Py::UInt(u) => write!(w, "{u}"),
        Py::Float(f) => write_py_float(w, *f),
        Py::Str(s) => write_py_str_repr(w, s),
        Py::List(items) => {
            w.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                write_py_repr(w, item)?;
            }
            w.write_char(']')
        }
        Py::Dict(entries) => {
            w.write_char('{')?;
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                write_py_str_repr(w, k)?;
                w.write_str(": ")?;
                write_py_repr(w, item)?;
            }
            w.write_char('}')
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; `\\`, the quote,
/// `\t`, `\n`, `\r` escaped; other non-printable chars as `\xhh`, `\uhhhh` or `\Uhhhhhhhh`.
fn write_py_str_repr(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    w.write_char(quote)?;
    for c in s.chars() {
        match c {
            '\\' => w.write_str("\\\\")?,
            '\t' => w.write_str("\\t")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            c if c == quote => {
                w.write_char('\\')?;
                w.write_char(c)?;
            }
            c if is_printable(c) => w.write_char(c)?,
            c if (c as u32) <= 0xFF => write!(w, "\\x{:02x}", c as u32)?,
            c if (c as u32) <= 0xFFFF => write!(w, "\\u{:04x}", c as u32)?,
            c => write!(w, "\\U{:08x}", c as u32)?,
        }
    }
    w.write_char(quote)
}

/// Python's `str.isprintable` for one char, except that unassigned code points (category Cn,
/// which changes with every Unicode version) count as printable.
fn is_printable(c: char) -> bool {
    let c = c as u32;
    (0x20..0x7F).contains(&c)
        || !NON_PRINTABLE
            .chunks_exact(2)
            .any(|r| (r[0]..=r[1]).contains(&c))
}

/// Inclusive ranges (first, last, first, last, ...) of the assigned code points Python does not
/// print in `repr`: Cc, Cf, Co, Zl, Zp, and Zs but the space (Unicode 15.0).
const NON_PRINTABLE: [u32; 56] = [
    0x0, 0x1F, 0x7F, 0xA0, 0xAD, 0xAD, 0x600, 0x605, 0x61C, 0x61C, 0x6DD, 0x6DD, 0x70F, 0x70F,
    0x890, 0x891, 0x8E2, 0x8E2, 0x1680, 0x1680, 0x180E, 0x180E, 0x2000, 0x200F, 0x2028, 0x202F,
    0x205F, 0x2064, 0x2066, 0x206F, 0x3000, 0x3000, 0xE000, 0xF8FF, 0xFEFF, 0xFEFF, 0xFFF9, 0xFFFB,
    0x110BD, 0x110BD, 0x110CD, 0x110CD, 0x13430, 0x1343F, 0x1BCA0, 0x1BCA3, 0x1D173, 0x1D17A,
    0xE0001, 0xE0001, 0xE0020, 0xE007F, 0xF0000, 0xFFFFD, 0x100000, 0x10FFFD,
];

/// Python's `repr(float)`: the shortest digits that round-trip (Rust's `{:e}` gives the same
/// digits), positional from 1e-4 up to 1e16 with at least one decimal (`21.0`), otherwise
/// `1e-07`, `1.5e+16`; `nan`, `inf`, `-inf`. Formats on the stack.
pub(crate) fn write_py_float(w: &mut impl fmt::Write, f: f64) -> fmt::Result {
    if f.is_nan() {
        return w.write_str("nan");
    }
    if f.is_infinite() {
        return w.write_str(if f > 0.0 { "inf" } else { "-inf" });
    }
    // `{:e}` of a finite f64 is at most 24 bytes: "2.2250738585072014e-308".
    let mut buf = [0u8; 32];
    let mut rest = &mut buf[..];
    std::io::Write::write_fmt(&mut rest, format_args!("{:e}", f.abs())).map_err(|_| fmt::Error)?;
    let len = 32 - rest.len();
    let text = std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?;
    let (mantissa, exp) = text.split_once('e').ok_or(fmt::Error)?;
    let exp: i32 = exp.parse().map_err(|_| fmt::Error)?;
    // The significant digits: "d" or "d.ddd" without the dot.
    let (first, more) = (&mantissa[..1], mantissa.get(2..).unwrap_or(""));
    let n = 1 + more.len() as i32;
    // Python's `decpt`: the value is 0.DIGITS × 10^decpt.
    let decpt = exp + 1;
    if f.is_sign_negative() {
        w.write_char('-')?;
    }
    if !(-3..=16).contains(&decpt) {
        w.write_str(first)?;
        if !more.is_empty() {
            w.write_char('.')?;
            w.write_str(more)?;
        }
        let sign = if exp < 0 { '-' } else { '+' };
        return write!(w, "e{sign}{:02}", exp.unsigned_abs());
    }
    if decpt <= 0 {
        w.write_str("0.")?;
        (0..-decpt).try_for_each(|_| w.write_char('0'))?;
        w.write_str(first)?;
        w.write_str(more)
    } else if decpt >= n {
        w.write_str(first)?;
        w.write_str(more)?;
        (0..decpt - n).try_for_each(|_| w.write_char('0'))?;
        w.write_str(".0")
    } else {
        let (int, frac) = more.split_at(decpt as usize - 1);
        w.write_str(first)?;
        w.write_str(int)?;
        w.write_char('.')?;
        w.write_str(frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_grammar() {
        // Each expectation is what Python 3.11's `float()` gave (None: ValueError).
        let cases: &[(&str, Option<f64>)] = &[
            (" 5 ", Some(5.0)),
            ("\u{2003}5\u{3000}", Some(5.0)),
            ("\u{a0}5", Some(5.0)),
            ("\u{85}5", Some(5.0)),
            ("\t\n42\r\u{b}\u{c}", Some(42.0)),
            ("\u{1c}5", None),
            ("4 2", None),
            ("1_000", Some(1000.0)),
            ("_1", None),
            ("1_", None),
            ("1__0", None),
            ("1_.5", None),
            ("1._5", None),
            ("1e1_0", Some(1e10)),
            ("1e_1", None),
            ("1_e5", None),
            ("inf_", None),
            ("+7", Some(7.0)),
            ("١٢٣", Some(123.0)),
            ("１２", Some(12.0)),
            ("١_٢", Some(12.0)),
            ("Infinity", Some(f64::INFINITY)),
            ("-iNF", Some(f64::NEG_INFINITY)),
            ("infinit", None),
            ("1.", Some(1.0)),
            (".5", Some(0.5)),
            (".", None),
            ("1.e5", Some(1e5)),
            ("1e", None),
            ("0x10", None),
            ("1e400", Some(f64::INFINITY)),
            ("1e-400", Some(0.0)),
            ("", None),
            ("ON", None),
        ];
        for (text, expected) in cases {
            assert_eq!(py_float(text), *expected, "{text:?}");
        }
        assert!(py_float("nan").unwrap().is_nan());
        assert!(py_float("-NaN").unwrap().is_nan());
        assert!(py_float("+nan").unwrap().is_nan());
        assert!(py_float("-0").unwrap().is_sign_negative());
    }

    #[test]
    fn python_float_repr() {
        // Bit patterns and Python 3.11's `repr` of them.
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0.0"),
            (0x8000000000000000, "-0.0"),
            (0x3ff0000000000000, "1.0"),
            (0x4035000000000000, "21.0"),
            (0x3fb999999999999a, "0.1"),
            (0x3fd3333333333334, "0.30000000000000004"),
            (0x4341c37937e08000, "1e+16"),
            (0x430c6bf526340000, "1000000000000000.0"),
            (0x437b69b4ba630f35, "1.2345678901234568e+17"),
            (0x4341c37937e07fff, "9999999999999998.0"),
            (0x3f1a36e2eb1c432d, "0.0001"),
            (0x3ee4f8b588e368f1, "1e-05"),
            (0x3f202e4b6ce5dc68, "0.00012345"),
            (0x3e8421f5f40d8376, "1.5e-07"),
            (0x0000000000000001, "5e-324"),
            (0x0010000000000000, "2.2250738585072014e-308"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0x4480f0cf064dd592, "1e+22"),
            (0x54b249ad2594c37d, "1e+100"),
            (0xab2bff2ee48e0530, "-1e-100"),
            (0x40c81cd6c8b43958, "12345.678"),
            (0x4340000000000000, "9007199254740992.0"),
            (0x4340000000000001, "9007199254740994.0"),
            (0x3fd5555555555555, "0.3333333333333333"),
            (0x3fe5555555555555, "0.6666666666666666"),
            (0x4059000000000000, "100.0"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3df596be5af73d85, "3.14159e-10"),
            (0x4011666666666666, "4.35"),
            (0x3fdccccccccccccd, "0.45"),
            (0xf2a74de452e6b438, "-1.989032661366619e+244"),
            (0x6513270e269e0d37, "7.761117632285041e+178"),
            (0x0c5c7fd0a6a3a450, "3.980498358697587e-249"),
            (0xd23f0824128b2f33, "-1.5432835417340557e+88"),
            (0x1818e811892f902b, "1.3647584518757569e-192"),
            (0x9531985d5d9dc9f8, "-1.3701135617873088e-206"),
            (0xe8e25d940ed90475, "-1.7160537630466207e+197"),
            (0x36f675cc81e74ef5, "6.294675241195386e-44"),
            (0x1600a35a099950d8, "1.0613447212142254e-202"),
            (0x6b0d549b6f03675a, "4.708325160387546e+207"),
            (0x3d9c172411e20b8f, "6.387016158513563e-12"),
            (0x8d116ece1738f7d9, "-9.973130378568733e-246"),
            (0xc062dec59ae71db8, "-150.96162171497213"),
            (0x40846da24d7ae84a, "653.7042493440761"),
            (0xc087832b2ac919c1, "-752.3960777007088"),
            (0xc0814c2d3372bf8a, "-553.522070785971"),
            (0x406fdbb9ea77f9a0, "254.86644481117855"),
            (0x408bfb57d40bb95c, "895.4178849140112"),
            (0x40634696b5cc54d0, "154.20589723499734"),
            (0xc069d4731a734918, "-206.63905069843963"),
        ];
        for (bits, expected) in cases {
            let mut s = String::new();
            write_py_float(&mut s, f64::from_bits(*bits)).unwrap();
            assert_eq!(s, *expected, "{bits:#x}");
        }
        for (f, expected) in [
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            let mut s = String::new();
            write_py_float(&mut s, f).unwrap();
            assert_eq!(s, expected);
        }
    }

    #[test]
    fn digit_tail_regex() {
        // `RE_DIGIT_TAIL.match(s)` and `float(RE_DECIMAL.sub("", s))` in Python 3.11.
        let cases: &[(&str, Option<f64>)] = &[
            ("12 km", Some(12.0)),
            ("5 min", None),
            ("1.5", Some(1.5)),
            ("v1.20", Some(1.2)),
            ("1.2.3", None),
            ("a1.b22", None),
            ("1.", None),
            ("12.", None),
            ("..12", None),
            (".12", None),
            ("x.12", None),
            ("12\n", Some(12.0)),
            ("١٢", Some(12.0)),
            ("١.٢", Some(1.2)),
            ("1a2", None),
            ("", None),
            ("7", None),
            ("PM2.5", Some(2.5)),
            ("-5 °C", None),
            ("1e3 x", None),
            ("3.5.", None),
            ("ab12cd34", Some(1234.0)),
            ("9.9x", Some(9.9)),
            ("2024-01-01", Some(20240101.0)),
            ("[255, 200, 100]", Some(255200100.0)),
            (&*"1".repeat(400), Some(f64::INFINITY)),
        ];
        for (text, expected) in cases {
            let got = has_digit_tail(text).then(|| digits_value(text));
            assert_eq!(got, *expected, "{text:?}");
        }
    }

    #[test]
    fn attributes_keep_order_and_unescape() {
        let attrs = parse_attributes(
            r#"{"z":1,"a\"b":"x\u00e9","m":{"y":[true,null],"b":-2.5},"n":18446744073709551615}"#,
        );
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["z", "a\"b", "m", "n"]);
        assert_eq!(attrs[1].1, Py::Str(Cow::Borrowed("xé")));
        assert!(
            matches!(attrs[0].0, Cow::Borrowed(_)),
            "plain keys are borrowed"
        );
        let mut s = String::new();
        write_py_repr(&mut s, &attrs[2].1).unwrap();
        assert_eq!(s, "{'y': [True, None], 'b': -2.5}");
        assert_eq!(attrs[3].1, Py::UInt(u64::MAX));
        assert!(parse_attributes("[1,2]").is_empty());
        assert!(parse_attributes("{}").is_empty());
    }
}

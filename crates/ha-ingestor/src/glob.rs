//! Entity id globs, read exactly as Home Assistant reads them.
//!
//! Why one module: HA has two places that take globs, and both compile them with Python's
//! `re.compile(fnmatch.translate(pattern))` and test with `.match(entity_id)`: the entity filter
//! (`helpers/entityfilter.py`, the `entity_globs` of `[filter]`) and the influxdb integration's
//! `component_config_glob` (`helpers/entity_values.py`). So a pattern must mean the same in our
//! `[filter]` and our `[sink.influxdb.ha]`; one parser guarantees it.
//!
//! What `fnmatch.translate` does (Python 3.11 and 3.13 agree, checked on 200,000 random patterns):
//! `*` any run of chars (newlines too; two stars are one), `?` any one char, `[seq]` and `[!seq]`
//! classes with ranges, a full match on code points, case-sensitive, no escapes and no `{a,b}`.
//! Its class reading has quirks kept here on purpose: a `]` right after `[` or `[!` is a member;
//! reversed ranges (`z-a`) are dropped and the chars around them glued together, and only then is a
//! leading `!` read as negation (so `[b-a!c]` is `[!c]`); `^` never negates; an unclosed `[` is a
//! literal `[`; an empty class matches nothing, an empty negated one any char.

/// A compiled glob. [`Glob::matches`] gives Python's `re.match(fnmatch.translate(pattern), text)`.
#[derive(Debug, Clone)]
pub struct Glob(Vec<Tok>);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
    /// `[...]`: inclusive ranges (a single char is `(c, c)`).
    Class {
        negated: bool,
        ranges: Box<[(char, char)]>,
    },
}

impl Glob {
    /// Reads `pattern` as `fnmatch.translate` does. Every string is a pattern (as in Python), so
    /// this cannot fail; callers that want to refuse patterns that can never match look at
    /// [`Glob::literals`].
    pub fn new(pattern: &str) -> Self {
        let pat: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < pat.len() {
            i += 1;
            match pat[i - 1] {
                '*' if toks.last() == Some(&Tok::Star) => {}
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '[' => match parse_class(&pat[i..]) {
                    Some((class, used)) => {
                        toks.push(class);
                        i += used;
                    }
                    None => toks.push(Tok::Lit('[')),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Self(toks)
    }

    /// The chars the pattern matches literally, in order. A `[` among them is an unclosed one
    /// (a closed `[` always starts a class).
    pub fn literals(&self) -> impl Iterator<Item = char> + '_ {
        self.0.iter().filter_map(|t| match t {
            Tok::Lit(c) => Some(*c),
            _ => None,
        })
    }

    /// Full match; on a mismatch the last `*` takes one more char (linear-ish, no allocation).
    pub fn matches(&self, text: &str) -> bool {
        let (mut t, mut s) = (0, 0);
        let mut last_star: Option<(usize, usize)> = None; // (token after the `*`, text position)
        loop {
            let c = text[s..].chars().next();
            match (self.0.get(t), c) {
                (Some(Tok::Star), _) => {
                    t += 1;
                    last_star = Some((t, s));
                    continue;
                }
                (Some(tok), Some(c)) if tok.accepts(c) => {
                    t += 1;
                    s += c.len_utf8();
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            let Some((st, ss)) = last_star else {
                return false;
            };
            let Some(c) = text[ss..].chars().next() else {
                return false;
            };
            (t, s) = (st, ss + c.len_utf8());
            last_star = Some((t, s));
        }
    }
}

impl Tok {
    fn accepts(&self, c: char) -> bool {
        match self {
            Tok::Star | Tok::Any => true, // `Star` never gets here: `matches` handles it first
            Tok::Lit(l) => *l == c,
            Tok::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// Parses what follows a `[` as `fnmatch.translate` does, quirks included. Returns the class and
/// the chars consumed (closing `]` included), or `None` if unclosed (then `[` is a literal).
fn parse_class(rest: &[char]) -> Option<(Tok, usize)> {
    // `[!]...]` and `[]...]`: a `]` right after the opening is a member, not the end.
    let first = usize::from(rest.first() == Some(&'!'));
    let from = first + usize::from(rest.get(first) == Some(&']'));
    let end = from + rest[from..].iter().position(|&c| c == ']')?;
    let stuff = &rest[..end];
    // Split at range hyphens: searched from the 2nd member, resuming 3 chars past each hyphen (in
    // `a-c-e` the 2nd `-` is a member). A trailing `-` is a member.
    let (mut chunks, mut i, mut k) = (Vec::new(), 0, first + 1);
    while let Some(h) = stuff
        .get(k..)
        .and_then(|s| s.iter().position(|&c| c == '-'))
    {
        chunks.push(stuff[i..k + h].to_vec());
        (i, k) = (k + h + 1, k + h + 3);
    }
    match (&stuff[i..], chunks.last_mut()) {
        ([], Some(last)) => last.push('-'),
        (tail, _) => chunks.push(tail.to_vec()),
    }
    // Drop reversed ranges with both ends, right to left; the neighbours are glued together.
    for k in (1..chunks.len()).rev() {
        if chunks[k - 1].last() > chunks[k].first() {
            let right = chunks.remove(k);
            chunks[k - 1].pop();
            chunks[k - 1].extend(right.iter().skip(1));
        }
    }
    // Only now is a leading `!` read as negation: so `[b-a!c]` means `[!c]`. `^` never negates.
    let negated = chunks[0].first() == Some(&'!');
    if negated {
        chunks[0].remove(0);
    }
    let mut ranges = Vec::new();
    for (k, chunk) in chunks.iter().enumerate() {
        let mut members = &chunk[..];
        if k > 0 {
            match (chunks[k - 1].last(), members.split_first()) {
                (Some(&lo), Some((&hi, rest))) => {
                    ranges.push((lo, hi));
                    members = rest;
                }
                // `[b-a!-z]` becomes Python's `[^-z]`: the `-` is a member.
                _ => ranges.push(('-', '-')),
            }
        }
        if k + 1 < chunks.len() {
            members = members.split_last().map_or(members, |(_, m)| m); // the next range's start
        }
        ranges.extend(members.iter().map(|&c| (c, c)));
    }
    Some((
        Tok::Class {
            negated,
            ranges: ranges.into(),
        },
        end + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every expectation is Python's answer, computed on this machine with Python 3.11.7:
    /// `python3 -c "import fnmatch; print(fnmatch.fnmatchcase(TEXT, PATTERN))"`, which is
    /// `re.match(fnmatch.translate(PATTERN), TEXT)`, what HA's entity filter and its influxdb
    /// `component_config_glob` run. Python 3.13 (HA 2026.2's) gives the same answers.
    #[test]
    fn globs_follow_python_fnmatch() {
        #[rustfmt::skip]
        let cases = [
            // `*` and `?`
            ("sensor.*", "sensor.a", true), ("sensor.*", "sensors.a", false), ("*", "", true),
            ("sensor.*", "sensorx.a", false), ("*", "sensor.x\ny", true),
            ("*.kitchen_*", "light.kitchen_main", true), ("*temp*", "sensor.temp", true),
            ("*.kitchen_?", "light.kitchen_1", true), ("*.kitchen_?", "light.kitchen_12", false),
            ("sensor.?_t", "sensor.a_t", true), ("sensor.?_t", "sensor.ab_t", false), ("?", "é", true),
            ("a*b*c", "axxbxxbc", true), ("a*b*c", "axxbxxb", false), ("a**c", "abc", true),
            ("a**b", "ab", true), ("*a*b", "xaxxb", true), ("*a*b", "xaxxbc", false),
            // newlines are chars like any other (`(?s:...)`); the match is full (`\Z`)
            ("a?c", "a\nc", true), ("*", "a\nb", true), ("sensor.x", "sensor.x\n", false),
            // case-sensitive
            ("[a-c]", "B", false), ("Sensor.*", "sensor.x", false), ("S*", "sensor.x", false),
            // classes, `!` negates only at the start, `^` never
            ("[ab]x", "bx", true), ("[!ab]x", "bx", false), ("[!ab]x", "cx", true),
            ("light.[!k]*", "light.desk", true), ("light.[!k]*", "light.kitchen", false),
            ("[a!]", "!", true), ("[a!]", "b", false),
            ("[^a]", "^", true), ("[^a]", "a", true), ("[^a]", "b", false),
            // a `]` first in the class is a member
            ("[]]", "]", true), ("[!]]", "a", true), ("[!]]", "]", false),
            ("[]a]b", "]b", true), ("[!]a]b", "xb", true), ("[!]a]b", "ab", false),
            // ranges: reversed ones are dropped and their neighbours glued together
            ("[a-c]*", "binary_sensor.x", true), ("[z-a]", "a", false), ("[c-a]x", "ax", false),
            ("[!z-a]", "q", true), ("[xc-az]", "c", false), ("[xc-az]", "z", true),
            ("[b-a!c]", "c", false), ("[b-a!c]", "d", true), ("[b-a!c]", "!", true),
            ("[b-a!-z]", "-", false), ("[b-a!-z]", "y", true),
            // `-` at the ends and between ranges is a member
            ("[a-]", "-", true), ("[a-]x", "-x", true), ("[--a]", "0", true),
            ("[a-c-e]", "d", false), ("[a-c-e]", "-", true), ("[a-c-e]", "e", true),
            // unclosed `[` is a literal
            ("[a", "[a", true), ("sensor.[ab", "sensor.[ab", true), ("sensor.[ab", "sensor.a", false),
            ("[!]", "[!]", true), ("[]", "[]", true),
            // no escapes, no braces
            ("\\", "\\", true), ("{a,b}", "a", false), ("{a,b}", "{a,b}", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn literals_are_what_matches_itself() {
        let lits = |p: &str| Glob::new(p).literals().collect::<String>();
        assert_eq!(lits("sensor.[a-z]*_?x"), "sensor._x");
        assert_eq!(lits("sensor.[ab"), "sensor.[ab");
        assert_eq!(lits("[]]"), "");
    }
}

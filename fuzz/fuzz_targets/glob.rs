//! The glob parser and matcher (`ha_ingestor::glob::Glob`), against an oracle: Python's
//! `fnmatch.translate` (3.11's, ported line by line) and the regex it writes, which is what HA
//! does with `re.compile(...).match`. Input: `pattern \n text`.
//!
//! The translated regex is a sequence of literals, classes and `.*`, so the oracle reads it with
//! a small parser of that subset and matches it with a set-of-positions simulation: compiling it
//! per input (regex-automata's NFA) held the target near 700 inputs a second. One input in 64
//! also has the `regex` crate read the regex (regex-syntax) and run it (regex-automata's NFA
//! engines), and checks the small parser and the simulation against them: same acceptance, same
//! answer.
//!
//! Invariants: `Glob::matches` answers what the translated regex answers, for every pattern and
//! text (patterns whose regex the crate refuses are skipped); it never panics; a pattern without
//! `*?[` matches exactly itself.
#![no_main]

use ha_ingestor::glob::Glob;
use libfuzzer_sys::fuzz_target;
use regex_automata::meta;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, text) = input.split_once('\n').unwrap_or((input, ""));
    let glob = Glob::new(pattern);
    let got = glob.matches(text);
    if !pattern.contains(['*', '?', '[']) {
        assert_eq!(got, pattern == text, "{pattern:?} on {text:?}");
        assert!(glob.matches(pattern));
    }
    let chars: Vec<char> = pattern.chars().collect();
    let regex = translate(&chars);
    let items = parse(&regex);
    let expected = items.as_ref().map(|items| matches(items, text));
    if let Some(expected) = expected {
        assert_eq!(got, expected, "{pattern:?} on {text:?} (regex {regex})");
    }
    if fnv(data).is_multiple_of(64) {
        engine_agrees(&regex, text, expected);
    }
});

/// The small parser and the simulation against the regex crate.
fn engine_agrees(regex: &str, text: &str, expected: Option<bool>) {
    let parsed = regex_syntax::Parser::new().parse(regex);
    assert_eq!(
        parsed.is_ok(),
        expected.is_some(),
        "regex {regex}: the crate says {parsed:?}"
    );
    let Some(expected) = expected else {
        return;
    };
    // The NFA engines only: building a DFA for every input would cost most of the run.
    let Ok(re) = meta::Regex::builder()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(1 << 24))
                .onepass(false)
                .dfa(false)
                .hybrid(false),
        )
        .build(regex)
    else {
        return;
    };
    assert_eq!(re.is_match(text), expected, "regex {regex} on {text:?}");
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One step of the translated regex: one char of a class, or any number of any chars (`.*`).
enum Item {
    One(CharClass),
    AnyRun,
}

/// Ranges of chars, or all chars but those (`[^...]`).
struct CharClass {
    ranges: Vec<(char, char)>,
    negated: bool,
}

impl CharClass {
    fn any() -> Self {
        CharClass {
            ranges: Vec::new(),
            negated: true,
        }
    }

    fn one(c: char) -> Self {
        CharClass {
            ranges: vec![(c, c)],
            negated: false,
        }
    }

    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// What the regex crate would read in the regex `translate` writes: `(?s)\A(?:` ... `)\z` around
/// `.*`, `.`, `\`-escaped and plain literals, `[...]` classes (`^` negation, `]` first is a literal,
/// `\`-escapes, `a-b` ranges) and the class that matches nothing. `None` where the crate refuses
/// the regex (a range whose ends are reversed).
fn parse(regex: &str) -> Option<Vec<Item>> {
    const NOTHING: &str = r"^\x{0}-\x{10FFFF}]";
    let body = regex
        .strip_prefix(r"(?s)\A(?:")
        .and_then(|r| r.strip_suffix(r")\z"))
        .expect("translate's frame");
    let mut items = Vec::new();
    let mut it = body.chars();
    while let Some(c) = it.next() {
        let item = match c {
            '.' if it.as_str().starts_with('*') => {
                it.next();
                Item::AnyRun
            }
            '.' => Item::One(CharClass::any()),
            '\\' => Item::One(CharClass::one(it.next().expect("an escaped char"))),
            '[' if it.as_str().starts_with(NOTHING) => {
                it = it.as_str()[NOTHING.len()..].chars();
                Item::One(CharClass {
                    ranges: Vec::new(),
                    negated: false,
                })
            }
            '[' => Item::One(class(&mut it)?),
            c => Item::One(CharClass::one(c)),
        };
        items.push(item);
    }
    Some(items)
}

/// A class after its `[`, up to and with its `]`.
fn class(it: &mut std::str::Chars<'_>) -> Option<CharClass> {
    let negated = it.as_str().starts_with('^');
    if negated {
        it.next();
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = it.next().expect("a class is closed");
        if c == ']' && !first {
            break;
        }
        first = false;
        let lo = if c == '\\' { it.next()? } else { c };
        // `-` before `]` is a literal; before anything else it makes a range.
        let rest = it.as_str();
        if rest.starts_with('-') && !rest[1..].is_empty() && !rest[1..].starts_with(']') {
            it.next();
            let h = it.next()?;
            let hi = if h == '\\' { it.next()? } else { h };
            if lo > hi {
                return None;
            }
            ranges.push((lo, hi));
        } else {
            ranges.push((lo, lo));
        }
    }
    Some(CharClass { ranges, negated })
}

/// Whether `items` match all of `text`: the set of positions in `items` reachable after each
/// char (an `AnyRun` may be passed over without a char).
fn matches(items: &[Item], text: &str) -> bool {
    let n = items.len();
    let mut now = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    let close = |set: &mut Vec<bool>| {
        for i in 0..n {
            if set[i] && matches!(items[i], Item::AnyRun) {
                set[i + 1] = true;
            }
        }
    };
    now[0] = true;
    close(&mut now);
    for c in text.chars() {
        next.iter_mut().for_each(|x| *x = false);
        for i in 0..n {
            if !now[i] {
                continue;
            }
            match &items[i] {
                Item::One(class) if class.contains(c) => next[i + 1] = true,
                Item::AnyRun => next[i] = true,
                _ => {}
            }
        }
        close(&mut next);
        std::mem::swap(&mut now, &mut next);
        if !now.contains(&true) {
            return false;
        }
    }
    now[n]
}

/// `fnmatch.translate` of Python 3.11, line by line, for the `regex` crate: `(?s)\A...\z`, a
/// `.*` for `(?>.*?fixed)` (the same full-match language: each fixed piece has a fixed length, so
/// its first occurrence is as good as any), `[` escaped inside classes (the crate nests classes)
/// and a class that matches nothing for `(?!)` (no look-ahead in the crate).
fn translate(pat: &[char]) -> String {
    let mut res = String::from(r"(?s)\A(?:");
    let n = pat.len();
    let mut i = 0;
    let mut last_star = false;
    while i < n {
        let c = pat[i];
        i += 1;
        if c == '*' {
            if !last_star {
                res.push_str(".*");
            }
            last_star = true;
            continue;
        }
        last_star = false;
        match c {
            '?' => res.push('.'),
            '[' => {
                let mut j = i;
                if j < n && pat[j] == '!' {
                    j += 1;
                }
                if j < n && pat[j] == ']' {
                    j += 1;
                }
                while j < n && pat[j] != ']' {
                    j += 1;
                }
                if j >= n {
                    res.push_str(r"\[");
                    continue;
                }
                let seg: String = pat[i..j].iter().collect();
                let mut stuff = if !seg.contains('-') {
                    seg.replace('\\', r"\\")
                } else {
                    let mut chunks: Vec<Vec<char>> = Vec::new();
                    let mut k = if pat[i] == '!' { i + 2 } else { i + 1 };
                    // pat.find('-', k, j)
                    while let Some(found) = (k..j).find(|&x| pat[x] == '-') {
                        chunks.push(pat[i..found].to_vec());
                        i = found + 1;
                        k = found + 3;
                    }
                    let chunk = pat[i..j].to_vec();
                    if !chunk.is_empty() {
                        chunks.push(chunk);
                    } else {
                        chunks.last_mut().expect("a '-' was found").push('-');
                    }
                    for k in (1..chunks.len()).rev() {
                        // Python raises IndexError on an empty chunk here; it cannot be one.
                        if chunks[k - 1].last() > chunks[k].first() {
                            let mut merged = chunks[k - 1][..chunks[k - 1].len() - 1].to_vec();
                            merged.extend_from_slice(&chunks[k][1..]);
                            chunks[k - 1] = merged;
                            chunks.remove(k);
                        }
                    }
                    chunks
                        .iter()
                        .map(|s| {
                            s.iter()
                                .collect::<String>()
                                .replace('\\', r"\\")
                                .replace('-', r"\-")
                        })
                        .collect::<Vec<_>>()
                        .join("-")
                };
                let mut escaped = String::new();
                for ch in stuff.chars() {
                    if matches!(ch, '&' | '~' | '|') {
                        escaped.push('\\');
                    }
                    escaped.push(ch);
                }
                stuff = escaped;
                i = j + 1;
                if stuff.is_empty() {
                    res.push_str(r"[^\x{0}-\x{10FFFF}]");
                } else if stuff == "!" {
                    res.push('.');
                } else {
                    if let Some(rest) = stuff.strip_prefix('!') {
                        stuff = format!("^{rest}");
                    } else if stuff.starts_with(['^', '[']) {
                        stuff = format!("\\{stuff}");
                    }
                    res.push('[');
                    // The crate reads an unescaped `[` inside a class as a nested class.
                    let mut it = stuff.chars();
                    while let Some(ch) = it.next() {
                        match ch {
                            '\\' => {
                                res.push('\\');
                                res.extend(it.next());
                            }
                            '[' => res.push_str(r"\["),
                            ch => res.push(ch),
                        }
                    }
                    res.push(']');
                }
            }
            c => res.push_str(&regex_syntax::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    res.push_str(r")\z");
    res
}

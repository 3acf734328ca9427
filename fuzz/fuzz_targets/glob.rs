//! The glob parser and matcher (`ha_ingestor::glob::Glob`), against an oracle: Python's
//! `fnmatch.translate` (3.11's, ported line by line) compiled by the `regex` crate's engine (regex-automata), which is what
//! HA does with `re.compile(...).match`. Input: `pattern \n text`.
//!
//! Invariants: `Glob::matches` answers what the translated regex answers, for every pattern and
//! text (patterns whose regex the crate refuses as too big are skipped); it never panics; a
//! pattern without `*?[` matches exactly itself.
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
    // The NFA engines only: building a DFA for every input would cost most of the run.
    let Ok(re) = meta::Regex::builder()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(1 << 24))
                .onepass(false)
                .dfa(false)
                .hybrid(false),
        )
        .build(&regex)
    else {
        return;
    };
    assert_eq!(
        got,
        re.is_match(text),
        "{pattern:?} on {text:?} (regex {regex})"
    );
});

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

//! What must be refused before anything parses a line: characters the installers read differently
//! (line separators, controls, bidi controls, Unicode whitespace, stray backslashes) and inputs
//! that would make `pep508_rs` recurse without bound or panic.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

/// Longest requirement (name, extras, version and marker; not its `--hash` options) handed to the
/// PEP 508 parser. Real markers are a few hundred characters; pip-compile's hashes do not count.
const MAX_REQUIREMENT_CHARS: usize = 4096;

/// Deepest parenthesis nesting (outside quoted strings) handed to the PEP 508 parser, which
/// recurses once per level.
pub const MAX_NESTING: usize = 32;

/// Most comparisons in one marker: `pep508_rs` builds a decision diagram whose cost grows much
/// faster than the marker (about 0.5 s for 64 comparisons in a debug build, 8 s for 136).
const MAX_MARKER_COMPARISONS: usize = 32;

/// `str.splitlines()` separators other than `\n` and `\r\n` (pip splits at every one; uv only at
/// `\r` and `\n`).
const LINE_SEPARATORS: &[char] = &[
    '\r', '\u{0b}', '\u{0c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}',
];

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// The first character of `text` (one physical line without its `\n`/`\r\n`) that no line may
/// hold, comments included.
pub(crate) fn character(text: &str) -> Option<String> {
    for c in text.chars() {
        if c == '\t' {
            continue;
        }
        if LINE_SEPARATORS.contains(&c) || c == '\n' {
            return Some(format!(
                "contains the line separator U+{:04X}; only \\n and \\r\\n may end a line (pip and uv split lines differently at the others)",
                c as u32
            ));
        }
        if c.is_control() {
            return Some(format!("contains the control character U+{:04X}", c as u32));
        }
        if is_bidi_control(c) {
            return Some(format!(
                "contains the bidirectional control U+{:04X}, which makes the line display differently from what the installers read",
                c as u32
            ));
        }
    }
    None
}

/// Where a comment starts: `#` at the start or after whitespace. Any Unicode whitespace counts
/// here (pip's `\s`), and such whitespace before the comment is refused by [`outside_comment`],
/// so what remains is exactly pip's and uv's comment.
pub(crate) fn comment_start(text: &str) -> Option<usize> {
    let mut previous: Option<char> = None;
    for (i, c) in text.char_indices() {
        if c == '#' && previous.is_none_or(char::is_whitespace) {
            return Some(i);
        }
        previous = Some(c);
    }
    None
}

/// Characters outside the comment of a logical line that pip and uv read differently.
pub(crate) fn outside_comment(text: &str) -> Option<String> {
    let end = comment_start(text).unwrap_or(text.len());
    for c in text[..end].chars() {
        if c == '\\' {
            return Some(
                "a backslash other than one line continuation at the end of a line (pip and uv read it differently)"
                    .into(),
            );
        }
        if c.is_whitespace() && c != ' ' && c != '\t' {
            return Some(format!(
                "contains the Unicode whitespace U+{:04X} outside a comment; pip reads it as a space, uv does not",
                c as u32
            ));
        }
    }
    None
}

/// Limits checked before `pep508_rs` sees a requirement, and the shapes that make it panic.
pub(crate) fn requirement(spec: &str) -> Option<String> {
    let depth = nesting(spec);
    if depth > MAX_NESTING {
        return Some(format!(
            "the requirement nests parentheses {depth} deep; at most {MAX_NESTING} levels are read"
        ));
    }
    let comparisons = comparisons(spec);
    if comparisons > MAX_MARKER_COMPARISONS {
        return Some(format!(
            "the marker joins {comparisons} comparisons; at most {MAX_MARKER_COMPARISONS} are read"
        ));
    }
    let chars = spec.chars().count();
    if chars > MAX_REQUIREMENT_CHARS {
        return Some(format!(
            "the requirement is {chars} characters long; at most {MAX_REQUIREMENT_CHARS} are read (not counting --hash options)"
        ));
    }
    names(spec)
}

/// Deepest `(` nesting outside quoted strings.
fn nesting(spec: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    for c in spec.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Comparisons in a marker: one more than its `and`/`or` words outside quoted strings.
fn comparisons(spec: &str) -> usize {
    let mut words = 0;
    let mut quote: Option<char> = None;
    let mut word = String::new();
    for c in spec.chars().chain(std::iter::once(' ')) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.clear();
            }
            None if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' => word.push(c),
            None => {
                if word == "and" || word == "or" {
                    words += 1;
                }
                word.clear();
            }
        }
    }
    words + 1
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// `pep508_rs` 0.9 panics ("validation should match PEP 508 parsing") on a package or extra name
/// that ends in `.`, `-` or `_` and is followed by more text (`foo-]`, `foo[bar- ]`).
fn names(spec: &str) -> Option<String> {
    let s = spec.trim_start();
    let end = s.find(|c| !is_name_char(c)).unwrap_or(s.len());
    let name = &s[..end];
    if name.ends_with(['.', '-', '_']) {
        return Some(format!(
            "the package name `{name}` must end with a letter or digit"
        ));
    }
    let extras = s[end..].trim_start().strip_prefix('[')?;
    let extras = &extras[..extras.find(']').unwrap_or(extras.len())];
    for extra in extras.split(|c| !is_name_char(c)).filter(|e| !e.is_empty()) {
        if extra.ends_with(['.', '-', '_']) || extra.starts_with(['.', '-', '_']) {
            return Some(format!(
                "the extra `{extra}` must start and end with a letter or digit"
            ));
        }
    }
    None
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Run a parser call that might panic on hostile input; `None` if it did. The panic message is
/// kept off stderr (only for this thread, only during the call): the caller reports the line.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    match result {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!("the requirement parser panicked on a line; the line is refused");
            None
        }
    }
}

/// A UTF-8 byte order mark, read as pip (`auto_decode`) and uv read it: ignored at the start of
/// the file, and only there (elsewhere it stays an invisible character, refused).
const BOM: char = '\u{feff}';

/// Whether the file starts with a [`BOM`].
pub(super) fn has_bom(lines: &[super::Line]) -> bool {
    lines.first().is_some_and(|l| l.raw.starts_with(BOM))
}

/// Put the file's [`BOM`] back in front when an edit replaced or removed its first line: it
/// belongs to the file, not to the line.
pub(super) fn keep_bom(lines: &mut [super::Line], had: bool) {
    if let Some(first) = lines.first_mut()
        && had
        && !first.raw.starts_with(BOM)
    {
        first.raw.insert(0, BOM);
    }
}

/// The text a logical line starting at line `number` means: line 1 without a leading [`BOM`].
pub(super) fn meaning(number: usize, raw: &str) -> &str {
    match number {
        1 => raw.strip_prefix(BOM).unwrap_or(raw),
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::requirements::RequirementsFile;
    use proptest::prelude::*;

    #[test]
    fn a_byte_order_mark_is_ignored_at_the_start_only() {
        // The finding: `add` and `warm` refused line 1 as '\ufeffgoodpkg==1.0'.
        let file = "\u{feff}goodpkg==1.0\nflask\n";
        let accepted = Policy::default().check_content(file).unwrap();
        assert_eq!(accepted.package_count, 2);
        assert_eq!(accepted.installer_text, "goodpkg==1.0\nflask\n");
        assert_eq!(RequirementsFile::parse(file).render(), file);
        // Anywhere else it is an invisible character, refused with its line.
        let e = Policy::default()
            .check_content("goodpkg==1.0\n\u{feff}flask\n")
            .unwrap_err();
        assert_eq!(e.first().line, 2);
        // A BOM on its own, or before a comment, is an empty first line.
        assert_eq!(
            Policy::default()
                .check_content("\u{feff}")
                .unwrap()
                .package_count,
            0
        );
        assert!(Policy::default().check_content("\u{feff}# c\nx\n").is_ok());
    }

    proptest! {
        /// Any file reads the same with a BOM in front as without, and keeps its bytes.
        #[test]
        fn a_leading_bom_changes_nothing_but_the_bytes_kept(
            lines in prop::collection::vec(
                prop::sample::select(vec![
                    "requests==2.32.3", "# comment", "", "flask>=3 ; python_version >= \"3.8\"",
                    "-i https://evil.example/simple", "pkg @ https://x/y.whl", "a \\", "==1",
                    "x --hash=sha256:0123", "--only-binary :all:", "\u{feff}y",
                ]),
                1..6,
            ),
            eol in prop::sample::select(vec!["\n", "\r\n"]),
        ) {
            let plain: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
            // One BOM is ignored, not two: a file that already starts with one is another case.
            prop_assume!(!plain.starts_with(BOM));
            let with_bom = format!("\u{feff}{plain}");
            let (a, b) = (RequirementsFile::parse(&plain), RequirementsFile::parse(&with_bom));
            prop_assert_eq!(b.render(), with_bom.clone());
            let entries = |f: &RequirementsFile| f.lines().iter().map(|l| (l.number, l.entry.clone(), l.text())).collect::<Vec<_>>();
            prop_assert_eq!(entries(&a), entries(&b));
            prop_assert_eq!(
                Policy::default().check_content(&plain),
                Policy::default().check_content(&with_bom)
            );
        }
    }

    #[test]
    fn nesting_counts_outside_quotes_only() {
        assert_eq!(nesting("a ; (b == \"((((\") and (c == ')')"), 1);
        assert_eq!(
            nesting(&format!("a ; {}x{}", "(".repeat(40), ")".repeat(40))),
            40
        );
    }

    #[test]
    fn comparisons_count_and_or_outside_quotes() {
        assert_eq!(
            comparisons("a ; b == 'and or' and (c < '1' or d > \"or\")"),
            3
        );
        assert_eq!(comparisons("android ; origin == 'x'"), 1);
    }

    #[test]
    fn names_that_make_pep508_rs_panic_are_caught_first() {
        for bad in [
            "foo-]",
            "foo- ==1",
            "foo.[x]",
            "foo[bar-]",
            "foo[ bar_ , baz]",
            "foo[-x]",
        ] {
            assert!(names(bad).is_some(), "{bad}");
        }
        for good in [
            "foo",
            "foo[bar,baz]>=1",
            "a.b-c_d ; extra == 'x-'",
            "foo [ bar ]",
        ] {
            assert_eq!(names(good), None, "{good}");
        }
    }

    #[test]
    fn a_panic_becomes_none() {
        assert_eq!(catch(|| 1), Some(1));
        assert_eq!(catch(|| -> u8 { panic!("boom") }), None);
    }
}

use super::*;
use crate::policy::Policy;
use proptest::prelude::*;

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `remove` on text, as `requirements remove` did before it read bytes: one name after another.
fn removed_from_text(text: &str, wanted: &[String]) -> (String, Vec<usize>) {
    let mut file = RequirementsFile::parse(text);
    let counts = wanted.iter().map(|n| file.remove(n).unwrap()).collect();
    (file.render(), counts)
}

#[test]
fn bytes_that_are_not_utf8_go_with_the_line_that_names_them() {
    let stored = b"flask==3.0.3  # caf\xe9\r\nrequests==2.32.3\r\n";
    let r = remove(stored, &names(&["Flask"])).unwrap();
    assert_eq!(r.bytes, b"requests==2.32.3\r\n");
    assert_eq!((r.removed, r.not_utf8), (vec![1], vec![]));

    // Removing another package keeps the broken line, byte for byte, and says where it is.
    let r = remove(stored, &names(&["requests"])).unwrap();
    assert_eq!(r.bytes, b"flask==3.0.3  # caf\xe9\r\n");
    assert_eq!(
        r.not_utf8,
        [NotUtf8 {
            line: 1,
            offset: 19,
            byte: 0xe9,
            name: Some("flask".into())
        }]
    );
    assert_eq!(
        r.not_utf8[0].to_string(),
        "line 1 (byte 0xe9 at offset 19, package `flask`)"
    );
}

#[test]
fn a_continued_requirement_goes_whole_wherever_its_bad_byte_is() {
    let stored = b"# tools\nflask==3.0.3 \\\n    --hash=sha256:\xff\xfe \\\n    --hash=sha256:00\nnumpy==2.0.1\n";
    let r = remove(stored, &names(&["flask"])).unwrap();
    assert_eq!(r.bytes, b"# tools\nnumpy==2.0.1\n");
    let r = remove(stored, &names(&["numpy"])).unwrap();
    assert_eq!(r.not_utf8.len(), 1);
    // The physical line holding the byte, not the first of its logical line.
    assert_eq!((r.not_utf8[0].line, r.not_utf8[0].offset), (3, 41));
}

#[test]
fn a_line_whose_name_is_broken_names_nothing_and_stays() {
    for line in [
        &b"fla\xffsk==1\n"[..],
        b"\xffflask==1\n",
        b"flask\xff==1\n",
        b"# flask \xff\n",
        b"-e flask\xff\n",
        b"\xff\xfe\n",
    ] {
        let r = remove(line, &names(&["flask", "fla"])).unwrap();
        assert_eq!(r.bytes, line, "{}", String::from_utf8_lossy(line));
        assert_eq!(r.removed, [0, 0]);
        assert_eq!(r.not_utf8.len(), 1);
        assert_eq!(r.not_utf8[0].name, None);
    }
}

#[test]
fn leading_names_are_read_up_to_what_can_end_a_name() {
    for (line, name) in [
        ("flask==1 \u{fffd}", Some("flask")),
        (
            "  Flask_Login[async]>=1 ; python_version > '3'",
            Some("flask-login"),
        ),
        ("pkg @ https://x/\u{fffd}", Some("pkg")),
        ("requests", Some("requests")),
        ("requests\t# \u{fffd}", Some("requests")),
        ("fla\u{fffd}sk", None),
        ("-i https://x/", None),
        ("--hash=sha256:\u{fffd}", None),
        ("_bad_==1", None),
        ("", None),
    ] {
        assert_eq!(leading_name(line).as_deref(), name, "{line:?}");
    }
}

#[test]
fn a_leading_byte_order_mark_stays_in_front() {
    let stored = b"\xef\xbb\xbfflask==1 \xff\r\nnumpy==2\r\n";
    let r = remove(stored, &names(&["flask"])).unwrap();
    assert_eq!(r.bytes, b"\xef\xbb\xbfnumpy==2\r\n");
    // Removing everything leaves nothing, not a lone mark (as the text model does).
    let r = remove(stored, &names(&["flask", "numpy"])).unwrap();
    assert_eq!((r.bytes.as_slice(), r.removed), (&b""[..], vec![1, 1]));
}

#[test]
fn a_name_given_twice_removes_once_and_a_bad_name_is_refused() {
    let r = remove(b"a==1\nb==2\n", &names(&["A", "a", "b"])).unwrap();
    assert_eq!((r.bytes, r.removed), (b"".to_vec(), vec![1, 0, 1]));
    let e = remove(b"a==1\n", &names(&["not a name"])).unwrap_err();
    assert_eq!(e.spec, "not a name");
}

#[test]
fn what_is_kept_is_checked_with_the_stored_line_numbers() {
    let stored = b"flask==1 \xff\n# keep\n-i https://evil.example/simple\nnumpy\n";
    let r = remove(stored, &names(&["flask"])).unwrap();
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    let in_result = Policy::default().check_content(&text).unwrap_err();
    assert_eq!(in_result.first().line, 2);
    let as_stored = Policy::default().check(r.kept_as_stored()).unwrap_err();
    assert_eq!(as_stored.first().line, 3, "{as_stored}");
    assert_eq!(as_stored.first().text, in_result.first().text);
}

/// Physical lines of generated files: requirements (some continued), comments, options, bytes
/// that are not UTF-8 in every place, CRLF, a mark, lines without an ending.
fn physical_line(utf8_only: bool) -> impl Strategy<Value = Vec<u8>> {
    let bodies: Vec<&[u8]> = vec![
        &b"flask==3.0.3"[..],
        b"Flask_Login[async]>=0.6 ; python_version >= \"3.8\"",
        b"requests",
        b"numpy==2.0.1 --hash=sha256:0123",
        b"  numpy  # pinned",
        b"# comment \xe9",
        b"flask==1 # caf\xe9",
        b"requests\xff==2",
        b"fla\xffsk",
        b"\xff\xfe",
        b"\xe2\x82",
        b"-i https://evil.example/simple",
        b"    --hash=sha256:\xff",
        b"flask==1 \\",
        b"numpy \\",
        b"",
        b"\xef\xbb\xbfrequests",
        b"requests @ https://x.example/r.whl",
    ];
    let body = prop::sample::select(
        bodies
            .into_iter()
            .filter(|b| !utf8_only || std::str::from_utf8(b).is_ok())
            .collect::<Vec<_>>(),
    );
    let ending = prop::sample::select(vec![&b"\n"[..], b"\r\n", b""]);
    (body, ending).prop_map(|(b, e)| [b, e].concat())
}

fn stored_file(utf8_only: bool) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec(physical_line(utf8_only), 0..12),
    )
        .prop_map(|(bom, lines)| [if bom { BOM } else { &[] }, &lines.concat()].concat())
}

fn wanted() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec!["flask", "REQUESTS", "numpy", "flask-login", "absent"]),
        0..4,
    )
    .prop_map(|n| n.into_iter().map(String::from).collect())
}

/// Whether `out` is `lines` with some of them left out (and perhaps the file's mark moved to
/// the front of the first one kept).
fn is_a_subsequence(lines: &[&[u8]], out: &[u8]) -> bool {
    let plain = |bytes: &[u8]| -> bool {
        let mut rest = bytes;
        for line in lines {
            if let Some(tail) = rest.strip_prefix(*line) {
                rest = tail;
            }
        }
        rest.is_empty()
    };
    plain(out)
        || out.strip_prefix(BOM).is_some_and(|o| {
            let mut unmarked = lines.to_vec();
            if let Some(first) = unmarked.first_mut() {
                *first = first.strip_prefix(BOM).unwrap_or(first);
            }
            let mut rest = o;
            for line in &unmarked {
                if let Some(tail) = rest.strip_prefix(*line) {
                    rest = tail;
                }
            }
            rest.is_empty()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes at all: no panic, nothing added but a moved mark.
    #[test]
    fn never_panics_on_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        names in wanted(),
    ) {
        let r = remove(&bytes, &names).unwrap();
        prop_assert!(r.bytes.len() <= bytes.len() + BOM.len());
        prop_assert_eq!(r.removed.len(), names.len());
    }

    /// Lines it did not remove are copied byte for byte, in order; a line goes only when it
    /// names a package asked for; and what is left holds nothing more to remove.
    #[test]
    fn only_named_lines_go_and_the_rest_is_kept_byte_for_byte(
        stored in stored_file(false),
        names in wanted(),
    ) {
        let r = remove(&stored, &names).unwrap();
        let lines: Vec<&[u8]> = stored.split_inclusive(|b| *b == b'\n').collect();
        prop_assert!(is_a_subsequence(&lines, &r.bytes), "{:?} → {:?}", String::from_utf8_lossy(&stored), String::from_utf8_lossy(&r.bytes));
        if r.removed.iter().all(|n| *n == 0) {
            prop_assert_eq!(&r.bytes, &stored);
        }
        let wanted: Vec<String> = names.iter().map(|n| normalize_name(n).unwrap()).collect();
        // Every kept line that is not UTF-8 names no package asked for.
        for bad in &r.not_utf8 {
            prop_assert!(bad.name.as_ref().is_none_or(|n| !wanted.contains(n)), "{}", bad);
        }
        // Every kept UTF-8 requirement is of another package.
        for line in r.kept_as_stored().lines() {
            if let Entry::Requirement { name, .. } = &line.entry
                && !r.not_utf8.iter().any(|b| b.line >= line.number && b.line < line.number + line.raw.matches('\n').count().max(1))
            {
                prop_assert!(!wanted.contains(name), "kept {}", line.raw);
            }
        }
        // The number of lines removed is the number of lines gone.
        let gone = RequirementsFile::parse(&String::from_utf8_lossy(&stored)).lines().len()
            - r.kept_as_stored().lines().len();
        prop_assert_eq!(gone, r.removed.iter().sum::<usize>());
    }

    /// On a file that is UTF-8, the byte-level removal is the text model's, byte for byte.
    #[test]
    fn on_utf8_it_is_the_text_models_remove(stored in stored_file(true), names in wanted()) {
        let text = String::from_utf8(stored).unwrap();
        let r = remove(text.as_bytes(), &names).unwrap();
        let (rendered, counts) = removed_from_text(&text, &names);
        prop_assert_eq!(String::from_utf8(r.bytes).unwrap(), rendered);
        prop_assert_eq!(r.removed, counts);
        prop_assert!(r.not_utf8.is_empty());
    }
}

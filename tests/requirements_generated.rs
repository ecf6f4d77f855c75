//! Generated requirements files through parse → policy → render → installer text.
//!
//! Fragments: PEP 508 pieces, options (abbreviated, attached, `=`-joined), hashes, comments,
//! continuations, every line separator, controls, bidi controls, Unicode whitespace, homoglyphs,
//! deep markers and random text. Properties: nothing panics; parse → render is byte-identical; a
//! violation's line lies within the file; an accepted file's installer text re-parses to exactly
//! the entries the policy counted and holds no option the policy did not allow. Deep inputs parse
//! on a thread with a 256 KiB stack, proving the parser does not recurse with the input.
//! Seeds: proptest's default persistence (`proptest-regressions/`); cases per target below.

use bifrost_requirements::policy::Policy;
use bifrost_requirements::requirements::{Entry, FileOption, RequirementsFile};
use proptest::prelude::*;

const EVIL: &str = "http://127.0.0.1:9/simple/";

fn fragments() -> Vec<String> {
    let digest = "0123456789abcdef".repeat(4);
    let mut f: Vec<String> = [
        // PEP 508
        "bifrost-hello",
        "Flask_SQLAlchemy",
        "zope.interface",
        "x",
        "a1",
        "foo-",
        "foo-]",
        "foo.",
        "foo[bar]",
        "foo[bar-]",
        "[",
        "]",
        "(",
        ")",
        "==1.0",
        ">=1,<2",
        "~=3.1",
        "===x",
        " ",
        " ; ",
        ";",
        "python_version > \"3\"",
        "os_name == 'posix'",
        " and ",
        " or ",
        "extra == 'x'",
        "@",
        " @ ",
        "https://x/y.whl",
        "./pkg",
        "/opt/pkg",
        "git+https://x/y.git",
        "'",
        "\"",
        // options
        "-",
        "--",
        "-i",
        "-i ",
        "-ihttp://x/",
        "--index-url",
        "--index-url=",
        "--extra-index",
        "--extra-index-url ",
        "--ex",
        "--e",
        "--pr",
        "--pre",
        "--pre ",
        "--prefer-binary",
        "--only-binary",
        "--only-binary ",
        "--only-binary=:all:",
        "--only-binary :none:",
        "--no-binary=:none:",
        ":all:",
        ":none:",
        "--no-index",
        "--require-hashes",
        "-f ",
        "-r ",
        "-c ",
        "-e ",
        "-C",
        "--trusted-host ",
        "--use-feature ",
        "--global-option=x",
        "--config-settings=a=b",
        "--hash",
        "--hash=",
        "--has=",
        "sha256:",
        "md5:",
        "=",
        ",",
        "--find",
        "--pypi ",
        EVIL,
        // comments and continuations
        "#",
        " #",
        " # c",
        "# note",
        "\\",
        " \\",
        "\\\n",
        " \\\n",
        " \\\r\n",
        "${X}",
        "$",
        // line separators and other hazards
        "\n",
        "\n",
        "\n",
        "\r\n",
        "\r",
        "\u{0b}",
        "\u{0c}",
        "\u{1c}",
        "\u{1d}",
        "\u{1e}",
        "\u{85}",
        "\u{2028}",
        "\u{2029}",
        "\0",
        "\u{7f}",
        "\t",
        "\u{a0}",
        "\u{3000}",
        "\u{202e}",
        "\u{2066}",
        "\u{2069}",
        "\u{200f}",
        "\u{feff}",
        "\u{200b}",
        // homoglyphs: Cyrillic a, fullwidth and en-dash hyphens, fullwidth equals
        "fl\u{430}sk",
        "\u{2010}\u{2010}index-url",
        "\u{2013}i",
        "\u{ff1d}\u{ff1d}1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.push(format!("--hash=sha256:{digest}"));
    f.push(format!(" --hash sha256:{digest}"));
    f
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(fragments()),
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
        1 => proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => (0usize..80).prop_map(|n| format!("({}x{}", "(".repeat(n), ")".repeat(n))),
    ]
}

fn content() -> impl Strategy<Value = String> {
    proptest::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
}

/// Files that mostly pass the policy, so the accepted-file properties get exercised.
fn plausible() -> impl Strategy<Value = String> {
    let digest = "ab".repeat(32);
    let line = prop_oneof![
        Just("bifrost-hello".to_string()),
        Just("Flask_SQLAlchemy~=3.1 ; python_version >= \"3.9\"".to_string()),
        Just("zope.interface[test]>=1".to_string()),
        Just("# comment".to_string()),
        Just(String::new()),
        Just("--only-binary :all: --pre".to_string()),
        Just("--no-binary=a,b --prefer-binary".to_string()),
        Just("--require-hashes".to_string()),
        Just(format!(
            "pkg==1.0 \\\n    --hash=sha256:{digest} \\\n    --hash sha256:{digest}"
        )),
        Just(format!("pkg==1.0 --has=sha512:{}", "c".repeat(128))),
        Just("flask  # web".to_string()),
        Just(
            "foo ; (os_name == 'posix' or (python_version < '3.20' and extra == 'x'))".to_string()
        ),
    ];
    (
        proptest::collection::vec(line, 0..12),
        prop_oneof![Just("\n"), Just("\r\n")],
        any::<bool>(),
    )
        .prop_map(|(lines, eol, trailing)| {
            let mut s = lines.join(eol);
            if trailing {
                s.push_str(eol);
            }
            s
        })
}

/// A plausible file with a few fragments spliced in at random places: near misses.
fn mutated() -> impl Strategy<Value = String> {
    (
        plausible(),
        proptest::collection::vec((any::<prop::sample::Index>(), fragment()), 0..4),
    )
        .prop_map(|(mut s, inserts)| {
            for (at, frag) in inserts {
                let bounds: Vec<usize> = (0..=s.len()).filter(|i| s.is_char_boundary(*i)).collect();
                s.insert_str(bounds[at.index(bounds.len())], &frag);
            }
            s
        })
}

fn physical_lines(content: &str) -> usize {
    content.split_inclusive('\n').count().max(1)
}

/// The options the default policy allows.
fn allowed(opt: &FileOption) -> bool {
    matches!(
        opt,
        FileOption::NoIndex
            | FileOption::Pre
            | FileOption::PreferBinary
            | FileOption::RequireHashes
            | FileOption::OnlyBinary(_)
            | FileOption::NoBinary(_)
    )
}

fn requirement_entries(file: &RequirementsFile) -> Vec<(String, String, Vec<String>)> {
    file.lines()
        .iter()
        .filter_map(|l| match &l.entry {
            Entry::Requirement {
                name,
                spec,
                options,
                ..
            } => Some((name.clone(), spec.clone(), options.clone())),
            _ => None,
        })
        .collect()
}

fn option_entries(file: &RequirementsFile) -> Vec<FileOption> {
    file.lines()
        .iter()
        .flat_map(|l| match &l.entry {
            Entry::Options(o) => o.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// Every property for one file.
fn check(content: &str) -> Result<(), TestCaseError> {
    let file = RequirementsFile::parse(content);
    prop_assert_eq!(file.render(), content);
    match Policy::default().check(&file) {
        Err(violations) => {
            for v in &violations.0 {
                prop_assert!(
                    v.line >= 1 && v.line <= physical_lines(content),
                    "line {} outside the file: {}",
                    v.line,
                    v
                );
                prop_assert!(!v.reason.is_empty());
                prop_assert!(!v.text.chars().any(|c| c.is_control()));
            }
        }
        Ok(accepted) => {
            let text = &accepted.installer_text;
            prop_assert!(text.is_empty() || text.ends_with('\n'));
            prop_assert!(!text.contains('\r') && !text.contains('\\'));
            // No comments: a `#` may only sit inside a token (a marker string, a URL fragment).
            prop_assert!(
                text.lines()
                    .all(|l| !l.starts_with('#') && !l.contains(" #") && !l.contains("\t#")),
                "{:?}",
                text
            );
            let again = RequirementsFile::parse(text);
            prop_assert!(Policy::default().check(&again).is_ok(), "{:?}", text);
            prop_assert_eq!(again.package_count(), accepted.package_count);
            prop_assert_eq!(requirement_entries(&again), requirement_entries(&file));
            prop_assert_eq!(option_entries(&again), option_entries(&file));
            prop_assert!(option_entries(&again).iter().all(allowed), "{:?}", text);
            prop_assert_eq!(again.installer_text(), text.clone());
            // One line of the installer text per requirement and per option, nothing else.
            prop_assert_eq!(
                text.lines().count(),
                accepted.package_count + option_entries(&file).len()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn generated_fragments_never_panic_and_keep_the_properties(content in content()) {
        check(&content)?;
    }

    #[test]
    fn near_misses_of_valid_files_keep_the_properties(content in mutated()) {
        check(&content)?;
    }

    #[test]
    fn plausible_files_round_trip_through_the_installer_text(content in plausible()) {
        check(&content)?;
        prop_assert!(Policy::default().check_content(&content).is_ok(), "{:?}", content);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }
}

/// Parse and check on a thread whose stack is far smaller than the input's nesting would need.
fn on_small_stack(content: String) -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let file = RequirementsFile::parse(&content);
            let verdict = Policy::default().check(&file).map(|a| a.installer_text);
            (file.render() == content, verdict.map_err(|e| e.to_string()))
        })
        .unwrap()
        .join()
        .map_err(|_| "the parse panicked".to_string())
        .and_then(|(same, verdict)| {
            if same {
                verdict.map(|_| ())
            } else {
                Err("render differs".into())
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn deep_markers_parse_on_a_small_stack(depth in 0usize..6000, quoted in any::<bool>()) {
        let inner = if quoted { "python_version > \"(((\"" } else { "python_version > \"3\"" };
        let content = format!("alpha ; {}{inner}{}\n", "(".repeat(depth), ")".repeat(depth));
        let verdict = on_small_stack(content);
        if depth <= bifrost_requirements::requirements::MAX_NESTING {
            prop_assert_eq!(verdict, Ok(()));
        } else {
            let err = verdict.unwrap_err();
            prop_assert!(err.contains("line 1") && err.contains("levels"), "{}", err);
        }
    }
}

/// Every crasher and bypass found so far, by name.
#[test]
fn regressions() {
    let deep = format!(
        "alpha ; {}python_version > \"3\"{}\n",
        "(".repeat(3000),
        ")".repeat(3000)
    );
    let cases: &[(&str, &str)] = &[
        ("pep508_rs panic on a name ending in `-`", "foo-]\n"),
        ("pep508_rs panic on an extra ending in `-`", "foo[bar-]\n"),
        ("pep508_rs panic, name then space", "foo- ==1\n"),
        (
            "pep508_rs panic found by the database-row generator",
            "A-~\n",
        ),
        ("stack overflow on 3,000 nested parentheses", &deep),
        (
            "comment hides a CR-split option",
            "# note\r--extra-index-url http://x/\nbifrost-hello\n",
        ),
        (
            "continuation after an inline comment",
            "bifrost-hello # pinned \\\n--extra-index-url http://x/\n",
        ),
        (
            "two options on one line",
            "--only-binary :none: --extra-index-url http://x/\n",
        ),
        ("attached short value", "--no-binary=:none: -ihttp://x/\n"),
    ];
    for (name, content) in cases {
        let verdict = on_small_stack(content.to_string());
        let err = verdict.expect_err(name);
        assert!(err.contains("line 1"), "{name}: {err}");
        check(content).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Generated files that were right to pass, kept by name.
#[test]
fn accepted_regressions() {
    let cases: &[(&str, &str)] = &[(
        "`#` inside a marker string is not a comment (pip and uv agree)",
        "foo ; (os_name == '# noteposix' or extra == 'x')\n--only-binary :all: --pre\n",
    )];
    for (name, content) in cases {
        let ok = Policy::default()
            .check_content(content)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ok.installer_text.contains("'# noteposix'"), "{name}");
        check(content).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

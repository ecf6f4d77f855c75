//! The pure requirements model on a corpus of real-world requirements files.

use std::path::PathBuf;

use bifrost_requirements::policy::Policy;
use bifrost_requirements::requirements::{Entry, MergeOutcome, RequirementsFile, content_hash};

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/requirements");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 7, "corpus went missing");
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn parse_render_round_trip_is_byte_identical() {
    for (name, content) in corpus() {
        let file = RequirementsFile::parse(&content);
        assert_eq!(file.render(), content, "{name}");
        assert_eq!(
            content_hash(&file.render()),
            content_hash(&content),
            "{name}"
        );
        let invalid: Vec<_> = file
            .lines()
            .iter()
            .filter(|l| matches!(l.entry, Entry::Invalid(_)))
            .map(|l| (l.number, l.raw.clone(), l.entry.clone()))
            .collect();
        assert!(invalid.is_empty(), "{name}: {invalid:?}");
        Policy::default()
            .check(&file)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn corpus_is_understood() {
    let files: std::collections::HashMap<_, _> = corpus().into_iter().collect();
    let count = |n: &str| RequirementsFile::parse(&files[n]).package_count();
    assert_eq!(count("pip-freeze.txt"), 18);
    assert_eq!(count("pip-compile-hashes.txt"), 3);
    assert_eq!(count("crlf.txt"), 3);
    assert_eq!(count("mixed.txt"), 9);
    assert_eq!(count("no-trailing-newline.txt"), 2);
    assert_eq!(count("comments-only.txt"), 0);
    assert!(RequirementsFile::parse(&files["comments-only.txt"]).is_empty());
    assert_eq!(count("crlf-continuation.txt"), 2);

    // Names are PEP 503 normalized; continuation lines keep the first line's number.
    let mixed = RequirementsFile::parse(&files["mixed.txt"]);
    let names: Vec<(usize, &str)> = mixed.requirements().map(|(l, n)| (l.number, n)).collect();
    assert!(names.contains(&(6, "flask-sqlalchemy")), "{names:?}");
    assert!(names.contains(&(7, "zope-interface")), "{names:?}");
    assert!(names.contains(&(11, "pytz")), "{names:?}");
    assert!(names.contains(&(13, "importlib-metadata")), "{names:?}");
    assert!(names.contains(&(15, "typing-extensions")), "{names:?}");
    let hashes = RequirementsFile::parse(&files["pip-compile-hashes.txt"]);
    let (certifi, _) = hashes.requirements().next().unwrap();
    assert_eq!(certifi.number, 7);
    match &certifi.entry {
        Entry::Requirement { options, spec, .. } => {
            assert_eq!(spec, "certifi==2024.7.4");
            assert_eq!(options.len(), 2);
            assert!(options[0].starts_with("--hash=sha256:5a1e"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn merge_replaces_same_normalized_name() {
    let mut file = RequirementsFile::parse("# deps\nFlask==2.3\nrequests\n");
    assert_eq!(
        file.merge("flask==3.0").unwrap(),
        MergeOutcome::Replaced {
            previous: "Flask==2.3".into()
        }
    );
    assert_eq!(file.render(), "# deps\nflask==3.0\nrequests\n");
    assert_eq!(file.merge("flask==3.0").unwrap(), MergeOutcome::Unchanged);
    assert_eq!(file.merge("Flask_SQLAlchemy").unwrap(), MergeOutcome::Added);
    assert_eq!(
        file.render(),
        "# deps\nflask==3.0\nrequests\nFlask_SQLAlchemy\n"
    );
    // flask-sqlalchemy is the same package as Flask_SQLAlchemy.
    file.merge("flask-sqlalchemy>=3").unwrap();
    assert_eq!(
        file.render(),
        "# deps\nflask==3.0\nrequests\nflask-sqlalchemy>=3\n"
    );
}

#[test]
fn merge_collapses_duplicates_and_keeps_line_endings() {
    let mut file = RequirementsFile::parse("a==1\r\nb==1\r\na==2\r\n");
    file.merge("a==3").unwrap();
    assert_eq!(file.render(), "a==3\r\nb==1\r\n");
    file.merge("c").unwrap();
    assert_eq!(file.render(), "a==3\r\nb==1\r\nc\r\n");

    // A missing final newline is added before appending; a hashed entry is replaced whole.
    let mut file = RequirementsFile::parse("x==1 \\\n    --hash=sha256:abc\ny==1");
    file.merge("z").unwrap();
    assert_eq!(file.render(), "x==1 \\\n    --hash=sha256:abc\ny==1\nz\n");
    file.merge("x==2").unwrap();
    assert_eq!(file.render(), "x==2\ny==1\nz\n");
    assert_eq!(file.lines()[1].number, 2);
}

#[test]
fn merge_rejects_what_is_not_one_requirement() {
    let mut file = RequirementsFile::parse("a\n");
    for bad in [
        "flask\n-i https://evil.example/simple",
        "flask\r",
        "-e .",
        "--index-url=https://x",
        "",
        "# comment",
        "flask[",
        "flask \\",
    ] {
        let err = file.merge(bad).expect_err(bad);
        assert!(!err.reason.is_empty(), "{bad}");
    }
    assert_eq!(file.render(), "a\n", "a rejected merge changed the file");
}

#[test]
fn remove_by_normalized_name() {
    let mut file =
        RequirementsFile::parse("Flask==3.0\n# keep\nrequests\nflask ; python_version<'3'\n");
    assert_eq!(file.remove("FLASK").unwrap(), 2);
    assert_eq!(file.render(), "# keep\nrequests\n");
    assert_eq!(file.remove("numpy").unwrap(), 0);
    assert!(file.remove("not a name!").is_err());
}

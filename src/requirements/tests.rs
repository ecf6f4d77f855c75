use super::*;

#[test]
fn hash_matches_python_hashlib() {
    // Values printed by python3: hashlib.sha256(s.encode()).hexdigest()
    assert_eq!(
        content_hash("requests==2.32.3\n"),
        "4b8183101fd19f071771805a42a31fbb234a7961921fdb8b783a279755a1b5d5"
    );
    assert_eq!(
        content_hash("é\r\n"),
        "64da669b12bbeda0ca8f2840891bd8834e5b8206f24c7703e20ac1d472612b0e"
    );
    assert_eq!(
        content_hash(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn prefixed_hashes_compare_equal() {
    let h = content_hash("x");
    assert!(hashes_equal(&format!("sha256:{h}"), &h));
    assert!(hashes_equal(&h.to_uppercase(), &h));
    assert!(hash_matches("x", &format!("sha256:{h}")));
    assert!(!hash_matches("y", &h));
}

#[test]
fn each_requirement_alone_keeps_every_option_line_and_its_own_hashes() {
    let file = RequirementsFile::parse(
        "# tools\n--index-url https://idx.example/simple\nFlask_Login==0.6 --hash=sha256:aa\n\
         --only-binary :all:\nrequests>=2  # http\n",
    );
    let each = file.installer_texts_each();
    let names: Vec<_> = each.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["flask-login", "requests"]);
    assert_eq!(each[0].spec, "Flask_Login==0.6");
    assert_eq!(
        each[0].text(),
        "--index-url=https://idx.example/simple\n--only-binary=:all:\n\
         Flask_Login==0.6 --hash=sha256:aa\n"
    );
    assert_eq!(
        each[1].text(),
        "--index-url=https://idx.example/simple\n--only-binary=:all:\nrequests>=2\n"
    );
    assert!(
        RequirementsFile::parse("# none\n-i https://x/\n")
            .installer_texts_each()
            .is_empty()
    );
}

#[test]
fn each_requirement_alone_shares_one_rendering_of_the_options() {
    // Work counted, not timed: n requirements and n option lines render the options once, and
    // each single adds only its own line (quadratic before: every single held every option).
    let n = 4000;
    let mut content = String::new();
    for i in 0..n {
        content.push_str(&format!(
            "--extra-index-url=http://127.0.0.1:9/{i}/\npkg{i}==1.0\n"
        ));
    }
    let each = RequirementsFile::parse(&content).installer_texts_each();
    assert_eq!(each.len(), n);
    let shared = &each[0].options;
    assert!(
        each.iter()
            .all(|s| std::sync::Arc::ptr_eq(&s.options, shared))
    );
    assert!(shared.len() < content.len());
    let own: usize = each.iter().map(|s| s.line.len()).sum();
    assert!(
        own < content.len(),
        "{own} bytes of own lines for {} bytes",
        content.len()
    );
    assert_eq!(each[7].line, "pkg7==1.0\n");
    assert!(
        each[7]
            .text()
            .ends_with("--extra-index-url=http://127.0.0.1:9/3999/\npkg7==1.0\n")
    );
}

mod continuations {
    use proptest::prelude::*;

    use super::*;

    /// Lines the policy accepts, with specifiers, extras, markers and hashes.
    const LINES: [&str; 6] = [
        "goodpkg==2.0",
        "goodpkg>=1.0,<3",
        "goodpkg[extra]~=2.1 ; python_version >= \"3\" and os_name == 'posix'",
        "Good_Pkg ==1.0 --hash=sha256:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
        "goodpkg ; sys_platform == \"linux\"",
        "--only-binary :all:",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// pip joins `\` + newline by dropping both, wherever it stands: the continued file is
        /// read as the joined one, by the policy and by what the installers and the resolver get.
        #[test]
        fn a_continued_line_reads_as_the_joined_one(
            picks in proptest::collection::vec((0..LINES.len(), proptest::collection::vec(any::<prop::sample::Index>(), 0..4), any::<bool>()), 1..5)
        ) {
            let (mut joined, mut continued) = (String::new(), String::new());
            for (pick, cuts, crlf) in picks {
                let line = LINES[pick];
                let eol = if crlf { "\r\n" } else { "\n" };
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(line.len() + 1)).collect();
                at.sort_unstable();
                at.dedup();
                let mut last = 0;
                for cut in at {
                    continued.push_str(&line[last..cut]);
                    continued.push('\\');
                    continued.push_str(eol);
                    last = cut;
                }
                continued.push_str(&line[last..]);
                continued.push_str(eol);
                joined.push_str(line);
                joined.push_str(eol);
            }
            let policy = crate::policy::Policy::default();
            let a = policy.check_content(&joined).expect("the joined file is accepted");
            let b = policy.check_content(&continued);
            prop_assert!(b.is_ok(), "{continued:?}: {:?}", b.err());
            let b = b.unwrap();
            prop_assert_eq!(&a.installer_text, &b.installer_text);
            prop_assert_eq!(a.package_count, b.package_count);
            prop_assert!(!b.installer_text.contains('\\'));
            prop_assert_eq!(RequirementsFile::parse(&continued).render(), continued);
        }
    }
}

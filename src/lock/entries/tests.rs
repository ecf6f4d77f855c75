use super::*;

fn hash(byte: &str) -> String {
    format!("sha256:{}", byte.repeat(32))
}

#[test]
fn uv_output_gives_each_pin_its_hashes_and_parents() {
    let body = format!(
        "evil==1.0 \\\n    --hash={}\n    # via goodpkg\n\
         Good_Pkg==1.0 \\\n    --hash={} \\\n    --hash={}\n    # via\n    #   -r requirements.txt\n    #   flask[async]\n",
        hash("0a"),
        hash("1B"),
        hash("2c")
    );
    let pins = parse(&body).unwrap();
    assert_eq!(pins.len(), 2);
    assert_eq!((pins[0].line, pins[0].pin()), (1, "evil==1.0".to_string()));
    assert_eq!(pins[0].hashes, [hash("0a")]);
    assert_eq!(pins[0].via, [Via::Package("goodpkg".into())]);
    assert_eq!(pins[1].name, "good-pkg");
    assert_eq!(pins[1].line, 4);
    assert_eq!(pins[1].hashes, [hash("1b"), hash("2c")], "lowercased");
    assert_eq!(
        pins[1].via,
        [Via::Requirements, Via::Package("flask".into())]
    );
}

#[test]
fn a_hash_on_the_pins_own_line_counts_and_comments_between_pins_are_skipped() {
    let body = format!("# a comment\nalpha==2.0 --hash={}\n\n", hash("aa"));
    let pins = parse(&body).unwrap();
    assert_eq!(pins[0].hashes, [hash("aa")]);
    assert!(pins[0].via.is_empty());
    assert!(parse("").unwrap().is_empty());
}

#[test]
fn what_is_not_a_pin_is_named_with_its_line() {
    for (body, expected) in [
        (
            "alpha>=1.0\n",
            "line 1: \"alpha>=1.0\" is not one exact version",
        ),
        ("alpha\n", "line 1: \"alpha\" pins no version"),
        (
            "alpha==1.0\n    -e .\n",
            "line 2: \"-e .\" is neither a hash nor a comment",
        ),
        (
            "    --hash=sha256:00\n",
            "line 1: \"--hash=sha256:00\" belongs to no pin",
        ),
        (
            "alpha==1.0 --index-url=x\n",
            "line 1: \"--index-url=x\" after the pin",
        ),
        (
            "alpha==1.0\n    # via -\n",
            "line 2: `# via -` names no package",
        ),
        ("==1.0\n", "line 1: \"==1.0\" is not a pin"),
    ] {
        let err = parse(body).unwrap_err();
        assert!(err.contains(expected), "{body:?}: {err}");
    }
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{0,6}([-_.][a-z0-9]{1,4})?"
    }

    fn version() -> impl Strategy<Value = String> {
        "[0-9]{1,2}(\\.[0-9]{1,2}){0,2}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text read as a lock body gives pins or a reason naming a line, never a panic.
        #[test]
        fn any_text_gives_pins_or_a_reason(text in "(\\PC|[ \\n\\\\#=-]){0,200}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.starts_with("line "), "{e}");
            }
        }

        /// What uv writes parses back to its names, versions, hashes and parents.
        #[test]
        fn rendered_pins_parse_back(
            pins in proptest::collection::vec((name(), version(), proptest::collection::vec("[0-9a-f]{64}", 1..3), proptest::collection::vec(name(), 0..3), any::<bool>()), 1..6)
        ) {
            let mut body = String::new();
            for (n, v, hashes, parents, direct) in &pins {
                body.push_str(&format!("{n}=={v}"));
                for h in hashes {
                    body.push_str(&format!(" \\\n    --hash=sha256:{h}"));
                }
                body.push('\n');
                let mut via: Vec<String> = parents.clone();
                if *direct {
                    via.insert(0, "-r requirements.txt".into());
                }
                match via.as_slice() {
                    [] => {}
                    [one] => body.push_str(&format!("    # via {one}\n")),
                    many => {
                        body.push_str("    # via\n");
                        for v in many {
                            body.push_str(&format!("    #   {v}\n"));
                        }
                    }
                }
            }
            let parsed = parse(&body).unwrap();
            prop_assert_eq!(parsed.len(), pins.len());
            for (p, (n, v, hashes, parents, direct)) in parsed.iter().zip(&pins) {
                prop_assert_eq!(&p.name, &crate::requirements::normalize_name(n).unwrap());
                prop_assert_eq!(p.version.to_string(), Version::from_str(v).unwrap().to_string());
                let want: Vec<String> = hashes.iter().map(|h| format!("sha256:{h}")).collect();
                prop_assert_eq!(&p.hashes, &want);
                prop_assert_eq!(p.via.contains(&Via::Requirements), *direct);
                prop_assert_eq!(p.via.len(), parents.len() + usize::from(*direct));
            }
        }
    }
}

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

use proptest::prelude::*;

use super::*;

fn h(c: char) -> String {
    c.to_string().repeat(64)
}

/// A requirements-format body as uv writes it: two pins, several hashes each.
fn body() -> String {
    format!(
        "foo-bar==1.0 \\\n    --hash=sha256:{} \\\n    --hash=sha256:{} \\\n    --hash=sha256:{}\n    \
         # via -r requirements.txt\nnumpy==2.3.5 \\\n    --hash=sha256:{} \\\n    --hash=sha256:{}\n    \
         # via\n    #   -r requirements.txt\n    #   foo-bar\n",
        h('a'),
        h('b'),
        h('c'),
        h('d'),
        h('e')
    )
}

fn pylock(foo_hashes: &[char], numpy_hash: char) -> String {
    let wheels: Vec<String> = foo_hashes
        .iter()
        .map(|c| {
            format!(
                "{{ name = \"w{c}.whl\", hashes = {{ sha256 = \"{}\" }} }}",
                h(*c)
            )
        })
        .collect();
    format!(
        "lock-version = \"1.0\"\ncreated-by = \"uv\"\n\n[[packages]]\nname = \"Foo_Bar\"\n\
         version = \"1.0\"\nwheels = [{}]\n\n[[packages]]\nname = \"numpy\"\nversion = \"2.3.5\"\n\
         sdist = {{ url = \"https://x/numpy.tar.gz\", hashes = {{ sha256 = \"{}\" }} }}\n",
        wheels.join(", "),
        h(numpy_hash)
    )
}

#[test]
fn keeps_only_the_listed_files_and_the_annotations() {
    let compatible = compatible(&pylock(&['b'], 'E')).unwrap();
    let filtered = filter(&body(), &compatible).unwrap();
    let expected = format!(
        "foo-bar==1.0 \\\n    --hash=sha256:{}\n    # via -r requirements.txt\nnumpy==2.3.5 \\\n    \
         --hash=sha256:{}\n    # via\n    #   -r requirements.txt\n    #   foo-bar\n",
        h('b'),
        h('e')
    );
    assert_eq!(filtered.body, expected);
    assert_eq!((filtered.kept, filtered.total), (2, 5));
    let pins = entries::parse(&filtered.body).unwrap();
    assert_eq!(pins[1].via.len(), 2, "{pins:?}");
    let note = note("3.14", "x86_64-manylinux_2_28", &filtered);
    assert!(!note.contains(": "), "{note}");
    assert!(note.contains("2 of 5 files"), "{note}");
}

#[test]
fn several_files_of_one_pin_are_kept_in_the_lock_order() {
    let compatible = compatible(&pylock(&['c', 'a'], 'd')).unwrap();
    let filtered = filter(&body(), &compatible).unwrap();
    let pins = entries::parse(&filtered.body).unwrap();
    assert_eq!(
        pins[0].hashes,
        [format!("sha256:{}", h('a')), format!("sha256:{}", h('c'))]
    );
}

#[test]
fn a_pin_the_pylock_does_not_list_is_named() {
    let only_numpy = format!(
        "[[packages]]\nname = \"numpy\"\nversion = \"2.3.5\"\nwheels = [{{ hashes = {{ sha256 = \"{}\" }} }}]\n",
        h('d')
    );
    let err = filter(&body(), &compatible(&only_numpy).unwrap()).unwrap_err();
    assert!(err.contains("foo-bar==1.0"), "{err}");
    // Another version of the same name is not the pin.
    let other = pylock(&['a'], 'd').replace("version = \"1.0\"", "version = \"1.0.1\"");
    let err = filter(&body(), &compatible(&other).unwrap()).unwrap_err();
    assert!(err.contains("foo-bar==1.0 is not among"), "{err}");
}

#[test]
fn a_pin_left_without_a_hash_is_named() {
    let err = filter(&body(), &compatible(&pylock(&['f'], 'd')).unwrap()).unwrap_err();
    assert!(
        err.contains("foo-bar==1.0: none of its 3 hash(es)"),
        "{err}"
    );
}

#[test]
fn extra_packages_and_versions_one_dot_zero_spelled_differently_match() {
    let text = format!(
        "{}\n[[packages]]\nname = \"extra\"\nversion = \"9\"\nwheels = []\n",
        pylock(&['a'], 'd').replace("version = \"1.0\"", "version = \"1.0.0\"")
    );
    let filtered = filter(&body(), &compatible(&text).unwrap()).unwrap();
    assert_eq!((filtered.kept, filtered.total), (2, 5));
}

#[test]
fn hostile_pylocks_say_what_is_wrong() {
    let cases: [(&str, &str); 10] = [
        ("[[packages]\nname=", "not TOML"),
        ("packages = 3", "not an array of tables"),
        ("[[packages]]\nversion = \"1\"", "no string `name`"),
        (
            "[[packages]]\nname = 7\nversion = \"1\"",
            "no string `name`",
        ),
        ("[[packages]]\nname = \"a\"\nversion = \"x y\"", "version"),
        ("[[packages]]\nname = \"a b\"\nversion = \"1\"", "name"),
        (
            "[[packages]]\nname = \"a\"\nversion = \"1\"\nwheels = 3",
            "not an array",
        ),
        (
            "[[packages]]\nname = \"a\"\nversion = \"1\"\nwheels = [3]",
            "not a table",
        ),
        (
            "[[packages]]\nname = \"a\"\nversion = \"1\"\nwheels = [{ name = \"a.whl\" }]",
            "a.whl has no sha256",
        ),
        (
            "[[packages]]\nname = \"a\"\nversion = \"1\"\nsdist = { hashes = { sha256 = \"zz\" } }",
            "is not a SHA-256",
        ),
    ];
    for (text, says) in cases {
        let err = compatible(text).unwrap_err();
        assert!(err.contains(says), "{text:?}: {err}");
    }
    assert_eq!(compatible("").unwrap(), Compatible::default());
}

#[test]
fn a_body_that_is_not_a_lock_is_refused() {
    let err = filter("not a pin at all ===\n", &Compatible::default()).unwrap_err();
    assert!(err.contains("line 1"), "{err}");
}

proptest! {
    /// Whatever the text, reading a pylock and filtering with it never panics.
    #[test]
    fn arbitrary_pylocks_never_panic(text in "\\PC{0,200}") {
        if let Ok(c) = compatible(&text) {
            let _ = filter(&body(), &c);
        }
    }

    /// Generated pylocks: a filtered lock keeps exactly the listed hashes of each pin.
    #[test]
    fn filtered_pins_keep_exactly_the_listed_hashes(
        foo in proptest::sample::subsequence(vec!['a', 'b', 'c', 'f'], 0..=4),
        numpy in proptest::sample::select(vec!['d', 'e', 'f']),
    ) {
        let result = filter(&body(), &compatible(&pylock(&foo, numpy)).unwrap());
        let foo_kept: Vec<char> = foo.iter().copied().filter(|c| *c != 'f').collect();
        if foo_kept.is_empty() || numpy == 'f' {
            prop_assert!(result.is_err());
        } else {
            let filtered = result.unwrap();
            let pins = entries::parse(&filtered.body).unwrap();
            let mut want: Vec<String> = foo_kept.iter().map(|c| format!("sha256:{}", h(*c))).collect();
            want.sort();
            prop_assert_eq!(&pins[0].hashes, &want);
            prop_assert_eq!(&pins[1].hashes, &vec![format!("sha256:{}", h(numpy))]);
            prop_assert_eq!(filtered.kept, want.len() + 1);
        }
    }
}

#[test]
fn the_pylock_run_is_the_same_compile_written_elsewhere() {
    let compile = Invocation {
        label: "uv",
        program: "uv".into(),
        args: [
            "pip",
            "compile",
            "--generate-hashes",
            "-o",
            "/w/requirements.lock",
            "requirements.txt",
        ]
        .map(OsString::from)
        .to_vec(),
        env_remove: Vec::new(),
        clean_env: None,
        env: vec![("HTTPS_PROXY", "http://127.0.0.1:1".into())],
        netrc: None,
        memory_limit: Some(1),
        cwd: "/w".into(),
    };
    let run = pylock_invocation(&compile, Path::new("/w/pylock.toml"));
    let args: Vec<&str> = run.args.iter().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(
        args,
        [
            "pip",
            "compile",
            "--generate-hashes",
            "-o",
            "/w/pylock.toml",
            "--format",
            "pylock.toml",
            "requirements.txt"
        ]
    );
    assert_eq!(
        (run.env, run.memory_limit),
        (compile.env, compile.memory_limit)
    );
}

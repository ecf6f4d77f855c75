//! The corpus of the differential test: tricky requirements files and what the policy must
//! say about each (accepted and installed, refused, or a known bypass of the raw installers).

use std::collections::BTreeSet;

/// What the corpus says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Accepted; `installs`: our `install` succeeds with both installers.
    Accept { installs: bool },
    /// Refused by the policy.
    Reject,
    /// A known bypass: refused by us, but raw uv / raw pip reach the trap.
    Bypass { uv: bool, pip: bool },
}

pub struct Case {
    pub name: String,
    pub content: String,
    pub expect: Expect,
}

pub fn corpus(legit: &str, trap: &str, hello_hash: &str) -> Vec<Case> {
    let (l, t, h) = (legit, trap, hello_hash);
    let accept = |installs| Expect::Accept { installs };
    let mut cases: Vec<(String, String, Expect)> = vec![
        ("plain".into(), "bifrost-hello\n".into(), accept(true)),
        (
            "crlf".into(),
            "bifrost-hello==1.0\r\nbifrost-other\r\n".into(),
            accept(true),
        ),
        (
            "comment-mentions-trap".into(),
            format!("# mirror: --extra-index-url {t}\nbifrost-hello\n"),
            accept(true),
        ),
        (
            "inline-comment-option".into(),
            format!("bifrost-hello  # -i {t}\n"),
            accept(true),
        ),
        (
            "marker-then-comment".into(),
            format!("bifrost-hello ; python_version >= \"3\"  # --extra-index-url={t}\n"),
            accept(true),
        ),
        (
            "hashes-continued".into(),
            format!("bifrost-hello==1.0 \\\n    --hash=sha256:{h} \\\n    --hash sha256:{h}\n"),
            accept(true),
        ),
        (
            "continued-version".into(),
            "bifrost-hello \\\n==1.0\n".into(),
            accept(true),
        ),
        (
            "continued-specifier".into(),
            "bifrost-hello>=1.0,\\\n<3\nbifrost-other\n".into(),
            accept(true),
        ),
        (
            "continued-marker".into(),
            "bifrost-hello ; python_version \\\n>= \"3\"\n".into(),
            accept(true),
        ),
        (
            "hash-abbreviated".into(),
            format!("bifrost-hello==1.0 --has=sha256:{h}\n"),
            accept(true),
        ),
        (
            "two-options-one-line".into(),
            "--only-binary :all: --prefer-binary\nbifrost-hello\n".into(),
            accept(true),
        ),
        (
            "allowed-index-abbreviated".into(),
            format!("--index {l}\nbifrost-hello\n"),
            accept(true),
        ),
        (
            "allowed-index-attached".into(),
            format!("-i{l}\nbifrost-hello\n"),
            accept(true),
        ),
        (
            "quoted-value".into(),
            "--only-binary ':all:'\nbifrost-hello\n".into(),
            accept(true),
        ),
        (
            "no-trailing-newline".into(),
            "bifrost-other\nbifrost-hello".into(),
            accept(true),
        ),
        (
            "continuation-then-comment-line".into(),
            "bifrost-hello \\\n# trailing comment\nbifrost-other\n".into(),
            accept(true),
        ),
        (
            "tabs".into(),
            "bifrost-hello\t# tab comment\n\t--pre\n".into(),
            accept(true),
        ),
        (
            "false-marker".into(),
            "bifrost-other ; python_version < \"2\"\nbifrost-hello\n".into(),
            accept(true),
        ),
        (
            "require-hashes".into(),
            format!("--require-hashes\nbifrost-hello==1.0 --hash=sha256:{h}\n"),
            accept(true),
        ),
        (
            "option-text-in-marker".into(),
            format!("bifrost-hello ; platform_release != \"--extra-index-url {t}\"\n"),
            accept(true),
        ),
        (
            "no-binary-other".into(),
            "--no-binary=bifrost-other\nbifrost-hello\n".into(),
            accept(true),
        ),
        // Refused: every line separator pip or uv splits at, controls, bidi, comments with
        // continuations, options where only --hash may stand, abbreviations, attached values.
        ("nul".into(), "bifrost-hello\0\n".into(), Expect::Reject),
        (
            "bidi".into(),
            format!("bifrost-hello # \u{202e}{t}\n"),
            Expect::Reject,
        ),
        (
            "nbsp-comment".into(),
            format!("bifrost-hello\u{a0}# -i {t}\n"),
            Expect::Reject,
        ),
        (
            "full-comment-continuation".into(),
            format!("# note \\\n--extra-index-url {t}\nbifrost-hello\n"),
            Expect::Reject,
        ),
        (
            "hash-then-option".into(),
            format!("bifrost-hello --hash=sha256:{h} --extra-index-url={t}\n"),
            Expect::Reject,
        ),
        (
            "option-after-requirement".into(),
            format!("bifrost-hello -i {t}\n"),
            Expect::Reject,
        ),
        (
            "find-links".into(),
            format!("--find-links {t}\nbifrost-hello\n"),
            Expect::Reject,
        ),
        (
            "find-abbreviated-after-pre".into(),
            format!("--pre --find {t}\nbifrost-hello\n"),
            Expect::Reject,
        ),
        (
            "find-attached".into(),
            format!("-f{t}\nbifrost-hello\n"),
            Expect::Reject,
        ),
        (
            "trusted-host".into(),
            "--trusted-host 127.0.0.1\nbifrost-hello\n".into(),
            Expect::Reject,
        ),
        (
            "url-requirement".into(),
            format!("bifrost-hello @ {t}../files/bifrost_hello-6.6-py3-none-any.whl\n"),
            Expect::Reject,
        ),
        (
            "homoglyph".into(),
            "bifrost-h\u{435}llo\n".into(),
            Expect::Reject,
        ),
        ("panicking-name".into(), "foo-]\n".into(), Expect::Reject),
        (
            "deep-marker".into(),
            format!(
                "bifrost-hello ; {}python_version > \"3\"{}\n",
                "(".repeat(3000),
                ")".repeat(3000)
            ),
            Expect::Reject,
        ),
        (
            "hash-in-options-line".into(),
            format!("--hash=sha256:{h}\nbifrost-hello\n"),
            Expect::Reject,
        ),
        (
            "ambiguous".into(),
            "--e x\nbifrost-hello\n".into(),
            Expect::Reject,
        ),
        (
            "value-hash-sign".into(),
            format!("--only-binary=:all:#x --extra-index-url {t}\nbifrost-hello\n"),
            Expect::Reject,
        ),
        // The findings: raw uv and/or pip apply an option that the old reading did not see.
        (
            "cr-in-comment".into(),
            format!("# note\r--extra-index-url {t}\nbifrost-hello\n"),
            Expect::Bypass {
                uv: true,
                pip: true,
            },
        ),
        (
            "inline-comment-continuation".into(),
            format!("bifrost-hello # pinned \\\n--extra-index-url {t}\n"),
            Expect::Bypass {
                uv: true,
                pip: false,
            },
        ),
        (
            "only-binary-then-extra-index".into(),
            format!("--only-binary :none: --extra-index-url {t}\nbifrost-hello\n"),
            Expect::Bypass {
                uv: false,
                pip: true,
            },
        ),
        (
            "no-binary-then-short-index".into(),
            format!("--no-binary=:none: -i {t}\nbifrost-hello\n"),
            Expect::Bypass {
                uv: false,
                pip: true,
            },
        ),
        (
            "abbreviated-extra-index".into(),
            format!("--extra-index {t}\nbifrost-hello\n"),
            Expect::Bypass {
                uv: false,
                pip: true,
            },
        ),
        (
            "attached-short-index".into(),
            format!("-i{t}\nbifrost-hello\n"),
            Expect::Bypass {
                uv: false,
                pip: true,
            },
        ),
    ];
    // Every separator Python's splitlines knows, hiding an option inside a comment.
    for sep in [
        '\r', '\u{0b}', '\u{0c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}',
    ] {
        let expect = if sep == '\r' {
            Expect::Bypass {
                uv: true,
                pip: true,
            }
        } else {
            Expect::Bypass {
                uv: false,
                pip: true,
            }
        };
        cases.push((
            format!("separator-U+{:04X}", sep as u32),
            format!("# note{sep}--extra-index-url {t}\nbifrost-hello\n"),
            expect,
        ));
    }
    // Generated variants of accepted lines (fixed seed): order, line endings, comments.
    let lines = [
        "bifrost-hello".to_string(),
        "bifrost-other>=1".to_string(),
        format!("# --extra-index-url {t}"),
        String::new(),
        "--prefer-binary".to_string(),
        format!("bifrost-hello==1.0 --hash=sha256:{h}"),
        "bifrost-other  # -f x".to_string(),
    ];
    let mut seed: u64 = 0x5eed_b1f0;
    for n in 0..3 {
        let mut content = String::new();
        let mut names = BTreeSet::new();
        for _ in 0..5 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let line = &lines[(seed >> 33) as usize % lines.len()];
            // One spelling of bifrost-hello only, so the pins cannot conflict.
            let key = line.split(['=', '>', ' ']).next().unwrap_or("");
            if key.starts_with("bifrost") && !names.insert(key.to_string()) {
                continue;
            }
            content.push_str(line);
            content.push_str(if seed & 1 == 0 { "\n" } else { "\r\n" });
        }
        // pip's hash-checking mode (any --hash) needs every requirement pinned with ==.
        let installs = !content.contains("--hash") || names.len() == 1;
        cases.push((format!("generated-{n}"), content, accept(installs)));
    }
    cases
        .into_iter()
        .map(|(name, content, expect)| Case {
            name,
            content,
            expect,
        })
        .collect()
}

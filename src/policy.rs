//! The requirements policy: pure, no I/O.
//!
//! A requirements file is user input that ends in code execution inside every worker, so both the
//! controller (before anything reaches Redis or triggers a rollout) and the installer (before
//! anything runs) check it. By default only plain named requirements from the installer's
//! configured index are allowed; an administrator can allow specific index URLs and source builds.

use std::fmt;

use crate::requirements::{Entry, FileOption, Line, RequirementsFile};

/// What the administrator allows beyond the safe default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Index URLs that `-i/--index-url/--extra-index-url` lines may name (exact match after
    /// trimming a trailing `/`).
    pub allowed_index_urls: Vec<String>,
    /// Forbid source distributions (`--no-binary` lines are rejected when set).
    pub only_binary: bool,
}

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// 1-based line number in the file.
    pub line: usize,
    /// The offending text (continuations joined, comment dropped).
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: `{}`: {}", self.line, self.text, self.reason)
    }
}

/// Every rejected line of a file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    pub fn first(&self) -> &Violation {
        &self.0[0]
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "requirements.txt rejected ({n} problem{}): ",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// What a file that passed the policy asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub package_count: usize,
    /// Index URLs the file selects (all on the allow-list).
    pub index_urls: Vec<String>,
    /// What the installers receive ([`RequirementsFile::installer_text`]): exactly the
    /// requirements and options checked here, one per line, in canonical spelling.
    pub installer_text: String,
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/')
}

impl Policy {
    /// Check a whole file. Returns every violation, each naming its line.
    pub fn check(&self, file: &RequirementsFile) -> Result<Accepted, Violations> {
        let mut violations = Vec::new();
        let mut index_urls = Vec::new();
        for line in file.lines() {
            match self.check_line(line) {
                Ok(urls) => index_urls.extend(urls),
                Err(reason) => violations.push(Violation {
                    line: line.number,
                    text: line.text(),
                    reason,
                }),
            }
        }
        if violations.is_empty() {
            Ok(Accepted {
                package_count: file.package_count(),
                index_urls,
                installer_text: file.installer_text(),
            })
        } else {
            Err(Violations(violations))
        }
    }

    /// Parse and check text in one go.
    pub fn check_content(&self, content: &str) -> Result<Accepted, Violations> {
        self.check(&RequirementsFile::parse(content))
    }

    /// The index URLs an allowed line selects (usually none).
    fn check_line(&self, line: &Line) -> Result<Vec<String>, String> {
        if line.raw.contains("${") {
            return Err("environment variable expansion (`${…}`) is not allowed".into());
        }
        match &line.entry {
            Entry::Blank | Entry::Comment => Ok(Vec::new()),
            Entry::Invalid(reason) => Err(reason.clone()),
            Entry::Location(loc) => Err(location_reason(loc)),
            Entry::Requirement { url, options, .. } => {
                if let Some(url) = url {
                    return Err(location_reason(url));
                }
                // The parser has checked each option's value (`--hash=algo:hex`).
                for opt in options {
                    if !opt.starts_with("--hash=") {
                        let flag = opt.split('=').next().unwrap_or(opt);
                        return Err(format!(
                            "per-requirement option {flag} is not allowed (only --hash is)"
                        ));
                    }
                }
                Ok(Vec::new())
            }
            // pip applies every option on a line, so every one must pass.
            Entry::Options(opts) => opts
                .iter()
                .filter_map(|opt| self.check_option(opt).transpose())
                .collect(),
        }
    }

    fn check_option(&self, opt: &FileOption) -> Result<Option<String>, String> {
        let flag = opt.flag();
        match opt {
            FileOption::IndexUrl(url) | FileOption::ExtraIndexUrl(url) => {
                if self.allowed_index_urls.iter().any(|a| same_url(a, url)) {
                    Ok(Some(url.clone()))
                } else if self.allowed_index_urls.is_empty() {
                    Err(format!(
                        "{flag} overrides the package index; index URLs must be allowed by the administrator"
                    ))
                } else {
                    Err(format!(
                        "{flag} {url} is not one of the allowed index URLs ({})",
                        self.allowed_index_urls.join(", ")
                    ))
                }
            }
            FileOption::FindLinks(_) => Err(format!(
                "{flag} adds a package source; only the configured index may be used"
            )),
            FileOption::TrustedHost(_) => Err(format!("{flag} disables TLS verification")),
            FileOption::Editable(_) => Err(format!(
                "{flag} installs from a local path or VCS checkout (editable installs are not allowed)"
            )),
            FileOption::Requirement(_) | FileOption::Constraint(_) => Err(format!(
                "{flag} includes another file; includes are not allowed"
            )),
            FileOption::NoBinary(_) if self.only_binary => Err(format!(
                "{flag} forces a source build, but only binary wheels are allowed"
            )),
            FileOption::UseFeature(_) => Err(format!("{flag} changes the installer's behaviour")),
            FileOption::NoIndex
            | FileOption::Pre
            | FileOption::PreferBinary
            | FileOption::RequireHashes
            | FileOption::OnlyBinary(_)
            | FileOption::NoBinary(_) => Ok(None),
        }
    }
}

fn location_reason(loc: &str) -> String {
    let lower = loc.to_ascii_lowercase();
    if ["git+", "hg+", "svn+", "bzr+"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        "VCS requirements are not allowed; install by package name from the configured index".into()
    } else if lower.contains("://") && !lower.starts_with("file:") {
        "direct URL requirements are not allowed; install by package name from the configured index"
            .into()
    } else {
        "local path requirements are not allowed; install by package name from the configured index"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_violation(content: &str) -> Violation {
        Policy::default()
            .check_content(content)
            .expect_err("should be rejected")
            .first()
            .clone()
    }

    #[test]
    fn rejects_every_forbidden_form_with_its_line_number() {
        let cases = [
            ("-i https://evil.example/simple", "--index-url"),
            ("--index-url https://evil.example/simple", "--index-url"),
            ("--index-url=https://evil.example/simple", "--index-url"),
            (
                "--extra-index-url https://evil.example/simple",
                "--extra-index-url",
            ),
            ("-f https://evil.example/links", "--find-links"),
            ("--find-links=/tmp/wheels", "--find-links"),
            ("--trusted-host evil.example", "TLS"),
            ("-e git+https://github.com/x/y.git#egg=y", "editable"),
            ("--editable ./local", "editable"),
            ("-r other.txt", "includes"),
            ("--requirement other.txt", "includes"),
            ("-c constraints.txt", "includes"),
            ("--constraint=constraints.txt", "includes"),
            ("pkg @ https://evil.example/pkg-1.0.tar.gz", "direct URL"),
            ("pkg @ file:///tmp/pkg", "local path"),
            (
                "https://evil.example/pkg-1.0-py3-none-any.whl",
                "direct URL",
            ),
            ("git+https://github.com/x/y.git", "VCS"),
            ("./vendor/pkg", "local path"),
            ("/opt/pkg", "local path"),
            ("../pkg.tar.gz", "local path"),
            ("pkg-1.0-py3-none-any.whl", "local path"),
            ("requests --global-option=--evil", "per-requirement option"),
            ("requests==${VERSION}", "environment variable"),
            ("requests===", "not a valid requirement"),
            ("--bogus-option", "unknown option"),
            ("flask[", "not a valid requirement"),
        ];
        for (bad, why) in cases {
            let content = format!("# header\nrequests==2.32.3\n\n{bad}\nflask\n");
            let v = first_violation(&content);
            assert_eq!(v.line, 4, "{bad}: {v}");
            assert!(
                v.reason.contains(why),
                "{bad}: reason `{}` lacks `{why}`",
                v.reason
            );
            assert_eq!(v.text, bad.trim(), "{bad}");
        }
    }

    #[test]
    fn reports_every_violation_and_line_numbers_after_continuations() {
        let content = "a==1 \\\n    --hash=sha256:abc\n-i https://x/simple\nb\n-r more.txt\n";
        let err = Policy::default().check_content(content).unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![3, 5]);
        let msg = err.to_string();
        assert!(msg.contains("line 3") && msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn allowed_index_urls_pass_others_fail() {
        let policy = Policy {
            allowed_index_urls: vec!["https://pypi.internal/simple/".into()],
            only_binary: false,
        };
        let ok = policy
            .check_content("--index-url https://pypi.internal/simple\nrequests\n")
            .unwrap();
        assert_eq!(
            ok.index_urls,
            vec!["https://pypi.internal/simple".to_string()]
        );
        assert_eq!(ok.package_count, 1);
        let err = policy
            .check_content("--extra-index-url https://evil.example/simple\n")
            .unwrap_err();
        assert!(
            err.first().reason.contains("not one of the allowed"),
            "{err}"
        );
    }

    #[test]
    fn no_binary_depends_on_only_binary() {
        let strict = Policy {
            only_binary: true,
            ..Policy::default()
        };
        assert!(strict.check_content("--no-binary :all:\nx\n").is_err());
        assert!(
            Policy::default()
                .check_content("--no-binary :all:\nx\n")
                .is_ok()
        );
    }

    #[test]
    fn valid_files_pass() {
        let content = "# comment\n\nrequests==2.32.3 \\\n    --hash=sha256:aaaa \\\n    --hash=sha256:bbbb\nflask[async]>=3.0 ; python_version >= \"3.9\"  # web\nnumpy\n--only-binary :all:\n--prefer-binary\n";
        let ok = Policy::default().check_content(content).unwrap();
        assert_eq!(ok.package_count, 3);
        assert!(Policy::default().check_content("").is_ok());
    }

    /// Forms of the hostile review that hide an option from one reader: (file, line, what the
    /// refusal names).
    fn hidden_options() -> Vec<(String, usize, &'static str)> {
        let evil = "http://127.0.0.1:9/simple/";
        vec![
            (
                format!("# note\r--extra-index-url {evil}\nbifrost-hello\n"),
                1,
                "U+000D",
            ),
            (
                format!("bifrost-hello # pinned \\\n--extra-index-url {evil}\n"),
                1,
                "comment",
            ),
            (
                format!("# note \\\n--extra-index-url {evil}\n"),
                1,
                "comment",
            ),
            (
                format!("ok\nbifrost-hello \\\n  # c \\\n-i {evil}\n"),
                2,
                "on line 3",
            ),
            (
                format!("--only-binary :none: --extra-index-url {evil}\n"),
                1,
                "--extra-index-url",
            ),
            (format!("--no-binary=:none: -i {evil}\n"), 1, "--index-url"),
            (format!("--extra-index {evil}\n"), 1, "--extra-index-url"),
            (format!("-i{evil}\n"), 1, "--index-url"),
            (format!("--pre --find {evil}\n"), 1, "--find-links"),
            ("x\n--pr\n".into(), 2, "ambiguous"),
        ]
    }

    /// Characters, names, hashes and markers the two readers read differently.
    fn odd_characters_and_names() -> Vec<(String, usize, &'static str)> {
        vec![
            ("a\u{0b}-i x\n".into(), 1, "U+000B"),
            ("a\u{0c}\n".into(), 1, "U+000C"),
            ("a\u{1c}\n".into(), 1, "U+001C"),
            ("a\u{1d}\n".into(), 1, "U+001D"),
            ("a\u{1e}\n".into(), 1, "U+001E"),
            ("a\u{85}\n".into(), 1, "U+0085"),
            ("a\u{2028}\n".into(), 1, "U+2028"),
            ("a\u{2029}\n".into(), 1, "U+2029"),
            ("a\r\r\n".into(), 1, "U+000D"),
            ("a\0\n".into(), 1, "U+0000"),
            ("# a\u{7f}\n".into(), 1, "U+007F"),
            ("flask # \u{202e}evil\n".into(), 1, "U+202E"),
            ("flask\u{2066}\n".into(), 1, "U+2066"),
            ("flask\u{a0}# c\n".into(), 1, "U+00A0"),
            ("\\-i x\n".into(), 1, "backslash"),
            ("flask\\\\\nx\n".into(), 1, "backslash"),
            ("flask \\".into(), 1, "backslash"),
            ("--only-binary=:all:#x\n".into(), 1, "`#`"),
            ("--only-binary=foo-\n".into(), 1, "not a package name"),
            (
                "--hash=sha256:abcd\n".into(),
                1,
                "belongs after a requirement",
            ),
            (
                "flask --hash=md5:abcd\n".into(),
                1,
                "unknown hash algorithm",
            ),
            ("flask --hash=sha256:zz\n".into(), 1, "hex digits"),
            (
                "flask -i x\n".into(),
                1,
                "per-requirement option --index-url",
            ),
            ("foo-]\n".into(), 1, "must end with a letter or digit"),
            ("foo[bar- ]\n".into(), 1, "must start and end"),
            (
                format!(
                    "a\nalpha ; {}python_version > \"3\"{}\n",
                    "(".repeat(3000),
                    ")".repeat(3000)
                ),
                2,
                "at most 32 levels",
            ),
            (
                format!("alpha ; python_version > '{}'\n", "1".repeat(5000)),
                1,
                "at most 4096",
            ),
        ]
    }

    /// Every finding of the hostile review: each file is refused, naming the line.
    #[test]
    fn forms_pip_and_uv_read_differently_are_refused() {
        for (content, line, why) in hidden_options()
            .into_iter()
            .chain(odd_characters_and_names())
        {
            let shown: String = content.escape_debug().take(120).collect();
            let err = Policy::default().check_content(&content).expect_err(&shown);
            let v = err.first();
            assert_eq!(v.line, line, "{shown}: {err}");
            assert!(
                v.reason.contains(why) || v.text.contains(why),
                "{shown}: `{err}` lacks `{why}`"
            );
            assert!(v.text.chars().count() <= 201, "{}", v.text);
            assert!(!v.text.chars().any(|c| c.is_control()), "{}", v.text);
        }
    }

    #[test]
    fn installer_text_is_the_checked_model_in_canonical_spelling() {
        let digest = "a".repeat(64);
        let content = format!(
            "# c\r\n--only-binary ':all:' --pre\r\nFlask[async]>=3.0 ; python_version >= \"3.9\"  # web\r\nreq \\\r\n    --has=sha256:{digest}\r\n\r\n"
        );
        let ok = Policy::default().check_content(&content).unwrap();
        assert_eq!(
            ok.installer_text,
            format!(
                "--only-binary=:all:\n--pre\nFlask[async]>=3.0 ; python_version >= \"3.9\"\nreq --hash=sha256:{digest}\n"
            )
        );
        let again = RequirementsFile::parse(&ok.installer_text);
        assert_eq!(again.installer_text(), ok.installer_text);
        assert_eq!(again.package_count(), ok.package_count);
    }
}

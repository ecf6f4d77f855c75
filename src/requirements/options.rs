//! Option text in a requirements file, read the way pip reads it: `shlex.split` (POSIX mode),
//! then `optparse` over pip's requirements-file options (`req_file.build_parser`: every option of
//! `SUPPORTED_OPTIONS` and `SUPPORTED_OPTIONS_REQ`), which applies every option on the line,
//! resolves unique prefixes of long options (`--extra-index` is `--extra-index-url`) and takes
//! attached short values (`-ihttp://x`). Values are then checked so that uv, which reads option
//! values differently, cannot see something else.

use std::collections::VecDeque;

/// One option of pip's requirements-file parser (pip 23.2 `req_file.build_parser`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opt {
    IndexUrl,
    ExtraIndexUrl,
    NoIndex,
    Constraint,
    Requirement,
    Editable,
    FindLinks,
    NoBinary,
    OnlyBinary,
    PreferBinary,
    RequireHashes,
    Pre,
    TrustedHost,
    UseFeature,
    GlobalOption,
    Hash,
    ConfigSettings,
}

/// Every long spelling pip accepts; prefixes are resolved against this whole list, as optparse
/// does, so an abbreviation that is ambiguous for pip is refused here too.
const LONG: &[(&str, Opt)] = &[
    ("--index-url", Opt::IndexUrl),
    ("--pypi-url", Opt::IndexUrl),
    ("--extra-index-url", Opt::ExtraIndexUrl),
    ("--no-index", Opt::NoIndex),
    ("--constraint", Opt::Constraint),
    ("--requirement", Opt::Requirement),
    ("--editable", Opt::Editable),
    ("--find-links", Opt::FindLinks),
    ("--no-binary", Opt::NoBinary),
    ("--only-binary", Opt::OnlyBinary),
    ("--prefer-binary", Opt::PreferBinary),
    ("--require-hashes", Opt::RequireHashes),
    ("--pre", Opt::Pre),
    ("--trusted-host", Opt::TrustedHost),
    ("--use-feature", Opt::UseFeature),
    ("--global-option", Opt::GlobalOption),
    ("--hash", Opt::Hash),
    ("--config-settings", Opt::ConfigSettings),
];

const SHORT: &[(char, Opt)] = &[
    ('i', Opt::IndexUrl),
    ('c', Opt::Constraint),
    ('r', Opt::Requirement),
    ('e', Opt::Editable),
    ('f', Opt::FindLinks),
    ('C', Opt::ConfigSettings),
];

/// The hash algorithms pip accepts in `--hash` (`STRONG_HASHES`).
const HASHES: &[&str] = &["sha256", "sha384", "sha512"];

impl Opt {
    /// The canonical long spelling.
    pub(crate) fn long(self) -> &'static str {
        LONG.iter()
            .find(|(_, o)| *o == self)
            .map(|(name, _)| *name)
            .unwrap_or("--?")
    }

    fn takes_value(self) -> bool {
        !matches!(
            self,
            Self::NoIndex | Self::PreferBinary | Self::RequireHashes | Self::Pre
        )
    }
}

/// One option found on a line, with its value when it takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub opt: Opt,
    pub value: Option<String>,
}

impl Parsed {
    /// `--flag=value` or `--flag`: one token for both pip and uv.
    pub(crate) fn canonical(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={v}", self.opt.long()),
            None => self.opt.long().to_string(),
        }
    }
}

/// Split and parse the option part of a line (everything from the first ` -` token on).
pub(crate) fn parse(text: &str) -> Result<Vec<Parsed>, String> {
    let mut args: VecDeque<String> = shlex_split(text)?.into();
    let mut found = Vec::new();
    while let Some(arg) = args.pop_front() {
        let parsed = if arg == "--" {
            return Err(
                "`--` ends pip's option parsing and hides what follows it; remove it".into(),
            );
        } else if arg.starts_with("--") {
            let (name, explicit) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let opt = match_long(name)?;
            if opt.takes_value() {
                let value = match explicit {
                    Some(v) => v,
                    None => args
                        .pop_front()
                        .ok_or_else(|| format!("option {} needs a value", opt.long()))?,
                };
                Parsed {
                    opt,
                    value: Some(value),
                }
            } else if explicit.is_some() {
                return Err(format!("option {} takes no value", opt.long()));
            } else {
                Parsed { opt, value: None }
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = short.chars();
            let c = chars.next().unwrap_or('-');
            let opt = SHORT
                .iter()
                .find(|(s, _)| *s == c)
                .map(|(_, o)| *o)
                .ok_or_else(|| format!("unknown option -{c}"))?;
            // Every short option of pip's requirements files takes a value: attached (`-ihttp://x`)
            // or the next token.
            let attached = chars.as_str();
            let value = if attached.is_empty() {
                args.pop_front()
                    .ok_or_else(|| format!("option {} needs a value", opt.long()))?
            } else {
                attached.to_string()
            };
            Parsed {
                opt,
                value: Some(value),
            }
        } else {
            return Err(format!(
                "`{arg}` is not an option: pip ignores it and uv reads the line differently"
            ));
        };
        if let Some(value) = &parsed.value {
            check_value(parsed.opt, value)?;
        }
        found.push(parsed);
    }
    Ok(found)
}

/// optparse's `_match_abbrev`: an exact name, else the only long option starting with it.
fn match_long(name: &str) -> Result<Opt, String> {
    if let Some((_, opt)) = LONG.iter().find(|(n, _)| *n == name) {
        return Ok(*opt);
    }
    let hits: Vec<&(&str, Opt)> = LONG.iter().filter(|(n, _)| n.starts_with(name)).collect();
    match hits.as_slice() {
        [] => Err(format!("unknown option {name}")),
        [(_, opt)] => Ok(*opt),
        many => Err(format!(
            "option {name} is ambiguous (pip reads it as one of {})",
            many.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Values uv would read differently, and values pip would refuse.
fn check_value(opt: Opt, value: &str) -> Result<(), String> {
    let flag = opt.long();
    if value.is_empty() {
        return Err(format!("option {flag} needs a value"));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace()) {
        return Err(format!(
            "the value of {flag} contains whitespace (U+{:04X}); uv and pip split it differently",
            c as u32
        ));
    }
    if value.contains('#') {
        return Err(format!(
            "the value of {flag} contains `#`: uv ends the value there, pip does not"
        ));
    }
    match opt {
        Opt::OnlyBinary | Opt::NoBinary => check_format_control(flag, value),
        Opt::Hash => check_hash(value),
        _ => Ok(()),
    }
}

/// `--only-binary`/`--no-binary`: `:all:`, `:none:` or package names, comma-separated.
fn check_format_control(flag: &str, value: &str) -> Result<(), String> {
    for item in value.split(',') {
        if item == ":all:" || item == ":none:" {
            continue;
        }
        if item.is_empty() {
            return Err(format!(
                "{flag} {value}: empty entry; expected package names, :all: or :none:, comma-separated"
            ));
        }
        if let Err(e) = super::normalize_name(item) {
            return Err(format!(
                "{flag} {value}: `{item}` is not a package name, :all: or :none: ({e})"
            ));
        }
    }
    Ok(())
}

/// `--hash=algo:hex` with an algorithm pip accepts. The digest's length is not checked: a wrong
/// one only makes the install fail, as it does for pip.
fn check_hash(value: &str) -> Result<(), String> {
    let Some((algo, digest)) = value.split_once(':') else {
        return Err(format!(
            "--hash {value}: expected algorithm:hexdigest such as sha256:<64 hex digits>"
        ));
    };
    if !HASHES.contains(&algo) {
        return Err(format!(
            "--hash {value}: unknown hash algorithm `{algo}` (pip accepts sha256, sha384, sha512)"
        ));
    }
    if digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "--hash {value}: the {algo} digest must be hex digits"
        ));
    }
    Ok(())
}

/// Python's `shlex.split(text)` (POSIX mode, no comments). Backslashes never reach here (the line
/// is refused before), so escapes are refused rather than interpreted.
fn shlex_split(text: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        if c == '\\' {
            return Err("a backslash in options is read differently by pip and uv".into());
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None => match c {
                ' ' | '\t' | '\r' | '\n' => {
                    if in_token {
                        tokens.push(std::mem::take(&mut current));
                        in_token = false;
                    }
                }
                '"' | '\'' => {
                    quote = Some(c);
                    in_token = true;
                }
                _ => {
                    current.push(c);
                    in_token = true;
                }
            },
        }
    }
    if quote.is_some() {
        return Err("an option has no closing quotation mark".into());
    }
    if in_token {
        tokens.push(current);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str) -> Vec<String> {
        parse(text).unwrap().iter().map(Parsed::canonical).collect()
    }

    #[test]
    fn every_option_on_a_line_is_read() {
        assert_eq!(
            flags("--only-binary :none: --extra-index-url http://x/"),
            ["--only-binary=:none:", "--extra-index-url=http://x/"]
        );
        assert_eq!(
            flags("--no-binary=:none: -i http://x/"),
            ["--no-binary=:none:", "--index-url=http://x/"]
        );
        assert_eq!(flags("-ihttp://x/"), ["--index-url=http://x/"]);
        assert_eq!(
            flags("--extra-index http://x/"),
            ["--extra-index-url=http://x/"]
        );
        assert_eq!(flags("--pypi http://x/"), ["--index-url=http://x/"]);
        assert_eq!(flags("--pre"), ["--pre"]);
        let digest = "a".repeat(64);
        assert_eq!(
            flags(&format!("--has=sha256:{digest}")),
            [format!("--hash=sha256:{digest}")]
        );
        assert_eq!(flags("--only-binary ':all:'"), ["--only-binary=:all:"]);
        // optparse takes the next token as the value, whatever it looks like.
        assert_eq!(flags("--index-url --pre"), ["--index-url=--pre"]);
    }

    #[test]
    fn what_pip_would_refuse_or_uv_would_read_differently_is_an_error() {
        for (text, why) in [
            ("--pr", "ambiguous"),
            ("--e x", "ambiguous"),
            ("--bogus", "unknown option"),
            ("-x", "unknown option -x"),
            ("--pre=1", "takes no value"),
            ("--index-url", "needs a value"),
            ("--no-binary=", "needs a value"),
            ("--pre stray", "not an option"),
            ("--pre --", "`--`"),
            ("--only-binary 'a b'", "whitespace"),
            ("--only-binary ':all:", "closing quotation"),
            ("--index-url=http://x/#frag", "`#`"),
            ("--only-binary a,,b", "empty entry"),
            ("--only-binary foo-", "not a package name"),
            ("--hash=md5:abc", "unknown hash algorithm"),
            ("--hash=sha256:xyz", "hex digits"),
            ("--hash=sha256:", "hex digits"),
            ("--hash=abc", "algorithm:hexdigest"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: `{err}` lacks `{why}`");
        }
    }
}

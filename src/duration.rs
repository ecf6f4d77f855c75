//! Durations, in one grammar for the flags, their environment variables and the Helm values that
//! set them: Go's (`time.ParseDuration`, what Kubernetes and cert-manager users write), e.g.
//! `500ms`, `30s`, `1h30m`, `8760h`, plus a bare number of seconds (`3`) as the flags always
//! took. The chart's `values.schema.json` carries [`PATTERN`]; a test checks that the two agree.

use std::time::Duration;

/// The grammar as a regular expression (JSON Schema `pattern`): one or more `<number><unit>`,
/// or a bare number of seconds.
pub const PATTERN: &str = r"^(([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+|[0-9]+(\.[0-9]+)?)$";

/// The longest duration accepted anywhere (a year): larger values are typos, and `f64` seconds
/// lose precision long before `Duration` overflows.
pub(crate) const MAX: Duration = Duration::from_secs(86_400 * 365);

/// Parse `s` (surrounding whitespace ignored); the error quotes the value and says why.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("an empty value is not a duration (examples: 500ms, 3s, 2m, 1h30m)".into());
    }
    if let Some(secs) = number(t) {
        return within_range(s, secs);
    }
    let mut rest = t;
    let mut secs = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        let value = number(num)
            .ok_or_else(|| format!("`{s}` is not a duration (examples: 500ms, 3s, 2m, 1h30m)"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit `{unit}` (use ns, us, ms, s, m or h)"
                ));
            }
        };
        secs += value * scale;
        rest = next;
    }
    within_range(s, secs)
}

/// `digits` or `digits.digits`, nothing else (no sign, exponent, `inf` or `nan`).
fn number(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (all_digits(int) && all_digits(frac))
        .then(|| s.parse().ok())
        .flatten()
}

fn within_range(s: &str, secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs > MAX.as_secs_f64() {
        return Err(format!("`{s}` is out of range (at most 8760h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// [`parse`], then at least `min`: the error names the minimum.
pub(crate) fn at_least(s: &str, min: Duration, min_text: &str) -> Result<Duration, String> {
    let d = parse(s)?;
    if d < min {
        return Err(format!("`{s}` is too short (at least {min_text})"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_bare_seconds() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("3", Duration::from_secs(3)),
            ("2.5", Duration::from_millis(2500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("8760h", MAX),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("0s", Duration::ZERO),
            (" 30s ", Duration::from_secs(30)),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_value_quoted() {
        for bad in [
            "",
            " ",
            "-1s",
            "+1s",
            "1e3s",
            "inf",
            "nan",
            "1.s",
            ".5s",
            "1 s",
            "3 parsecs",
            "1d",
            "s",
            "1h30",
            "30m1",
            "1..2s",
            "8761h",
            "99999999999999999999h",
            "1hh",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains(bad.trim()) || bad.trim().is_empty(),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            parse("3 parsecs").unwrap_err(),
            "`3 parsecs` has an unknown unit ` parsecs` (use ns, us, ms, s, m or h)"
        );
    }

    #[test]
    fn minimums_name_themselves() {
        let min = Duration::from_secs(10);
        assert_eq!(at_least("10s", min, "10s"), Ok(min));
        assert_eq!(
            at_least("5s", min, "10s").unwrap_err(),
            "`5s` is too short (at least 10s)"
        );
    }
}

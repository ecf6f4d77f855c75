//! Kubernetes quantities, parsed as the API server parses them, and the resources of a
//! container checked with them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Resource names the install container accepts: the standard container resources that make
/// sense for an installer (hugepages and extended resources would need requests == limits and
/// have no use here).
const RESOURCE_NAMES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// A parsed quantity: its value in nano units (10⁻⁹), rounded away from zero as the API server
/// rounds anything finer than nano.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParsedQuantity {
    pub nano: i128,
}

/// The API server's largest quantity (2⁶³−1 units); above it, versions disagree (1.20 caps every
/// quantity, later ones only binary-SI ones), so a larger value is refused.
const MAX_NANO: i128 = (i64::MAX as i128) * 1_000_000_000;

/// Parse a quantity as the API server does (`resource.ParseQuantity`):
/// `<sign>? <digits>? (. <digits>?)? <suffix>`, suffix one of `Ki Mi Gi Ti Pi Ei`,
/// `n u m "" k M G T P E`, or `e`/`E` and a signed integer. Stricter than the API server where it
/// accepts nonsense: the number needs a digit (the API server reads `Gi`, `.` and `-` as zero),
/// an exponent must fit 32 bits (the API server wraps it around), and the magnitude must not
/// exceed 2⁶³−1.
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, String> {
    let fail = |why: &str| format!("{s:?} is not a Kubernetes quantity: {why}");
    let number = split_quantity(s).map_err(fail)?;
    let (exp10, exp2) = suffix_scale(number.suffix).map_err(fail)?;
    let digits = format!("{}{}", number.int_digits, number.frac_digits);
    let digits = digits.trim_start_matches('0');
    let exp10 = exp10 - number.frac_digits.len() as i64;
    match to_nano(digits, exp10, exp2) {
        Some(n) if n <= MAX_NANO => Ok(ParsedQuantity {
            nano: if number.negative { -n } else { n },
        }),
        _ => Err(fail("larger than 2^63-1")),
    }
}

/// A quantity cut into its parts, not yet scaled.
struct QuantityParts<'a> {
    negative: bool,
    int_digits: &'a str,
    frac_digits: &'a str,
    suffix: &'a str,
}

/// Sign, digits and suffix of a quantity; the error says what is wrong with it.
fn split_quantity(s: &str) -> Result<QuantityParts<'_>, &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    let b = s.as_bytes();
    let mut pos = 0;
    let negative = match b[0] {
        b'-' => {
            pos = 1;
            true
        }
        b'+' => {
            pos = 1;
            false
        }
        _ => false,
    };
    let digits_from = |pos: usize| {
        b[pos..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |n| pos + n)
    };
    let int_end = digits_from(pos);
    let int_digits = &s[pos..int_end];
    pos = int_end;
    let mut frac_digits = "";
    if b.get(pos) == Some(&b'.') {
        let frac_end = digits_from(pos + 1);
        frac_digits = &s[pos + 1..frac_end];
        pos = frac_end;
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err("no digits before the suffix");
    }
    // The API server's scanner: letters from this set, an optional sign, digits, the end.
    let suffix = &s[pos..];
    let letters = suffix
        .bytes()
        .position(|c| !b"eEinumkKMGTP".contains(&c))
        .unwrap_or(suffix.len());
    let rest = &suffix[letters..];
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if !rest.bytes().all(|c| c.is_ascii_digit()) {
        return Err("unexpected characters (spaces, units such as GB, …)");
    }
    Ok(QuantityParts {
        negative,
        int_digits,
        frac_digits,
        suffix,
    })
}

/// The power of ten and of two a suffix stands for.
fn suffix_scale(suffix: &str) -> Result<(i64, u32), &'static str> {
    Ok(match suffix {
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "" => (0, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e if e.len() > 1 && e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err("the exponent is not an integer");
            }
            match exp.parse::<i32>() {
                Ok(v) => (i64::from(v), 0),
                Err(_) => return Err("the exponent is out of range"),
            }
        }
        _ => {
            return Err(
                "unknown suffix (use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or e<exp>)",
            );
        }
    })
}

/// `digits × 10^exp10 × 2^exp2` in nano units, rounded up; `None` when far too large.
fn to_nano(digits: &str, exp10: i64, exp2: u32) -> Option<i128> {
    if digits.is_empty() {
        return Some(0);
    }
    let n = digits.len() as i64;
    let scale = exp10.checked_add(9)?;
    let log2_10 = f64::from(exp2) * std::f64::consts::LOG10_2;
    // Bounds of the value's decimal magnitude: decide the extremes without big arithmetic.
    let lowest = (n - 1).saturating_add(scale) as f64 + log2_10;
    if lowest > 29.0 {
        return None;
    }
    if (n.saturating_add(scale) as f64 + log2_10) < -1.0 {
        return Some(1); // non-zero below a nano: the API server rounds it up to 1n
    }
    // digits × 2^exp2, exactly, as decimal digits (most significant first).
    let mut value: Vec<u8> = digits.bytes().map(|c| c - b'0').collect();
    for _ in 0..exp2 / 10 {
        let mut carry = 0u32;
        for d in value.iter_mut().rev() {
            let x = u32::from(*d) * 1024 + carry;
            *d = (x % 10) as u8;
            carry = x / 10;
        }
        while carry > 0 {
            value.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }
    let (int_part, round_up): (&[u8], bool) = if scale >= 0 {
        (&value, false)
    } else {
        let cut = value.len().saturating_sub(scale.unsigned_abs() as usize);
        (&value[..cut], value[cut..].iter().any(|d| *d != 0))
    };
    let mut out: i128 = 0;
    for d in int_part {
        out = out.checked_mul(10)?.checked_add(i128::from(*d))?;
    }
    if scale > 0 {
        for _ in 0..scale {
            out = out.checked_mul(10)?;
        }
    }
    Some(out + i128::from(round_up))
}

/// Problems of a container's resources, as (field suffix such as `.limits[cpu]`, message), by the
/// API server's rules: known names, non-negative quantities, requests ≤ limits. `extra` names
/// further allowed resource names (none for the install container).
pub(crate) fn resource_problems(r: &ResourceRequirements, extra: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        out.push((
            ".claims".into(),
            "resource claims are not supported for the install container".into(),
        ));
    }
    let mut parsed: [BTreeMap<&str, ParsedQuantity>; 2] = Default::default();
    for (i, (part, map)) in [("requests", &r.requests), ("limits", &r.limits)]
        .into_iter()
        .enumerate()
    {
        for (name, q) in map.iter().flatten() {
            let field = format!(".{part}[{name}]");
            if !RESOURCE_NAMES.contains(&name.as_str()) && !extra.contains(&name.as_str()) {
                out.push((
                    field,
                    format!(
                        "unknown resource {name:?} (allowed: {})",
                        RESOURCE_NAMES.join(", ")
                    ),
                ));
                continue;
            }
            match parse_quantity(&q.0) {
                Ok(v) if v.nano < 0 => {
                    out.push((field, format!("{:?} must not be negative", q.0)));
                }
                Ok(v) => {
                    parsed[i].insert(name.as_str(), v);
                }
                Err(m) => out.push((field, m)),
            }
        }
    }
    for (name, request) in &parsed[0] {
        if let Some(limit) = parsed[1].get(name)
            && request > limit
        {
            let q = |m: &Option<BTreeMap<String, Quantity>>| {
                m.as_ref()
                    .and_then(|m| m.get(*name))
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            };
            out.push((
                format!(".requests[{name}]"),
                format!(
                    "{:?} must not exceed the limit {:?}",
                    q(&r.requests),
                    q(&r.limits)
                ),
            ));
        }
    }
    out
}

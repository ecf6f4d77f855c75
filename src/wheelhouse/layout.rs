//! What the wheelhouse's names may be, checked before they become S3 keys or local paths: the
//! prefix (configuration), a lock's SHA-256 (a folder of the prefix) and a file's name (an index
//! page or a manifest said it, so it is hostile until checked).

/// The longest prefix taken: S3 keys stop at 1,024 bytes, and a prefix leaves room for the
/// lock's 64 hex digits and a file name.
pub(super) const MAX_PREFIX_BYTES: usize = 256;
/// The longest file name taken (what most file systems allow, and far more than a wheel needs).
pub(super) const MAX_NAME_BYTES: usize = 255;
/// Bifrost's own files (`RepoStorage`): never written under.
const BIFROST_REPO: &str = "_repo";

/// `prefix` without a trailing `/`, or why it cannot hold wheelhouses: a key prefix of
/// segments of letters, digits, `.`, `_` and `-`, none empty, `.` or `..`, and not inside
/// Bifrost's `_repo/`.
pub(super) fn prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Err("it is empty (the wheelhouses need a folder of their own)".into());
    }
    if trimmed.len() > MAX_PREFIX_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_PREFIX_BYTES}",
            trimmed.len()
        ));
    }
    if trimmed.starts_with('/') {
        return Err("it starts with '/' (keys are relative to the bucket)".into());
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '.', '_', '-' and '/' only)"
        ));
    }
    if let Some(seg) = trimmed
        .split('/')
        .find(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(if seg.is_empty() {
            "it has an empty segment (a doubled '/')".into()
        } else {
            format!("it has a {seg:?} segment")
        });
    }
    if trimmed.split('/').next() == Some(BIFROST_REPO) {
        return Err(format!(
            "it is inside {BIFROST_REPO}/, where Bifrost keeps the workspace's own files"
        ));
    }
    Ok(trimmed.to_string())
}

/// A lock's SHA-256 as a folder name: 64 hex digits, lowercased (a `sha256:` prefix is taken
/// off); `None` when it is not one.
pub(super) fn lock_sha256(value: &str) -> Option<String> {
    let value = value.trim();
    let hex = value.strip_prefix("sha256:").unwrap_or(value);
    is_sha256(hex).then(|| hex.to_ascii_lowercase())
}

/// 64 hex digits, either case.
pub(super) fn is_sha256(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why `name` cannot be a file of a wheelhouse: it must be one path segment of letters, digits,
/// `.`, `_`, `-`, `+` and `!` (every wheel and sdist name), not start with `.` (nor be the
/// manifest's), so that it names the same object in S3 and the same file in a folder.
pub(super) fn file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("{name:?} is empty or over {MAX_NAME_BYTES} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '!')))
    {
        return Err(format!(
            "{name:?} holds {c:?} (a file name is letters, digits, '.', '_', '-', '+' and '!')"
        ));
    }
    if name.starts_with('.') {
        return Err(format!("{name:?} starts with '.'"));
    }
    if name == super::MANIFEST {
        return Err(format!("{name:?} is the manifest's own name"));
    }
    Ok(())
}

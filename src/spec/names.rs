//! Names, paths, keys and URLs: the single values of a spec that end up in a pod, in argv or in
//! Redis.

/// Trees a volume must never be mounted over (equal or below): the image's system files.
const SYSTEM_TREES: [&str; 13] = [
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",
    "/var/lib",
    "/var/log",
    "/bifrost-requirements",
];
/// Folders a volume must not replace (equal only): they hold what the image put there, and
/// below them a subfolder is fine (e.g. the default `/opt/bifrost/site-packages`, or the user
/// site-packages under `/home/<user>`). `/app` is where Bifrost's image keeps its code.
const SYSTEM_FOLDERS: [&str; 10] = [
    "/", "/app", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var",
];

/// A DNS subdomain (RFC 1123): object names such as Secrets, ConfigMaps and claims.
pub(crate) fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid object name (lowercase letters, digits, '-' and '.', starting \
             and ending with a letter or digit, at most 253 characters)"
        ))
    }
}

/// A DNS label (RFC 1123): container and volume names.
pub(crate) fn dns_label(s: &str) -> Result<(), String> {
    if s.len() <= 63 && !s.contains('.') && dns_subdomain(s).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name (lowercase letters, digits and '-', at most 63 characters)"
        ))
    }
}

/// A key of a Secret or ConfigMap.
pub(crate) fn config_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s.starts_with("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid key (letters, digits, '-', '_' and '.', at most 253 characters)"
        ))
    }
}

fn no_space(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    match s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        Some(c) => Err(format!(
            "{s:?}: the {what} must not contain whitespace or control characters (found {c:?})"
        )),
        None => Ok(()),
    }
}

/// The Redis key: passed on the install container's command line and to Redis.
pub(crate) fn redis_key(s: &str) -> Result<(), String> {
    no_space(s, "Redis key")
}

/// An index URL: `scheme://…`, no whitespace (it becomes an installer argument).
pub(crate) fn index_url(s: &str) -> Result<(), String> {
    no_space(s, "index URL")?;
    let scheme_ok = s.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    if scheme_ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a URL (expected scheme://host/…, e.g. https://pypi.org/simple)"
        ))
    }
}

/// An image reference (no whitespace; the API server refuses surrounding spaces).
pub(crate) fn image_reference(s: &str) -> Result<(), String> {
    no_space(s, "image reference")
}

/// A `spec.install.pythonPath` entry: an absolute folder, without `:` (the separator) or
/// whitespace.
pub(crate) fn python_path_entry(entry: &str) -> Result<(), String> {
    if !entry.starts_with('/') {
        return Err(format!("{entry:?} must be an absolute path (e.g. /app)"));
    }
    match entry
        .chars()
        .find(|c| *c == ':' || c.is_control() || c.is_whitespace())
    {
        Some(c) => Err(format!(
            "{entry:?} must not contain {c:?} (':' separates PYTHONPATH entries; whitespace and \
             control characters are refused)"
        )),
        None => Ok(()),
    }
}

/// `mountPath`: absolute, normalised (no `.`, `..` or empty components; one trailing `/` is
/// dropped), no `:` (it goes into PYTHONPATH), outside the image's system folders and our own.
/// Returns the path without its trailing `/`.
pub fn mount_path(path: &str) -> Result<&str, String> {
    let p = path.strip_suffix('/').unwrap_or(path);
    if !path.starts_with('/') || p.is_empty() {
        return Err(format!(
            "{path:?} must be an absolute path other than / (e.g. /opt/bifrost/site-packages)"
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| *c == ':' || c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "{path:?} must not contain {c:?} (':' separates PYTHONPATH entries; whitespace and \
             control characters are refused)"
        ));
    }
    if p[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "{path:?} is not normalised (no '//', '.' or '..' components)"
        ));
    }
    let first = p[1..].split('/').next().unwrap_or_default();
    let under = |tree: &str| p == tree || p.starts_with(&format!("{tree}/"));
    if first.starts_with("lib") || SYSTEM_TREES.iter().any(|t| under(t)) {
        return Err(format!(
            "{path:?} is inside a system folder ({}, /lib*) or /bifrost-requirements; an empty \
             volume there would hide the image's files",
            SYSTEM_TREES[..SYSTEM_TREES.len() - 1].join(", ")
        ));
    }
    if SYSTEM_FOLDERS.contains(&p) {
        return Err(format!(
            "{path:?} would replace a whole system folder ({}); use a subfolder",
            SYSTEM_FOLDERS.join(", ")
        ));
    }
    if p.len() > 1024 {
        return Err(format!("{} characters: at most 1024", p.chars().count()));
    }
    Ok(p)
}

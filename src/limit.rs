//! The one size limit of requirements.txt, enforced by every door content comes in by.
//!
//! The content travels on into a resource, Redis, the ConfigMap snapshot (twice) and the
//! installer; a door that let more through would only move the refusal somewhere later and
//! less clear (a 5 MB file written to Redis by the CLI, then refused by the controller). So the
//! CLI on both stores (`requirements set|add|remove`, `warm`), both mirrors and the controller's
//! validation all refuse content over [`MAX_CONTENT_BYTES`], with the words of [`exceeded`].
//! This module depends on nothing, so that every writer can use it.

/// Largest requirements.txt. The ConfigMap snapshot holds the content twice (`requirements.txt`
/// and the JSON payload, which escapes non-ASCII characters up to six bytes each) and will also
/// hold the lock file resolved from it; the API server refuses a ConfigMap over 1 MiB, and etcd
/// a request over ~1.5 MiB. Real requirements files are a few KiB (a `pip freeze` of 300
/// packages is ~8 KiB; a fully hashed `pip-compile` output of 200 packages ~180 KiB), so
/// 256 KiB leaves room for all of that.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;

/// The refusal, in the same words at every door: the size and the limit.
pub fn exceeded(len: usize) -> String {
    format!("{len} bytes exceed the content limit of {MAX_CONTENT_BYTES} bytes (256 KiB)")
}

/// Content over the limit, and where it was found (`requirements.txt` given to the CLI,
/// `s3://bucket/key`, `workspace_files row "requirements.txt"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {}; nothing was written{}", exceeded(*.len), then(.hint))]
pub struct TooLarge {
    pub location: String,
    pub len: usize,
    /// What mends it, when the door knows (`requirements remove NAME…` for a stored file).
    pub hint: Option<String>,
}

/// `: {hint}`, or nothing.
fn then(hint: &Option<String>) -> String {
    hint.as_deref()
        .map(|h| format!(": {h}"))
        .unwrap_or_default()
}

/// Refuse `content` over [`MAX_CONTENT_BYTES`]. `location` only names it in the message.
pub(crate) fn check(location: impl FnOnce() -> String, content: &str) -> Result<(), TooLarge> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(TooLarge {
            location: location(),
            len: content.len(),
            hint: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_limit_itself_passes_one_byte_more_does_not() {
        let at = "x".repeat(MAX_CONTENT_BYTES);
        check(|| "here".into(), &at).unwrap();
        let over = format!("{at}y");
        let e = check(|| "s3://b/k".into(), &over).unwrap_err();
        assert_eq!(
            e.to_string(),
            "s3://b/k: 262145 bytes exceed the content limit of 262144 bytes (256 KiB); \
             nothing was written"
        );
    }

    proptest! {
        /// Bytes count, not characters: a multi-byte file is measured as it is stored.
        #[test]
        fn refused_exactly_when_over_the_limit_in_bytes(
            extra in -3i64..4, c in prop::sample::select(vec!['a', 'é', '€', '𝄞'])
        ) {
            let n = (MAX_CONTENT_BYTES as i64 / c.len_utf8() as i64 + extra).max(0) as usize;
            let content: String = std::iter::repeat_n(c, n).collect();
            let refused = check(|| "f".into(), &content);
            prop_assert_eq!(refused.is_err(), content.len() > MAX_CONTENT_BYTES);
            if let Err(e) = refused {
                prop_assert_eq!(e.len, content.len());
                let text = e.to_string();
                prop_assert!(text.contains(&content.len().to_string()), "{}", text);
                prop_assert!(text.contains("262144"), "{}", text);
            }
        }
    }
}

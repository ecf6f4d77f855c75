//! The package flows of hosts without Kubernetes: `warm` and `requirements show|add|remove|set`.
//!
//! A package install in Bifrost is: read requirements.txt, merge the new requirement, save it
//! (compare-and-swap on the row's `content_hash`, or a conditional `PutObject` on the S3 object's
//! ETag), refresh Redis. These functions do the same on either [`Store`], with the policy checked
//! before anything is written, so invalid input changes nothing anywhere. Redis is refreshed only
//! after the source kept the content, in the order the source kept it: a failed save leaves Redis
//! as it was, and a Redis failure after the save keeps the source of truth and is reported, to be
//! repaired by the controller or the next `warm`.

use crate::cache::{Cache, Payload};
use crate::database::SaveOutcome;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::requirements::{MergeOutcome, RequirementsFile, mend};
use crate::store::{Current, Store};

mod broken;

/// How a refusal names content a change would write.
const NEW_CONTENT: &str = "the new requirements.txt";

/// What `warm` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmOutcome {
    Warmed(Payload),
    /// The store holds no requirements.txt (no live row, no object); Redis was not touched.
    NoRow,
}

/// Source → Redis, as Bifrost's init step does. Invalid content is refused (never cached).
pub async fn warm(store: &Store, cache: &Cache, policy: &Policy) -> Result<WarmOutcome> {
    store
        .read_in_order(|content| async move {
            let Some(content) = content else {
                return Ok(WarmOutcome::NoRow);
            };
            crate::limit::check(|| store.location(), &content)?;
            policy.check_content(&content)?;
            let payload = cache.put(&content).await?;
            Ok(WarmOutcome::Warmed(payload))
        })
        .await
}

/// One change to apply to requirements.txt.
#[derive(Debug, Clone)]
pub enum Change {
    Add(Vec<String>),
    Remove(Vec<String>),
    Set(String),
}

/// The result of [`apply`].
#[derive(Debug)]
pub(crate) struct Applied {
    pub outcome: SaveOutcome,
    pub hash: String,
    pub package_count: usize,
    /// Human-readable notes per requirement ("added flask==3.0", …).
    pub notes: Vec<String>,
    pub cache_refreshed: bool,
    /// Redis could not be refreshed after the source kept the content (the source is saved).
    pub cache_error: Option<Error>,
}

/// Check a change's own arguments (each spec or name, or the new file) before any I/O.
pub fn validate(change: &Change, policy: &Policy) -> Result<()> {
    match change {
        Change::Add(specs) => {
            let mut scratch = RequirementsFile::default();
            for spec in specs {
                scratch.merge(spec)?;
            }
            policy.check(&scratch)?;
        }
        Change::Remove(names) => {
            for name in names {
                RequirementsFile::default().remove(name)?;
            }
        }
        Change::Set(content) => {
            crate::limit::check(|| NEW_CONTENT.into(), content)?;
            policy.check_content(content)?;
        }
    }
    Ok(())
}

/// Apply a change with compare-and-swap, validating the result, and refresh Redis when given.
///
/// Every spec, name and the resulting file are checked inside the read–modify–write, before
/// anything is written; call [`validate`] first to fail before connecting anywhere.
pub(crate) async fn apply(
    store: &Store,
    cache: Option<&Cache>,
    policy: &Policy,
    change: &Change,
) -> Result<Applied> {
    let mut notes = Vec::new();
    let location = store.location();
    let modify = |current: Current<'_>| -> Result<Option<String>> {
        notes.clear();
        let new = match (change, current) {
            // `set` does not read what is there, so it replaces even an object nothing can read.
            (Change::Set(content), _) => content.clone(),
            (Change::Add(specs), Current::Text(text)) => added(specs, text, &location, &mut notes)?,
            (Change::Add(_), Current::Unreadable(object)) => {
                return Err(broken::refused_add(object));
            }
            (Change::Remove(names), current) => {
                removed(names, current, &location, policy, &mut notes)?
            }
        };
        // The result, not only the change: an `add` to a file near the limit can cross it.
        crate::limit::check(|| NEW_CONTENT.into(), &new)?;
        policy.check_content(&new)?;
        Ok(match current {
            Current::Text(text) if text == new => None,
            _ => Some(new),
        })
    };
    let refreshed = std::sync::Mutex::new(None::<Result<()>>);
    let after_commit = |content: String| {
        let refreshed = &refreshed;
        async move {
            // Only S3 hands on content this run did not check: a newer object another writer
            // (Bifrost's plain PutObject) put there. What the policy refuses never reaches Redis;
            // the operator's controller reports it.
            if crate::limit::check(String::new, &content).is_err()
                || policy.check_content(&content).is_err()
            {
                tracing::warn!(
                    location = %store.location(),
                    "a concurrent writer stored requirements the policy refuses; Redis keeps the last valid content"
                );
                return Ok(());
            }
            if let Some(cache) = cache {
                let result = cache.put(&content).await.map(drop);
                *refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
            }
            Ok(())
        }
    };
    let (outcome, content) = store.update(modify, after_commit).await?;
    let refreshed = refreshed.into_inner().unwrap_or_else(|p| p.into_inner());
    let package_count = RequirementsFile::parse(&content).package_count();
    Ok(Applied {
        outcome,
        hash: crate::requirements::content_hash(&content),
        package_count,
        notes,
        cache_refreshed: matches!(refreshed, Some(Ok(()))),
        cache_error: refreshed.and_then(Result::err),
    })
}

/// `add`: merge each spec into the stored text. A stored file over the limit is refused, naming
/// it, when the merge does not bring it under.
fn added(
    specs: &[String],
    current: &str,
    location: &str,
    notes: &mut Vec<String>,
) -> Result<String> {
    let mut file = RequirementsFile::parse(current);
    for spec in specs {
        let note = match file.merge(spec)? {
            MergeOutcome::Added => format!("added {spec}"),
            MergeOutcome::Replaced { previous } => format!("replaced {previous} with {spec}"),
            MergeOutcome::Unchanged => format!("{spec} already present"),
        };
        notes.push(note);
    }
    let new = file.render();
    let limit = crate::limit::MAX_CONTENT_BYTES;
    if new.len() > limit && current.len() > limit {
        return Err(broken::over_the_limit_before_add(location, current.len()));
    }
    Ok(new)
}

/// `remove`: take the named packages' lines out of the stored bytes, whatever they hold, and
/// keep the result only if it is a file `set` would accept. A refusal names what is still wrong
/// with the stored file's line numbers.
fn removed(
    names: &[String],
    current: Current<'_>,
    location: &str,
    policy: &Policy,
    notes: &mut Vec<String>,
) -> Result<String> {
    let bytes = match current {
        Current::Text(text) => text.as_bytes(),
        Current::Unreadable(object) => object
            .bytes
            .as_deref()
            .ok_or_else(|| broken::too_large_to_mend(object))?,
    };
    let mut removal = mend::remove(bytes, names)?;
    for (name, count) in names.iter().zip(&removal.removed) {
        if *count == 0 {
            return Err(Error::NotFound {
                what: "package in requirements.txt",
                name: name.clone(),
            });
        }
        notes.push(format!("removed {name}"));
    }
    let Ok(new) = String::from_utf8(std::mem::take(&mut removal.bytes)) else {
        return Err(broken::still_not_utf8(location, names, &removal.not_utf8));
    };
    if new.len() > crate::limit::MAX_CONTENT_BYTES {
        return Err(broken::still_too_large(NEW_CONTENT, new.len()));
    }
    if let Err(in_new) = policy.check_content(&new) {
        // The file written is what is checked; the lines are named as the stored file numbers
        // them (the same lines, unless a moved byte order mark changed the first one's meaning).
        let as_stored = policy.check(removal.kept_as_stored()).err();
        return Err(as_stored.unwrap_or(in_new).into());
    }
    Ok(new)
}

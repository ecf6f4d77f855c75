//! `install`'s wheelhouse flags: where the controller copied the lock's files. The webhook
//! writes them into the pod; the keys come from the environment only (a pod's arguments are
//! readable by anyone who can read the pod).

use clap::Args;

use crate::error::{Error, Result};
use crate::installer::{WHEELHOUSE_ACCESS_KEY_ENV, WHEELHOUSE_SECRET_KEY_ENV, WheelhouseSource};
use crate::s3::{self, S3Config};

/// Flags of the wheelhouse `install` reads the lock's files from.
#[derive(Debug, Clone, Default, Args)]
pub struct WheelhouseArgs {
    /// The wheelhouse, `s3://BUCKET/PREFIX`: the lock's files are under `PREFIX/<lock sha256>/`.
    /// When it holds the complete lock, the lock is installed from there, without an index;
    /// otherwise (missing, incomplete, unreachable) from the index as before.
    #[arg(
        long,
        env = "BIFROST_INSTALL_WHEELHOUSE",
        value_name = "s3://BUCKET/PREFIX"
    )]
    pub wheelhouse: Option<String>,

    /// The wheelhouse's S3 endpoint (none: AWS).
    #[arg(long, env = "BIFROST_INSTALL_WHEELHOUSE_ENDPOINT", value_name = "URL")]
    pub wheelhouse_endpoint: Option<String>,

    /// The wheelhouse's region.
    #[arg(long, env = "BIFROST_INSTALL_WHEELHOUSE_REGION", default_value = s3::DEFAULT_REGION)]
    pub wheelhouse_region: String,

    /// Path-style addressing (`endpoint/bucket/key`), as SeaweedFS and MinIO need.
    #[arg(long, env = "BIFROST_INSTALL_WHEELHOUSE_PATH_STYLE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub wheelhouse_path_style: bool,
}

/// A validation error's own words (it is wrapped again, naming the flag).
fn words(e: Error) -> String {
    match e {
        Error::Config(m) => m,
        other => other.to_string(),
    }
}

impl WheelhouseArgs {
    /// The wheelhouse asked for, keys from `lookup` (the environment); every error names the
    /// flag and what is wrong.
    pub(crate) fn source(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<WheelhouseSource>> {
        let Self {
            wheelhouse,
            wheelhouse_endpoint,
            wheelhouse_region,
            wheelhouse_path_style,
        } = self;
        let Some(url) = wheelhouse
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let bad = |why: String| Error::Config(format!("--wheelhouse {url:?}: {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("must be s3://BUCKET/PREFIX".into()))?;
        let (bucket, prefix) = rest
            .split_once('/')
            .ok_or_else(|| bad("names no prefix (s3://BUCKET/PREFIX)".into()))?;
        s3::validate_bucket(bucket).map_err(|e| bad(words(e)))?;
        let prefix = crate::wheelhouse::valid_prefix(prefix)
            .map_err(|why| bad(format!("the prefix: {why}")))?;
        s3::validate_region(wheelhouse_region)
            .map_err(|e| Error::Config(format!("--wheelhouse-region: {}", words(e))))?;
        let mut config = S3Config::new(bucket);
        config.region = wheelhouse_region.clone();
        if let Some(endpoint) = wheelhouse_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            s3::validate_endpoint(endpoint)
                .map_err(|e| Error::Config(format!("--wheelhouse-endpoint: {}", words(e))))?;
            config = config.with_endpoint(endpoint);
        }
        config.force_path_style = *wheelhouse_path_style;
        // One request is one whole file (a large wheel is tens of megabytes); `--timeout`
        // bounds the install as a whole.
        config.timeout = std::time::Duration::from_secs(300);
        // An optional Secret the pod did not get leaves both unset: the default chain, and the
        // index if that cannot read the bucket either.
        let key = |name: &str| lookup(name).filter(|v| !v.is_empty());
        config.credentials = match (
            key(WHEELHOUSE_ACCESS_KEY_ENV),
            key(WHEELHOUSE_SECRET_KEY_ENV),
        ) {
            (Some(id), Some(secret)) => Some(s3::Credentials {
                access_key_id: id.trim().to_string(),
                secret_access_key: secret,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::Config(format!(
                    "the wheelhouse needs both {WHEELHOUSE_ACCESS_KEY_ENV} and \
                     {WHEELHOUSE_SECRET_KEY_ENV}, or neither (the default AWS credential chain)"
                )));
            }
        };
        Ok(Some(WheelhouseSource { config, prefix }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> WheelhouseArgs {
        WheelhouseArgs {
            wheelhouse: Some(url.into()),
            wheelhouse_region: s3::DEFAULT_REGION.into(),
            ..WheelhouseArgs::default()
        }
    }

    #[test]
    fn a_bucket_and_prefix_with_keys_from_the_environment() {
        let env = |name: &str| match name {
            WHEELHOUSE_ACCESS_KEY_ENV => Some("AKID".to_string()),
            WHEELHOUSE_SECRET_KEY_ENV => Some("s3cr3t".to_string()),
            _ => None,
        };
        let mut a = args("s3://bifrost-local/_bifrost-requirements/wheelhouse/");
        a.wheelhouse_endpoint = Some("http://10.244.0.1:8333".into());
        a.wheelhouse_path_style = true;
        let w = a.source(env).unwrap().unwrap();
        assert_eq!(w.prefix, "_bifrost-requirements/wheelhouse");
        assert_eq!(w.config.bucket, "bifrost-local");
        assert_eq!(w.config.endpoint.as_deref(), Some("http://10.244.0.1:8333"));
        assert!(w.config.force_path_style);
        let c = w.config.credentials.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKID", "s3cr3t")
        );
        assert_eq!(WheelhouseArgs::default().source(|_| None).unwrap(), None);
    }

    #[test]
    fn hostile_values_are_refused_naming_the_flag() {
        let none = |_: &str| None;
        for (url, words) in [
            ("http://bucket/prefix", "must be s3://"),
            ("s3://bucket", "names no prefix"),
            ("s3://Bad_Bucket/p", "bucket name"),
            ("s3://bucket/../etc", "a \"..\" segment"),
            ("s3://bucket//p", "starts with '/'"),
            ("s3://bucket/a//p", "an empty segment"),
            ("s3://bucket/p\u{0}q", "is not allowed"),
            ("s3://bucket/_repo/wheels", "inside _repo/"),
        ] {
            let e = args(url).source(none).unwrap_err().to_string();
            assert!(
                e.contains("--wheelhouse") && e.contains(words),
                "{url}: {e}"
            );
        }
        let mut a = args("s3://bucket/p");
        a.wheelhouse_endpoint = Some("ftp://x".into());
        let e = a.source(none).unwrap_err().to_string();
        assert!(e.contains("--wheelhouse-endpoint"), "{e}");
        let half = |name: &str| (name == WHEELHOUSE_ACCESS_KEY_ENV).then(|| "AKID".to_string());
        let e = args("s3://bucket/p").source(half).unwrap_err().to_string();
        assert!(e.contains("both") && !e.contains("AKID"), "{e}");
    }
}

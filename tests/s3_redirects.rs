//! No fetch past the allow-list, S3 side: an endpoint that answers 301/302/307/308 pointing at
//! another origin (a second server on another loopback port) is not followed. `warm` fails
//! naming the endpoint and where it pointed, Redis is untouched, and the second server sees no
//! request at all — so neither the `x-amz-*` headers nor a `Referer` with the bucket and key
//! reach it.

mod common;

use bifrost_requirements::s3::{S3Config, S3Store};
use common::redirect::{Recorder, Redirector};
use common::services::{fresh_key, redis_get, redis_set, redis_url};
use common::{cli, stderr};

const BUCKET: &str = "bifrost";

#[tokio::test]
async fn redirects_to_another_origin_are_refused_and_reach_nothing() {
    let elsewhere = Recorder::start("evil==1.0\n", "text/plain");
    for status in [301, 302, 307, 308] {
        let endpoint = Redirector::start(status, &elsewhere.url());
        let key = fresh_key();
        redis_set(&redis_url(), &key, "untouched").await;
        let env = [
            ("BIFROST_REQUIREMENTS_STORE", "s3".to_string()),
            ("BIFROST_S3_ENDPOINT_URL", endpoint.url()),
            ("BIFROST_S3_BUCKET", BUCKET.to_string()),
            ("BIFROST_S3_ACCESS_KEY", "AKIDEXAMPLE".to_string()),
            (
                "BIFROST_S3_SECRET_KEY",
                "not-for-elsewhere-1234".to_string(),
            ),
            ("BIFROST_REQUIREMENTS_REDIS_KEY", key.clone()),
            ("REDIS_URL", redis_url()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = cli(&["warm"], &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{status}: {err}");
        assert!(
            err.contains(&endpoint.url()),
            "{status}: endpoint not named: {err}"
        );
        assert!(err.contains("redirect to"), "{status}: {err}");
        assert!(
            err.contains(&elsewhere.url()),
            "{status}: target not named: {err}"
        );
        assert!(!err.contains("not-for-elsewhere-1234"), "{status}: {err}");
        assert!(
            endpoint.requests() > 0,
            "{status}: the endpoint was never asked"
        );
        assert_eq!(
            redis_get(&redis_url(), &key).await.as_deref(),
            Some("untouched"),
            "{status}: Redis was written"
        );
        assert!(
            elsewhere.requests().is_empty(),
            "{status}: the other origin was asked: {:?}",
            elsewhere.requests()
        );

        // The library refuses the same way for every read and for the PUT of an update.
        let store = S3Store::new(
            S3Config::new(BUCKET)
                .with_endpoint(endpoint.url())
                .with_credentials("AKIDEXAMPLE", "not-for-elsewhere-1234"),
        )
        .unwrap();
        let e = store.read().await.unwrap_err();
        assert!(e.to_string().contains("redirect"), "{status}: {e}");
        let e = store
            .update(|_| Ok(Some("flask\n".into())))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("redirect"), "{status}: {e}");
        assert!(elsewhere.requests().is_empty(), "{status}");
    }
}

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::crd::{
    CacheSpec, CacheVolume, DatabaseSource, RedisCache, SecretKeyRef, Source,
    WorkspaceRequirementsSpec,
};

fn q(s: &str) -> Result<i128, String> {
    parse_quantity(s).map(|q| q.nano)
}

#[test]
fn quantities_parse_to_the_api_servers_values() {
    let g = 1_000_000_000i128;
    for (s, nano) in [
        ("0", 0),
        ("1", g),
        ("-1", -g),
        ("+1k", 1000 * g),
        ("100m", 100_000_000),
        ("1.5", 1_500_000_000),
        (".5", 500_000_000),
        ("1.", g),
        ("2Gi", 2 * (1 << 30) * g),
        ("1.5Gi", 3 * (1 << 29) * g),
        ("1e3", 1000 * g),
        ("1E-2", 10_000_000),
        ("1e+3", 1000 * g),
        ("1n", 1),
        ("0.1n", 1),   // rounded up to a nano
        ("-0.1n", -1), // away from zero
        ("1E", 1_000_000_000_000_000_000 * g),
        ("007", 7 * g),
        ("1e-40", 1),
        ("0e999999", 0),
    ] {
        assert_eq!(q(s), Ok(nano), "{s}");
    }
}

#[test]
fn quantities_the_api_server_refuses_or_that_mean_nothing() {
    for s in [
        "",
        "Gi",
        ".",
        "-",
        "+",
        "e3",
        "1e",
        "1..5",
        "1GiB",
        "2 GB",
        " 1",
        "1 ",
        "lots",
        "1.2.3",
        "1Ki3",
        "1K",
        "1ke3",
        "1Ee3",
        "1e+",
        "1e3e",
        "1i",
        "1e99999999999",
        "9Ei",
        "1e40",
        "１",
        "1\u{0}",
    ] {
        assert!(q(s).is_err(), "{s:?} accepted: {:?}", q(s));
        assert!(q(s).unwrap_err().contains(&format!("{s:?}")), "{s:?}");
    }
    // The largest accepted value is 2^63-1 units.
    assert!(q("9223372036854775807").is_ok());
    assert!(q("9223372036854775808").is_err());
    assert!(q("7Ei").is_ok());
    assert!(q("8Ei").is_err());
}

fn spec(content: &str) -> WorkspaceRequirementsSpec {
    WorkspaceRequirementsSpec {
        content: content.into(),
        ..Default::default()
    }
}

fn problems(s: &WorkspaceRequirementsSpec) -> Problems {
    validate_spec("default", s).expect_err("refused")
}

#[test]
fn a_plain_spec_and_the_defaults_are_valid() {
    assert_eq!(
        validate_spec("default", &spec("requests==2.32.3\n")),
        Ok(())
    );
    assert_eq!(validate_spec("default", &spec("# no packages\n")), Ok(()));
    let mut s = spec("a==1\n");
    s.cache = Some(CacheSpec {
        redis: Some(RedisCache {
            url_secret_ref: SecretKeyRef {
                name: "bifrost-secrets".into(),
                key: "BIFROST_REDIS_URL".into(),
            },
            key: "--bifrost:requirements".into(), // a leading dash is fine: argv uses --flag=value
            ttl_seconds: 86400,
        }),
    });
    s.install.index_urls = vec![
        "https://pypi.org/simple".into(),
        "http://127.0.0.1:8080/".into(),
    ];
    s.install.mount_path = "/home/bifrost/.local/lib/python3.11/site-packages/".into();
    s.install.size_limit = String::new();
    s.install.image = Some(String::new());
    s.install.resources = Some(ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "1Gi")])),
        limits: Some(quantities(&[("cpu", "0.1"), ("memory", "1024Mi")])),
        ..Default::default()
    });
    s.install.cache_volume = Some(CacheVolume {
        claim_name: "pip-cache".into(),
    });
    assert_eq!(validate_spec("default", &s), Ok(()));
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

#[test]
fn every_problem_names_its_field() {
    let mut s = spec("a==1\n");
    s.install.size_limit = "-1Gi".into();
    s.install.mount_path = "/etc".into();
    s.install.index_urls = vec!["--index-url=https://evil".into(), " ".into()];
    s.install.image = Some(" python:3.11".into());
    s.install.resources = Some(ResourceRequirements {
        requests: Some(quantities(&[("cpu", "2"), ("gpu", "1"), ("memory", "x")])),
        limits: Some(quantities(&[("cpu", "1"), ("memory", "-1")])),
        ..Default::default()
    });
    s.cache = Some(CacheSpec {
        redis: Some(RedisCache {
            url_secret_ref: SecretKeyRef {
                name: "Bad_Name".into(),
                key: "a/b".into(),
            },
            key: "two words".into(),
            ttl_seconds: 86400,
        }),
    });
    let p = problems(&s);
    assert_eq!(p.reason(), Reason::InvalidSpec);
    let fields: Vec<&str> = p.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.cache.redis.urlSecretRef.name",
            "spec.cache.redis.urlSecretRef.key",
            "spec.cache.redis.key",
            "spec.install.mountPath",
            "spec.install.indexUrls[0]",
            "spec.install.indexUrls[1]",
            "spec.install.image",
            "spec.install.sizeLimit",
            "spec.install.resources.requests[gpu]",
            "spec.install.resources.requests[memory]",
            "spec.install.resources.limits[memory]",
            "spec.install.resources.requests[cpu]",
        ],
        "{p}"
    );
    let text = p.to_string();
    assert!(
        text.starts_with("spec.cache.redis.urlSecretRef.name: \"Bad_Name\""),
        "{text}"
    );
    assert!(
        text.contains(
            "spec.install.resources.requests[cpu]: \"2\" must not exceed the limit \"1\""
        ),
        "{text}"
    );
    assert!(
        text.contains("spec.install.resources.limits[memory]: \"-1\" must not be negative"),
        "{text}"
    );
    assert!(text.contains("unknown resource \"gpu\""), "{text}");
}

#[test]
fn size_limit_must_be_positive() {
    for (v, ok) in [
        ("2Gi", true),
        ("1", true),
        ("0", false),
        ("-0", false),
        ("-1Gi", false),
        ("2 GB", false),
    ] {
        let mut s = spec("a\n");
        s.install.size_limit = v.into();
        assert_eq!(validate_spec("x", &s).is_ok(), ok, "{v}");
    }
}

#[test]
fn resource_claims_are_refused() {
    let mut s = spec("a\n");
    s.install.resources = Some(ResourceRequirements {
        claims: Some(vec![Default::default()]),
        ..Default::default()
    });
    assert_eq!(problems(&s).0[0].field, "spec.install.resources.claims");
}

#[test]
fn mount_paths() {
    for ok in [
        "/opt/bifrost/site-packages",
        "/opt/bifrost/site-packages/",
        "/home/bifrost/.local/lib/python3.11/site-packages",
        "/srv/pkgs",
        "/var/cache/pkgs",
        "/usr-local-ish/x",
        "/app/packages",
    ] {
        assert!(mount_path(ok).is_ok(), "{ok}: {:?}", mount_path(ok));
    }
    assert_eq!(mount_path("/x/y/"), Ok("/x/y"));
    for bad in [
        "",
        "/",
        "relative/path",
        "./x",
        "/etc",
        "/etc/x",
        "/usr/local/lib/python3.11/site-packages",
        "/lib64",
        "/libexec/x",
        "/proc/1",
        "/sys",
        "/dev/shm",
        "/boot",
        "/run/x",
        "/var/run",
        "/var/run/x",
        "/bin",
        "/sbin/x",
        "/opt",
        "/tmp",
        "/home",
        "/var",
        "/app",
        "/opt/../x",
        "/opt/./x",
        "/opt//x",
        "/x//",
        "/a:b",
        "/a b",
        "/a\nb",
        " /x",
        "/x ",
        "/bifrost-requirements",
        "/bifrost-requirements/x",
    ] {
        assert!(mount_path(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn names_keys_and_urls() {
    assert!(dns_subdomain("bifrost-secrets").is_ok());
    assert!(dns_subdomain("a.b-c.d").is_ok());
    for bad in ["", "A", "a_b", "-a", "a-", "a..b", ".a", &"a".repeat(254)] {
        assert!(dns_subdomain(bad).is_err(), "{bad}");
    }
    assert!(dns_label("bifrost-requirements-install").is_ok());
    assert!(dns_label("a.b").is_err());
    assert!(config_key("BIFROST_REDIS_URL").is_ok());
    assert!(config_key(".env").is_ok());
    for bad in ["", "a/b", "..", "..a", "a b"] {
        assert!(config_key(bad).is_err(), "{bad}");
    }
    assert!(redis_key("--bifrost-requirements").is_ok());
    for bad in ["", "a b", "a\tb", "a\u{7f}", "a\nb"] {
        assert!(redis_key(bad).is_err(), "{bad:?}");
    }
    assert!(index_url("https://pypi.org/simple").is_ok());
    assert!(index_url("file:///srv/wheels").is_ok());
    for bad in [
        "",
        "-i",
        "--index-url",
        "pypi.org/simple",
        "https://",
        "https://a b",
        "1http://x",
        "://x",
    ] {
        assert!(index_url(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn absent_content_is_not_empty_requirements() {
    for content in ["", "\n", "  \n\t"] {
        let p = problems(&spec(content));
        assert_eq!(p.reason(), Reason::NoContent, "{content:?}");
        assert_eq!(p.0[0].field, "spec.content");
        assert!(p.to_string().contains("comment-only"), "{p}");
    }
    // With a source, an empty row is the source's word.
    let mut s = spec("");
    s.source = Some(Source {
        database: Some(DatabaseSource {
            url_secret_ref: SecretKeyRef {
                name: "db".into(),
                key: "url".into(),
            },
            path: "requirements.txt".into(),
            entity_type: "requirements".into(),
            poll_interval_seconds: 30,
        }),
        s3: None,
    });
    assert_eq!(validate_spec("x", &s), Ok(()));
    // So is an empty S3 object's.
    let mut s = spec("");
    s.source = Some(Source {
        database: None,
        s3: Some(s3_source("bifrost")),
    });
    assert_eq!(validate_spec("x", &s), Ok(()));
    // An empty source object is no source.
    let mut s = spec("");
    s.source = Some(Source {
        database: None,
        s3: None,
    });
    assert_eq!(problems(&s).reason(), Reason::NoContent);
}

fn s3_source(bucket: &str) -> crate::crd::S3Source {
    serde_json::from_value(serde_json::json!({
        "bucket": bucket,
        "endpoint": "http://seaweedfs:8333",
        "credentialsSecretRef": {"name": "bifrost-secrets"},
    }))
    .unwrap()
}

#[test]
fn s3_source_defaults_follow_bifrost() {
    let s3 = s3_source("bifrost");
    assert_eq!(s3.key, "_repo/requirements.txt");
    assert_eq!(s3.region, "us-east-1");
    assert_eq!(s3.poll_interval_seconds, 10);
    let r = s3.credentials_secret_ref.as_ref().unwrap();
    assert_eq!(
        (
            r.access_key_id_key.as_str(),
            r.secret_access_key_key.as_str()
        ),
        ("BIFROST_S3_ACCESS_KEY", "BIFROST_S3_SECRET_KEY")
    );
    // Path style follows the endpoint unless said otherwise.
    assert!(s3.path_style());
    let aws: crate::crd::S3Source =
        serde_json::from_value(serde_json::json!({"bucket": "b"})).unwrap();
    assert!(!aws.path_style());
    let explicit = crate::crd::S3Source {
        force_path_style: Some(false),
        ..s3
    };
    assert!(!explicit.path_style());
}

#[test]
fn database_and_s3_together_are_refused() {
    let mut s = spec("requests\n");
    s.source = Some(
        serde_json::from_value(serde_json::json!({
            "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            "s3": {"bucket": "bifrost"},
        }))
        .unwrap(),
    );
    let p = problems(&s);
    assert_eq!(p.0[0].field, "spec.source");
    assert!(p.to_string().contains("both database and s3"), "{p}");
}

#[test]
fn s3_source_fields_are_checked() {
    let mut s = spec("requests\n");
    let mut bad = s3_source("Not_A_Bucket");
    bad.credentials_secret_ref.as_mut().unwrap().name = "Bad Name".into();
    s.source = Some(Source {
        database: None,
        s3: Some(bad),
    });
    let p = problems(&s);
    let fields: Vec<&str> = p.0.iter().map(|x| x.field.as_str()).collect();
    assert!(fields.contains(&"spec.source.s3"), "{p}");
    assert!(
        fields.contains(&"spec.source.s3.credentialsSecretRef.name"),
        "{p}"
    );
}

#[test]
fn content_size_is_limited_up_front() {
    let line = "package-number-0000==1.0.0\n";
    let at_limit: String = line.repeat(MAX_CONTENT_BYTES / line.len());
    assert_eq!(validate_spec("x", &spec(&at_limit)), Ok(()));
    let big = "requests==2.32.3\n".repeat(100_000);
    let p = problems(&spec(&big));
    assert_eq!(p.reason(), Reason::TooLarge);
    assert!(p.to_string().contains("262144 bytes"), "{p}");
    // The words every other writer uses (the CLI on both stores, the mirrors).
    assert!(
        p.to_string().contains(&crate::limit::exceeded(big.len())),
        "{p}"
    );
    // Escaping counts: 200 KiB of characters that JSON writes as \uXXXX overflow the snapshot.
    let escaped = "é".repeat(100 * 1024);
    let p = problems(&spec(&escaped));
    assert_eq!(p.reason(), Reason::TooLarge);
    assert!(p.to_string().contains("655360 bytes"), "{p}");
    // The most fundamental reason wins when there are several problems.
    let mut s = spec(&big);
    s.install.size_limit = "-1".into();
    assert_eq!(problems(&s).reason(), Reason::TooLarge);
}

#[test]
fn long_names_cannot_name_their_snapshot() {
    let name = "a".repeat(241);
    let p = validate_spec(&name, &spec("a\n")).unwrap_err();
    assert_eq!(p.0[0].field, "metadata.name");
    assert!(validate_spec(&"a".repeat(240), &spec("a\n")).is_ok());
}

#[test]
fn the_interpreter_to_resolve_for_is_checked_field_by_field() {
    let mut s = spec("a==1\n");
    s.install.python = Some(crate::crd::Interpreter {
        version: "3.11".into(),
        platform: "x86_64-manylinux_2_28".into(),
    });
    assert!(validate_spec("default", &s).is_ok());
    s.install.python = Some(crate::crd::Interpreter {
        version: "2.7".into(),
        platform: "win_amd64".into(),
    });
    let p = problems(&s);
    assert_eq!(p.reason(), Reason::InvalidSpec);
    let text = p.to_string();
    assert!(
        text.contains("spec.install.python.version: \"2.7\" is not a Python 3 version")
            && text.contains("spec.install.python.platform: \"win_amd64\" is not one of"),
        "{text}"
    );
}

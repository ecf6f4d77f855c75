use super::config::*;
use super::errors::*;
use super::store::{bucket_endpoint, decode};
use super::*;
use object_store::path::Path;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn bifrost_env_gives_path_style_on_its_endpoint_with_static_keys() {
    let c = S3Config::from_bifrost_env(env(&[
        (ENV_BUCKET, "bifrost"),
        (ENV_ENDPOINT, "http://seaweedfs:8333"),
        (ENV_ACCESS_KEY, "AKIAEXAMPLE"),
        (ENV_SECRET_KEY, "s3cr3t/with+chars"),
    ]))
    .unwrap();
    assert_eq!(c.bucket, "bifrost");
    assert_eq!(c.key, DEFAULT_KEY);
    assert_eq!(c.region, DEFAULT_REGION);
    assert_eq!(c.endpoint.as_deref(), Some("http://seaweedfs:8333"));
    assert!(c.force_path_style);
    assert_eq!(
        c.credentials,
        Some(Credentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "s3cr3t/with+chars".into()
        })
    );
}

#[test]
fn bifrost_env_without_keys_uses_the_default_chain_and_aws() {
    let c = S3Config::from_bifrost_env(env(&[
        (ENV_BUCKET, "bifrost"),
        (ENV_REGION, "eu-west-1"),
        (ENV_ENDPOINT, ""),
        (ENV_ACCESS_KEY, " "),
    ]))
    .unwrap();
    assert_eq!(c.endpoint, None);
    assert!(!c.force_path_style);
    assert_eq!(c.region, "eu-west-1");
    assert_eq!(c.credentials, None);
}

#[test]
fn bifrost_env_errors_name_the_variable() {
    let e = S3Config::from_bifrost_env(env(&[])).unwrap_err();
    assert!(e.to_string().contains(ENV_BUCKET), "{e}");
    let e = S3Config::from_bifrost_env(env(&[(ENV_BUCKET, "b-1"), (ENV_ACCESS_KEY, "AK")]))
        .unwrap_err();
    assert!(e.to_string().contains(ENV_SECRET_KEY), "{e}");
    let e = S3Config::from_bifrost_env(env(&[
        (ENV_BUCKET, "b-1"),
        (ENV_SECRET_KEY, "hunter2-secret"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains(ENV_ACCESS_KEY), "{e}");
    assert!(!e.to_string().contains("hunter2-secret"), "{e}");
    let e = S3Config::from_bifrost_env(env(&[(ENV_BUCKET, "Has_Upper")])).unwrap_err();
    assert!(e.to_string().contains("Has_Upper"), "{e}");
}

#[test]
fn debug_never_shows_the_secret() {
    let c = S3Config::new("bucket")
        .with_endpoint("https://user:urlpass@minio.example:9000")
        .with_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG");
    let shown = format!("{c:?}");
    assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    assert!(!shown.contains("urlpass"), "{shown}");
    assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
}

#[test]
fn hostile_buckets_are_refused_with_the_name_and_the_rule() {
    for (bucket, rule) in [
        ("", "3 to 63"),
        ("ab", "3 to 63"),
        (&"a".repeat(64) as &str, "3 to 63"),
        ("bucket/../other", "'/'"),
        ("bucket?acl", "'?'"),
        ("Bucket", "'B'"),
        ("buck et", "' '"),
        ("buck\net", "'\\n'"),
        ("-bucket", "start and end"),
        ("bucket.", "start and end"),
        ("a..b", "\"..\""),
        ("192.168.1.1", "IP address"),
        ("büket", "'ü'"),
    ] {
        let e = validate_bucket(bucket).unwrap_err().to_string();
        assert!(e.contains(rule), "{bucket:?}: {e}");
        assert!(e.contains(&format!("{bucket:?}")), "{bucket:?}: {e}");
    }
    for ok in ["bifrost", "my-bifrost-bucket", "a.b-c.123"] {
        validate_bucket(ok).unwrap();
    }
}

#[test]
fn hostile_keys_are_refused_with_the_reason() {
    for (key, why) in [
        ("", "empty"),
        ("/_repo/requirements.txt", "empty path segment"),
        ("_repo//requirements.txt", "empty path segment"),
        ("_repo/", "empty path segment"),
        ("_repo/../secrets.txt", "\"..\""),
        ("./requirements.txt", "\".\""),
        ("_repo/req\u{0}.txt", "control character"),
        ("_repo/req\r\n.txt", "control character"),
        (&"k".repeat(1025) as &str, "1024"),
    ] {
        let e = validate_key(key).unwrap_err().to_string();
        assert!(e.contains(why), "{key:?}: {e}");
    }
    for ok in [
        DEFAULT_KEY,
        "requirements.txt",
        "a b/ü ñ/requirements (1).txt",
        "x?y#z%41",
    ] {
        validate_key(ok).unwrap();
        Path::parse(ok).unwrap();
    }
}

#[test]
fn endpoints_with_credentials_or_no_scheme_are_refused_without_the_password() {
    for (endpoint, why) in [
        ("seaweedfs:8333", "http:// or https://"),
        ("ftp://host", "http:// or https://"),
        ("http://user:topsecret@host:8333", "holds credentials"),
        ("http://", "no host"),
        ("http://host:8333/?x=1", "query"),
    ] {
        let e = validate_endpoint(endpoint).unwrap_err().to_string();
        assert!(e.contains(why), "{endpoint:?}: {e}");
        assert!(!e.contains("topsecret"), "{e}");
    }
    validate_endpoint("https://s3.us-east-1.amazonaws.com").unwrap();
    validate_endpoint("http://127.0.0.1:8333/").unwrap();
}

#[test]
fn virtual_hosting_puts_the_bucket_in_the_host() {
    assert_eq!(
        bucket_endpoint("https://minio.example:9000/", "b", false),
        "https://b.minio.example:9000"
    );
    assert_eq!(
        bucket_endpoint("http://seaweedfs:8333", "b", true),
        "http://seaweedfs:8333"
    );
}

#[test]
fn decode_keeps_bytes_and_names_the_offset_of_bad_ones() {
    assert_eq!(decode(b"a==1\r\nb").unwrap(), "a==1\r\nb");
    assert_eq!(decode(b"").unwrap(), "");
    let e = decode(b"ok\nbad\xff\n").unwrap_err();
    assert!(e.contains("offset 6"), "{e}");
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains("0xff"), "{e}");
    // A truncated multi-byte sequence at the end.
    let e = decode("é".as_bytes().split_last().unwrap().1).unwrap_err();
    assert!(e.contains("offset 0"), "{e}");
}

#[test]
fn denial_names_the_s3_code_and_server_errors_are_recognised() {
    let r = denial_reason(
        "Server returned non-2xx status code: 403 Forbidden: <Code>SignatureDoesNotMatch</Code>",
    );
    assert!(
        r.starts_with("SignatureDoesNotMatch: the secret access key"),
        "{r}"
    );
    assert!(server_error(
        "Error performing GET in 1s - Server returned non-2xx status code: 503 Service Unavailable: "
    ));
    assert!(!server_error(
        "Server returned non-2xx status code: 400 Bad Request"
    ));
}

#[test]
fn descriptions_are_one_line_with_the_s3_code_and_the_root_cause() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let e = Outer(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "Connection refused",
    ));
    assert_eq!(describe(&e), "error sending request: Connection refused");
    let xml = std::io::Error::other(
        "status code: 403 Forbidden: <?xml version=\"1.0\"?>\n<Error>\n  <Code>SignatureDoesNotMatch</Code>\n  \
         <Message>The request signature we calculated does not match</Message>\n</Error>",
    );
    assert_eq!(
        describe(&xml),
        "status code: 403 Forbidden: SignatureDoesNotMatch: The request signature we calculated \
         does not match"
    );
}

#[test]
fn the_store_can_be_shared_across_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<S3Store>();
}

#[test]
fn scrub_masks_the_secret_raw_and_percent_encoded() {
    let c = S3Config::new("bucket").with_credentials("AK", "a/b+c=secret");
    let out = scrub(&c, "sig a/b+c=secret and a%2Fb%2Bc%3Dsecret");
    assert!(!out.contains("secret"), "{out}");
}

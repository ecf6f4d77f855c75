use std::time::Duration;

use super::*;
use crate::crd::{Interpreter, WorkspaceRequirementsSpec};

fn resource(install: serde_json::Value) -> WorkspaceRequirements {
    let spec: WorkspaceRequirementsSpec =
        serde_json::from_value(serde_json::json!({"content": "alpha\n", "install": install}))
            .unwrap();
    WorkspaceRequirements::new("default", spec)
}

fn resolver(allowed: &[&str]) -> Resolver {
    Resolver {
        uv: "uv".into(),
        python: "python3".into(),
        allowed_index_urls: allowed.iter().map(|u| u.to_string()).collect(),
        file_origins: vec![crate::lock::DEFAULT_FILE_ORIGIN.into()],
        timeout: Duration::from_secs(1),
        memory_limit: 1 << 30,
        cache_dir: "/tmp".into(),
        wheelhouse_retention: crate::wheelhouse::DEFAULT_RETENTION,
    }
}

fn python() -> serde_json::Value {
    serde_json::json!({"version": "3.11", "platform": "x86_64-manylinux_2_28"})
}

#[test]
fn the_controller_resolves_with_an_interpreter_and_an_allowed_index() {
    let r = resolver(&[crate::lock::DEFAULT_INDEX, "http://index.local/simple"]);
    let obj = resource(serde_json::json!({"python": python(), "onlyBinary": true}));
    assert_eq!(
        plan(&obj, "h", Some(&r)),
        Plan::Controller(Key {
            content_hash: "h".into(),
            interpreter: Interpreter {
                version: "3.11".into(),
                platform: "x86_64-manylinux_2_28".into(),
            },
            index_urls: vec![crate::lock::DEFAULT_INDEX.into()],
            only_binary: true,
        })
    );
    let own = resource(
        serde_json::json!({"python": python(), "indexUrls": ["http://index.local/simple/"]}),
    );
    let Plan::Controller(key) = plan(&own, "h", Some(&r)) else {
        panic!("an allowed index is resolved by the controller");
    };
    assert_eq!(key.index_urls, ["http://index.local/simple/"]);
}

#[test]
fn pods_resolve_when_asked_or_when_the_operator_may_not() {
    let r = resolver(&[crate::lock::DEFAULT_INDEX]);
    let asked = resource(serde_json::json!({"resolve": "Pod"}));
    assert_eq!(
        plan(&asked, "h", Some(&r)),
        Plan::Pods("spec.install.resolve is Pod".into())
    );
    let foreign = resource(serde_json::json!({
        "python": python(), "indexUrls": ["http://10.0.0.9:3141/simple"]
    }));
    let Plan::Pods(why) = plan(&foreign, "h", Some(&r)) else {
        panic!("an index the operator does not allow is never fetched by it");
    };
    assert!(why.contains("http://10.0.0.9:3141/simple"), "{why}");
    let Plan::Pods(why) = plan(
        &resource(serde_json::json!({"python": python()})),
        "h",
        None,
    ) else {
        panic!("without a resolver the pods resolve");
    };
    assert!(why.contains("--no-resolver"), "{why}");
}

#[test]
fn the_controller_needs_the_interpreter_it_resolves_for() {
    let r = resolver(&[crate::lock::DEFAULT_INDEX]);
    assert_eq!(
        plan(&resource(serde_json::json!({})), "h", Some(&r)),
        Plan::NoInterpreter
    );
}

#[test]
fn a_remembered_resolution_answers_for_its_key_and_failures_until_their_retry() {
    let key = |hash: &str| Key {
        content_hash: hash.into(),
        interpreter: Interpreter {
            version: "3.11".into(),
            platform: "x86_64-manylinux_2_28".into(),
        },
        index_urls: vec![],
        only_binary: false,
    };
    let lock = Lock {
        content_hash: "a".into(),
        interpreter: key("a").interpreter,
        index_urls: vec![],
        only_binary: false,
        body: "alpha==1.0\n".into(),
    };
    let ok = Resolution::new(key("a"), Ok((lock.clone(), "t".into())));
    assert_eq!(ok.answer(&key("a")), Some(Ok((lock, "t".into()))));
    assert_eq!(ok.answer(&key("b")), None, "another content resolves anew");
    let failed = Resolution::new(
        key("a"),
        Err((Failure::Unresolvable("no".into()), Duration::from_secs(60))),
    );
    let Some(Err((Failure::Unresolvable(m), left))) = failed.answer(&key("a")) else {
        panic!("a fresh failure is remembered");
    };
    assert_eq!(m, "no");
    assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    let expired = Resolution::new(
        key("a"),
        Err((Failure::Failed("down".into()), Duration::ZERO)),
    );
    assert_eq!(
        expired.answer(&key("a")),
        None,
        "past its retry, it is tried again"
    );
}

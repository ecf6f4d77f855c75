//! Spec validation and status truth on a real control plane (etcd + kube-apiserver +
//! kube-controller-manager 1.20.2) with real Redis: an invalid spec is reported and writes
//! nothing while labelled pods still start (uninjected, counted); a pod the API server refuses
//! anyway shows in the status; content too large for the ConfigMap is refused up front; a
//! flushed Redis is re-warmed within seconds; absent content is not empty requirements; a pod
//! template with a copied injection marker is reported.

mod common;
#[path = "spec_validation/snapshot.rs"]
mod snapshot;

use bifrost_requirements::k8s_compat::Text;
use std::time::{Duration, Instant};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::{INJECTED_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements};
use bifrost_requirements::requirements::content_hash;
use common::admission::webhook_namespace;
use common::fixtures::{pods_of, uninjected};
use common::operator::{condition, redis_cache, template_hash, wait_for};
use common::scenario::{Ns, Scenario, says};
use common::services::{RedisServer, fresh_key, redis_get, redis_url};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Pod};
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn replica_failure(d: &Deployment) -> Option<String> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.text() == "ReplicaFailure" && c.status.text() == "True")
        .map(|c| c.message.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_quantity_is_reported_and_labelled_pods_still_start_uninjected() {
    let ns = Ns::from(webhook_namespace("spec-invalid").await);
    ns.secret("redis", "url", &redis_url()).await;
    let key = fresh_key();
    ns.wsreq("good", json!({"content": "a==1\n"})).await;
    ns.wsreq(
        "bad",
        json!({
            "content": "a==1\n",
            "cache": redis_cache(&key),
            "install": {"sizeLimit": "-1Gi", "resources": {"limits": {"cpu": "-1"}}},
        }),
    )
    .await;
    let webhook = ns.webhook_injecting("good").await;

    a_clashing_container_name_is_admitted_uninjected(&ns).await;

    let obj = ns
        .wait_within("bad", "Valid", "False", Some("InvalidSpec"), T)
        .await;
    let named = [
        "spec.install.sizeLimit",
        "-1Gi",
        "spec.install.resources.limits[cpu]",
    ];
    says(&obj, "Valid", "False", &named);
    says(&obj, "Ready", "False", &[]);
    assert_eq!(
        obj.status.as_ref().unwrap().observed_generation,
        obj.metadata.generation
    );

    let d = labelled_pods_start_uninjected_and_counted(&ns).await;
    // Nothing was written from the invalid spec.
    assert_eq!(redis_get(&redis_url(), &key).await, None);
    let cms = ns.api::<ConfigMap>();
    assert!(cms.get_opt("bad-requirements").await.unwrap().is_none());
    assert_eq!(template_hash(&d), None, "an invalid spec rolled out");
    // A Warning Event on the resource, and one where the pod's creator sees it.
    wait_for("the Events", T, || async {
        let e = ns.events();
        (e.contains("InvalidSpec") && e.contains("RequirementsInvalid")).then_some(())
    })
    .await;
    drop(webhook);
}

/// An app container already using the install container's name: admitted, not injected
/// (the patch would make the API server refuse the pod with "Duplicate value").
async fn a_clashing_container_name_is_admitted_uninjected(ns: &Ns) {
    let clash: Pod = serde_json::from_value(json!({
        "metadata": {"name": "clash", "labels": {OPT_IN_LABEL: "good"}},
        "spec": {"containers": [{"name": "bifrost-requirements-install", "image": "python:3.11-slim"}]}
    }))
    .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let admitted = ns
        .api::<Pod>()
        .create(&dry, &clash)
        .await
        .expect("the pod is admitted");
    assert!(
        !admitted.annotations().contains_key(INJECTED_ANNOTATION)
            && admitted.spec.unwrap().init_containers.is_none(),
        "a clashing pod was injected"
    );
}

/// Its labelled Deployment still gets its pod: admitted uninjected, and counted.
async fn labelled_pods_start_uninjected_and_counted(ns: &Ns) -> Deployment {
    ns.deployment("worker", "bad", 1).await;
    let pods = pods_of(&ns.client, &ns.name, "worker", 1).await;
    let pod = &pods[0];
    assert!(
        !pod.annotations().contains_key(INJECTED_ANNOTATION),
        "{pod:#?}"
    );
    assert!(pod.spec.as_ref().unwrap().init_containers.is_none());
    wait_for("uninjectedPods: 1", T, || async {
        (uninjected(&ns.client, &ns.name, "bad", "worker").await == Some(1)).then_some(())
    })
    .await;
    let d = ns.api::<Deployment>().get("worker").await.unwrap();
    assert_eq!(replica_failure(&d), None, "pod creation failed");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_api_server_refuses_anyway_shows_in_the_status() {
    let ns = Ns::from(webhook_namespace("spec-refused").await);
    let spec = json!({"content": "a==1\n", "rollout": {"debounceSeconds": 0}});
    ns.wsreq("default", spec).await;
    let webhook = ns.webhook_injecting("default").await;
    create_capped_workloads(&ns).await;

    let obj = ns
        .wait_within(
            "default",
            "RolledOut",
            "False",
            Some("PodCreationFailed"),
            T,
        )
        .await;
    // The API server's message, passed on.
    let (_, message) = says(&obj, "RolledOut", "False", &["Deployment/worker", "memory"]);
    eprintln!("RolledOut=False: {message}");
    says(&obj, "Ready", "False", &["RolledOut"]);
    let w = &obj.status.as_ref().unwrap().workloads[0];
    assert!(
        w.message
            .as_deref()
            .is_some_and(|m| m.contains("cannot create pods")),
        "{w:?}"
    );
    wait_for("the PodCreationFailed Event", T, || async {
        ns.events().contains("PodCreationFailed").then_some(())
    })
    .await;
    // A StatefulSet reports no failure in its status: it counts once it stalls for a while.
    let started = Instant::now();
    let obj = wait_for("the stalled StatefulSet reported", T, || async {
        let obj = ns.get("default").await;
        let (_, reason, message) = condition(&obj, "RolledOut")?;
        (reason == "PodCreationFailed" && message.contains("StatefulSet/store")).then_some(obj)
    })
    .await;
    eprintln!(
        "StatefulSet stall reported after {:?}: {}",
        started.elapsed(),
        condition(&obj, "RolledOut").unwrap().2
    );

    lift_the_cap(&ns).await;
    // The pods are created and injected with the hash; no kubelet runs them here.
    let obj = wait_for("pods created and injected, rolling", T, || async {
        let obj = ns.get("default").await;
        let rolling = condition(&obj, "RolledOut")?.1 == "RollingOut";
        let all_injected = obj.status.as_ref()?.workloads.iter().all(|w| {
            (w.replicas, w.updated_replicas, w.ready_updated_replicas)
                == (Some(1), Some(1), Some(0))
        });
        (rolling && all_injected).then_some(obj)
    })
    .await;
    let status = obj.status.as_ref().unwrap();
    assert_eq!(status.workloads.len(), 2, "{:?}", status.workloads);
    assert!(
        status.workloads.iter().all(|w| w.message.is_none()),
        "{:?}",
        status.workloads
    );
    assert_eq!(condition(&obj, "Ready").unwrap().1, "RollingOut");
    drop(webhook);
}

/// A Deployment and a StatefulSet labelled for `default` in a namespace that caps containers at
/// 1Gi, which the injected install container exceeds (it asks for 2Gi).
async fn create_capped_workloads(ns: &Ns) {
    let limits: LimitRange = serde_json::from_value(json!({
        "metadata": {"name": "small"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "1Gi"}}]}
    }))
    .unwrap();
    ns.api::<LimitRange>()
        .create(&PostParams::default(), &limits)
        .await
        .unwrap();
    let d: Deployment = serde_json::from_value(capped("worker")).unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let mut sts = capped("store");
    sts["spec"]["serviceName"] = json!("store");
    let sts: StatefulSet = serde_json::from_value(sts).unwrap();
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
}

/// A one-replica workload `app` labelled for `default`, whose container asks for 512Mi.
fn capped(app: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": app},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app, OPT_IN_LABEL: "default"}},
                "spec": {"containers": [{"name": "worker", "image": "python:3.11-slim",
                                         "resources": {"limits": {"memory": "512Mi"}}}]}
            }
        }
    })
}

/// Lifting the cap lets the pods be created.
async fn lift_the_cap(ns: &Ns) {
    ns.api::<LimitRange>()
        .delete("small", &Default::default())
        .await
        .unwrap();
    // The ReplicaSet controller backs off after failures; a metadata change makes it retry now.
    for what in [&["rs", "--all"][..], &["statefulset", "store"]] {
        let mut args = vec!["annotate"];
        args.extend(what);
        args.extend(["-n", &ns.name, "bifrost-test/retry=1", "--overwrite"]);
        common::assert_ok(&common::k8s::control_plane().kubectl(&args));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_or_restarted_redis_is_rewarmed_within_seconds() {
    let op = Scenario::start("spec-flush", &[]).await;
    // A Redis of its own, to flush and restart: the Secret `redis` names it.
    let redis = RedisServer::start();
    op.secret("redis", "url", &redis.url()).await;
    let key = &op.key;
    let content = "a==1\n";
    op.wsreq("default", json!({"content": content, "cache": op.cache()}))
        .await;
    op.wait_within("default", "CacheWarmed", "True", None, T)
        .await;
    let expected = Payload::new(content).to_json();
    assert_eq!(redis_get(&redis.url(), key).await, Some(expected.clone()));

    for round in ["FLUSHALL", "restart"] {
        let warmed_before = op.get("default").await.status.unwrap().cache_warmed_at;
        tokio::time::sleep(Duration::from_secs(1)).await; // a later second for cacheWarmedAt
        if round == "FLUSHALL" {
            let c = redis::Client::open(redis.url()).unwrap();
            let mut conn = c.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        } else {
            redis.stop();
            redis.start_again();
        }
        let gone = Instant::now();
        assert_eq!(redis_get(&redis.url(), key).await, None);
        wait_for(&format!("the key back after {round}"), T, || async {
            (redis_get(&redis.url(), key).await.as_deref() == Some(expected.as_str())).then_some(())
        })
        .await;
        let missing = gone.elapsed();
        eprintln!("{round}: the key was missing for {missing:?}");
        assert!(
            missing < Duration::from_secs(15),
            "{round}: the key stayed missing for {missing:?}"
        );
        // The status is patched after the key is written: wait for it rather than race it.
        wait_for(&format!("{round}: cacheWarmedAt moved"), T, || async {
            let obj = op.get("default").await;
            let warmed = condition(&obj, "CacheWarmed")?.0 == "True";
            (warmed && obj.status?.cache_warmed_at != warmed_before).then_some(())
        })
        .await;
    }
    wait_for(
        "the CacheWarmed Event naming the missing key",
        T,
        || async { op.events().contains("the key was missing").then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_content_is_not_empty_requirements() {
    let op = Scenario::start("spec-empty", &[]).await;
    let spec = json!({"cache": op.cache(), "rollout": {"debounceSeconds": 0}});
    op.wsreq("default", spec).await;
    op.deployment("worker", "default", 1).await;
    let obj = op
        .wait_within("default", "Valid", "False", Some("NoContent"), T)
        .await;
    says(&obj, "Valid", "False", &["spec.content", "comment-only"]);
    says(&obj, "Ready", "False", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(op.cached().await, None, "Redis written");
    let cms = op.api::<ConfigMap>();
    assert!(
        cms.get_opt("default-requirements").await.unwrap().is_none(),
        "snapshot written"
    );
    assert_eq!(
        op.deployment_hash("worker").await,
        None,
        "rolled out no packages"
    );

    // Saying "no packages" explicitly is valid, and rolls out.
    let none = "# no packages\n";
    op.set_content("default", none).await;
    // Valid, cached, snapshotted and rolling (no kubelet runs the pods here).
    let obj = op
        .wait_within("default", "RolledOut", "False", Some("RollingOut"), T)
        .await;
    assert_eq!(condition(&obj, "Valid").unwrap().0, "True");
    assert_eq!(obj.status.unwrap().package_count, Some(0));
    assert_eq!(op.cached().await, Some(Payload::new(none).to_json()));
    let h = content_hash(none);
    wait_for("the rollout of the explicit empty file", T, || async {
        (op.deployment_hash("worker").await.as_deref() == Some(h.as_str())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_with_a_copied_injection_marker_is_reported() {
    // No webhook is registered for this namespace: nothing injects, the marker lies.
    let op = Scenario::start("spec-marker", &["--no-webhook"]).await;
    let spec = json!({"content": "a==1\n", "rollout": {"strategy": "Manual"}});
    op.wsreq("default", spec).await;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "copied"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "copied"}},
            "template": {
                "metadata": {
                    "labels": {"app": "copied", OPT_IN_LABEL: "default"},
                    "annotations": {INJECTED_ANNOTATION: content_hash("a==1\n")}
                },
                "spec": {"containers": [{"name": "worker", "image": "python:3.11-slim"}]}
            }
        }
    }))
    .unwrap();
    op.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    pods_of(&op.client, &op.name, "copied", 2).await;
    let w = wait_for("the copied marker reported", T, || async {
        let status = op.get("default").await.status?;
        let w = status
            .workloads
            .iter()
            .find(|w| w.name == "copied")?
            .clone();
        (w.uninjected_pods == Some(2)).then_some(w)
    })
    .await;
    let message = w.message.unwrap_or_default();
    assert!(
        message.contains(INJECTED_ANNOTATION) && message.contains("copied"),
        "{message}"
    );
}

/// The install container's argv, as the webhook builds it for a Redis key and an index URL that
/// look like flags, is parsed by the installer as values (it used to exit 2 on argument parsing).
#[test]
fn values_that_look_like_flags_reach_the_installer_as_values() {
    use bifrost_requirements::webhook::inject::{self, INSTALL_CONTAINER, Settings};
    let spec = json!({
        "content": "a==1\n",
        "cache": {"redis": {"urlSecretRef": {"name": "redis", "key": "url"}, "key": "--bifrost-requirements"}},
        "install": {"onFailure": "Continue", "indexUrls": ["https://-i.example/simple"]},
    });
    let mut r: WorkspaceRequirements = serde_json::from_value(json!({
        "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
        "metadata": {"name": "default", "namespace": "bifrost"}, "spec": spec,
    }))
    .unwrap();
    r.metadata.namespace = Some("bifrost".into());
    bifrost_requirements::spec::validate(&r).expect("a valid spec");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"labels": {OPT_IN_LABEL: "default"}},
        "spec": {"containers": [{"name": "worker", "image": "w"}]}
    }))
    .unwrap();
    let plan = inject::plan(&pod, &r, &Settings::default()).unwrap();
    let mut doc = serde_json::to_value(&pod).unwrap();
    json_patch::patch(&mut doc, &plan.patch.0).unwrap();
    let injected: Pod = serde_json::from_value(doc).unwrap();
    let install = injected.spec.unwrap().init_containers.unwrap();
    let install = install
        .iter()
        .find(|c| c.name == INSTALL_CONTAINER)
        .unwrap();
    // The container's paths, moved to this machine.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("site-packages");
    let args: Vec<String> = install
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("--target", _)) => format!("--target={}", target.display()),
            Some(("--uv", _)) => "--uv=uv".into(),
            Some(("--fallback-file", _)) => {
                format!("--fallback-file={}", dir.path().join("none.json").display())
            }
            _ => a,
        })
        .collect();
    assert!(
        args.contains(&"--redis-key=--bifrost-requirements".to_string()),
        "{args:?}"
    );
    let dead = common::services::dead_url("redis");
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::cli(&arg_refs, &[("REDIS_URL", &dead)]);
    let stderr = common::stderr(&out);
    assert_ne!(
        out.status.code(),
        Some(2),
        "argument parsing failed: {stderr}"
    );
    assert!(stderr.contains("key --bifrost-requirements"), "{stderr}");
}

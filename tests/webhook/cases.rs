//! The cases the specification names, the webhook down (`failurePolicy: Ignore`), and the
//! namespaces it leaves alone.

use super::*;
use k8s_openapi::api::events::v1::Event;

/// Each case the specification names, through the real API server: unlabelled, unknown name,
/// already injected (resubmitted), PYTHONPATH from valueFrom with several app containers, the
/// operator's own pods — and malformed bodies and wrong methods/paths sent directly.
#[tokio::test]
async fn admission_cases_behave_as_specified() {
    let (client, ns) = webhook_namespace("wh-cases").await;
    let spec = json!({"content": CONTENT, "install": {"mode": "PythonPath"}});
    create_wsreq(&client, &ns, "default", spec).await;
    let wh = Webhook::start(&client, &ns).await;
    let bundle = ca_bundle(&client, &wh.config).await;
    wait_until_injecting(&client, &ns, "default").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let events = Api::<Event>::namespaced(client.clone(), &ns);

    unlabelled_is_untouched(&pods).await;
    unknown_resource_is_admitted_with_a_warning(&pods, &events).await;
    resubmitted_pod_is_left_as_it_is(&pods).await;
    several_app_containers(&pods).await;
    operators_own_pods_are_never_mutated(&pods).await;
    malformed_requests_sent_directly(&bundle, wh.port, &ns);
    // The operator is still serving after all of that.
    wait_until_injecting(&client, &ns, "default").await;
    env_from_warns_only_in_python_path_mode(&client, &ns, &pods, &events).await;
    drop(wh);
}

/// Unlabelled: untouched.
async fn unlabelled_is_untouched(pods: &Api<Pod>) {
    let pp = PostParams::default();
    let p = pods
        .create(&pp, &pod_json("plain", None, worker_container()))
        .await
        .unwrap();
    assert!(annotation(&p).is_none() && init_names(&p).is_empty());
    assert_eq!(
        env_value(container(&p, "worker"), "PYTHONPATH").as_deref(),
        Some("/app")
    );
}

/// Unknown resource: admitted unchanged, and a Warning Event says why.
async fn unknown_resource_is_admitted_with_a_warning(pods: &Api<Pod>, events: &Api<Event>) {
    let pp = PostParams::default();
    let p = pods
        .create(
            &pp,
            &pod_json("orphan", Some("nonexistent"), worker_container()),
        )
        .await
        .unwrap();
    assert!(annotation(&p).is_none() && init_names(&p).is_empty());
    let note = wait_for("RequirementsNotFound event", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            (e.reason.as_deref() == Some("RequirementsNotFound")
                && e.regarding.as_ref()?.name.as_deref() == Some("orphan"))
            .then(|| e.note.unwrap_or_default())
        })
    })
    .await;
    assert!(
        note.contains("nonexistent") && note.contains("does not exist"),
        "{note}"
    );
}

/// Injected once; the stored pod submitted again is left exactly as it is.
async fn resubmitted_pod_is_left_as_it_is(pods: &Api<Pod>) {
    let pp = PostParams::default();
    let first = pods
        .create(&pp, &pod_json("once", Some("default"), worker_container()))
        .await
        .unwrap();
    assert_eq!(init_names(&first), [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER]);
    let mut again = serde_json::to_value(&first).unwrap();
    let meta = again["metadata"].as_object_mut().unwrap();
    // What the API server sets goes: the pod as a client would submit it again.
    const SET_BY_THE_SERVER: [&str; 5] = [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "selfLink",
    ];
    for k in SET_BY_THE_SERVER {
        meta.remove(k);
    }
    meta.insert("name".into(), json!("twice"));
    again.as_object_mut().unwrap().remove("status");
    let twice = pods
        .create(&pp, &serde_json::from_value(again).unwrap())
        .await
        .unwrap();
    assert_eq!(init_names(&twice), init_names(&first));
    assert_eq!(
        twice.spec.as_ref().unwrap().volumes.as_ref().unwrap().len(),
        first.spec.as_ref().unwrap().volumes.as_ref().unwrap().len()
    );
    assert_eq!(
        env_value(container(&twice, "worker"), "PYTHONPATH").as_deref(),
        Some(&*format!("{MOUNT}:/app"))
    );
    assert_eq!(annotation(&twice), annotation(&first));
}

/// Several app containers, one with PYTHONPATH from valueFrom (skipped), one without.
async fn several_app_containers(pods: &Api<Pod>) {
    let pp = PostParams::default();
    let multi = pods
        .create(
            &pp,
            &pod_json(
                "multi",
                Some("default"),
                json!([
                    {"name": "api", "image": "bifrost/api:1", "env": [{"name": "PYTHONPATH", "value": "/srv"}]},
                    {"name": "from-cm", "image": "bifrost/worker:1",
                     "env": [{"name": "PYTHONPATH", "valueFrom": {"configMapKeyRef": {"name": "paths", "key": "pythonpath", "optional": true}}}]},
                    {"name": "scheduler", "image": "bifrost/scheduler:1"}
                ]),
            ),
        )
        .await
        .unwrap();
    assert!(annotation(&multi).is_some());
    assert_eq!(
        container(&multi, INSTALL_CONTAINER).image.as_deref(),
        Some("bifrost/api:1"),
        "first app container's image"
    );
    assert_eq!(
        env_value(container(&multi, "api"), "PYTHONPATH").as_deref(),
        Some(&*format!("{MOUNT}:/srv"))
    );
    assert_eq!(
        env_value(container(&multi, "scheduler"), "PYTHONPATH").as_deref(),
        Some(MOUNT)
    );
    let skipped = container(&multi, "from-cm");
    assert!(
        skipped.env.as_ref().unwrap()[0].value_from.is_some(),
        "valueFrom kept"
    );
    assert!(
        !skipped
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == SITE_PACKAGES_VOLUME),
        "no mount"
    );
    for c in ["api", "scheduler"] {
        assert!(
            container(&multi, c)
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == SITE_PACKAGES_VOLUME),
            "{c}"
        );
    }
}

/// The operator's own pods are never mutated, label or not.
async fn operators_own_pods_are_never_mutated(pods: &Api<Pod>) {
    let pp = PostParams::default();
    let mut own = pod_json("operator-pod", Some("default"), worker_container());
    own.metadata.labels.as_mut().unwrap().insert(
        "app.kubernetes.io/name".into(),
        "bifrost-requirements".into(),
    );
    let own = pods.create(&pp, &own).await.unwrap();
    assert!(annotation(&own).is_none() && init_names(&own).is_empty());
}

/// Straight to the webhook, over TLS verified with the caBundle the operator published.
fn malformed_requests_sent_directly(bundle: &[u8], port: u16, ns: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, bundle).unwrap();
    let curl = |method: &str, path: &str, body: &str| -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args([
                "-X",
                method,
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        let text = stdout_of(&out, "curl");
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_string())
    };
    let review = |object: Value| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "b5a1ad0f-1b1e-4f8e-9d47-2c8c2a6c6b11",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": ns, "operation": "CREATE", "userInfo": {"username": "test"},
                "object": object
            }
        })
        .to_string()
    };
    let (code, body) = curl("POST", "/mutate", "{this is not json");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not JSON"), "{body}");
    let (code, body) = curl(
        "POST",
        "/mutate",
        &review(json!({"kind": "Pod", "apiVersion": "v1", "spec": {"containers": 7}})),
    );
    assert_eq!(code, 400, "{body}");
    let v: Value = serde_json::from_str(&body).expect("AdmissionReview-shaped");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "b5a1ad0f-1b1e-4f8e-9d47-2c8c2a6c6b11");
    assert_eq!(v["response"]["allowed"], false);
    let (code, body) = curl(
        "POST",
        "/mutate",
        &review(serde_json::to_value(pod_json("x", None, worker_container())).unwrap()),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"].get("patch").is_none());
    assert_eq!(curl("GET", "/mutate", "").0, 405);
    assert_eq!(curl("PUT", "/mutate", "{}").0, 405);
    assert_eq!(curl("POST", "/validate", "{}").0, 404);
    assert_eq!(curl("GET", "/", "").0, 404);
}

/// envFrom, as every Bifrost worker takes bifrost-secrets and bifrost-config: injected
async fn env_from_warns_only_in_python_path_mode(
    client: &Client,
    ns: &str,
    pods: &Api<Pod>,
    events: &Api<Event>,
) {
    let pp = PostParams::default();
    // either way, but a RequirementsPartiallyInjected Warning only in PythonPath mode (where a
    // PYTHONPATH from the ConfigMap would be hidden), none in UserBase mode.
    create_wsreq(client, ns, "userbase", json!({"content": CONTENT})).await;
    wait_until_injecting(client, ns, "userbase").await;
    let bifrost_worker = json!([{"name": "worker", "image": "python:3.11-slim", "envFrom": [
        {"secretRef": {"name": "bifrost-secrets"}}, {"configMapRef": {"name": "bifrost-config"}}
    ]}]);
    for (pod, resource) in [
        ("envfrom-userbase", "userbase"),
        ("envfrom-path", "default"),
    ] {
        let p = pods
            .create(&pp, &pod_json(pod, Some(resource), bifrost_worker.clone()))
            .await
            .unwrap();
        assert_eq!(
            init_names(&p),
            [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER],
            "{pod}"
        );
    }
    let partial = |list: &[k8s_openapi::api::events::v1::Event], pod: &str| {
        list.iter().any(|e| {
            e.reason.as_deref() == Some("RequirementsPartiallyInjected")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
    };
    wait_for(
        "the PythonPath pod's RequirementsPartiallyInjected",
        T,
        || async {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            partial(&list, "envfrom-path").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let list = events.list(&ListParams::default()).await.unwrap().items;
    assert!(!partial(&list, "envfrom-userbase"), "{list:#?}");
}

/// `failurePolicy: Ignore`: with the webhook down, pods are still created — without the
/// marker — and the controller's status counts them.
#[tokio::test]
async fn webhook_down_pods_still_start_and_are_counted() {
    let (client, ns) = webhook_namespace("wh-down").await;
    create_wsreq(&client, &ns, "default", json!({"content": CONTENT})).await;
    let mut wh = Webhook::start(&client, &ns).await;
    wait_until_injecting(&client, &ns, "default").await;
    deployment(&client, &ns, "served", 1, "default").await;
    let served = pods_of(&client, &ns, "served", 1).await;
    assert!(annotation(&served[0]).is_some());

    // Webhook gone (operator restarted without it; the configuration still points at the port).
    assert!(wh.op.stop(), "operator stops on SIGTERM");
    let _controller = Operator::start(&ns, "controller-only", &["--no-webhook"]);
    deployment(&client, &ns, "missed", 2, "default").await;
    let missed = pods_of(&client, &ns, "missed", 2).await;
    for p in &missed {
        assert!(annotation(p).is_none(), "created without injection");
        assert!(init_names(p).is_empty());
    }
    wait_for("status counts the uninjected pods", T, || async {
        let served = uninjected(&client, &ns, "default", "served").await;
        let missed = uninjected(&client, &ns, "default", "missed").await;
        (served == Some(0) && missed == Some(2)).then_some(())
    })
    .await;
}

/// Namespaces the webhook must leave alone although the API server sends their pods: on 1.20
/// (this control plane) namespaces have no `kubernetes.io/metadata.name` label, so the chart's
/// selector cannot exclude them and the operator decides itself. Here: an excluded namespace
/// holding the resource (which was injected before), and, with the operator watching one
/// namespace, a labelled namespace elsewhere.
#[tokio::test]
async fn excluded_and_unwatched_namespaces_are_not_injected_on_1_20() {
    let (client, ns) = common::admission::webhook_namespace("wh-scope").await;
    // Sent to this test's webhook like `ns` (same selector label), but not watched.
    let other = format!("{ns}-other");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": other, "labels": {"bifrost-webhook-test": ns}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let spec = json!({"content": "requests==2.32.3\n"});
    create_wsreq(&client, &ns, "default", spec.clone()).await;
    create_wsreq(&client, &other, "default", spec).await;
    // The watched namespace itself is excluded: whether the webhook is called at all is told
    // by its `excluded` count.
    let hook = Webhook::start_with(
        &client,
        &ns,
        &["--webhook-exclude-namespace", &format!("unrelated,{ns}")],
    )
    .await;
    let excluded = || {
        let (_, body) = hook.op.http_get("/metrics");
        body.lines()
            .find(|l| l.contains("admissions_total{") && l.contains("result=\"excluded\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for namespace in [&ns, &other] {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace);
        let before = excluded();
        let pod = pod_json("scoped", Some("default"), worker_container());
        let created = wait_for(
            "the API server to call the webhook",
            Duration::from_secs(60),
            || async {
                let p = pods.create(&dry, &pod).await.ok()?;
                (excluded() > before).then_some(p)
            },
        )
        .await;
        assert_eq!(annotation(&created), None, "{namespace}: not injected");
        assert!(init_names(&created).is_empty(), "{namespace}");
    }
    assert!(
        !hook.op.log_text().contains("RequirementsNotFound"),
        "excluded pods are no Event's business:\n{}",
        hook.op.log_text()
    );
}

//! End to end on a real node (kubelet + containerd + runc, scripts/node.sh): the images built
//! here, real pods, real init containers, real restarts and rolling updates.
//!
//! One node per test binary; tests run one at a time (the machine is small and some tests stop
//! shared servers). Pods reach only the bridge's host address (10.244.0.1), where the package
//! index and Redis for them listen.

mod common;

use std::time::{Duration, Instant};

use common::node::{assert_routed_via_bridge, node};
use common::operator::{namespace, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

/// One test at a time on the node.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Wait until the pod is Running with every container ready; panics with its status otherwise.
async fn wait_running(api: &Api<Pod>, name: &str) -> Pod {
    let n = node();
    let deadline = Instant::now() + T;
    loop {
        let p = api.get(name).await.unwrap();
        let status = p.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if status.phase.as_deref() == Some("Running") && ready {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} not Running after {T:?}: {}\n--- kubelet ---\n{}",
            serde_json::to_string_pretty(&status).unwrap(),
            n.log_tail("kubelet", 30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_is_ready_and_runs_a_pod_with_two_init_containers() {
    let _serial = serial().await;
    let n = node();
    let (client, ns) = namespace("node-smoke").await;
    let out = n.kubectl(&[
        "get",
        "node",
        "127.0.0.1",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(text(&out).trim(), "True", "node Ready");

    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "smoke"},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "initContainers": [
                {"name": "first", "image": n.worker_image, "imagePullPolicy": "Never",
                 "command": ["python3", "-c", "open('/shared/order','a').write('first\\n')"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
                {"name": "second", "image": n.worker_image, "imagePullPolicy": "Never",
                 "command": ["python3", "-c", "open('/shared/order','a').write('second\\n')"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ],
            "containers": [
                {"name": "main", "image": n.worker_image, "imagePullPolicy": "Never",
                 "command": ["python3", "-c", "import time\nwhile True: time.sleep(3600)"],
                 "securityContext": {"readOnlyRootFilesystem": true},
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ]
        }
    }))
    .unwrap();
    let api = Api::<Pod>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_running(&api, "smoke").await;
    eprintln!(
        "pod with two init containers Running in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ip = p.status.as_ref().unwrap().pod_ip.clone().expect("pod IP");
    assert!(
        ip.starts_with("10.244.0."),
        "pod IP {ip} on the bridge's subnet"
    );
    assert_routed_via_bridge(&ip);

    // Both init containers ran, in order, as uid 1000 on a volume the pod's fsGroup owns.
    let out = n.exec(&ns, "smoke", "main", &["python3", "-c", "import os; print(open('/shared/order').read().split()); print(os.getuid(), os.getgid(), os.stat('/shared').st_gid)"]);
    assert!(out.status.success(), "exec: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["['first', 'second']", "1000 1000 1000"],
    );
    // The pod has no default route: nothing it sends can leave the machine.
    let out = n.exec(
        &ns,
        "smoke",
        "main",
        &["python3", "-c", "print(open('/proc/net/route').read())"],
    );
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(
        !routes
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "pod has a default route:\n{routes}"
    );
    wait_for("namespace deleted", T, || async {
        let out = n.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
        out.status.success().then_some(())
    })
    .await;
}

//! Worker pods get their packages: uv and pip, the lock, the snapshot without Redis, Bifrost's
//! image, the README's S3 quick path.

use super::*;

/// A labelled worker shaped like Bifrost's: the init containers run before it, as uid 1000 with
/// a read-only root filesystem, and the worker imports the packages.
async fn labelled_worker_imports(case: &Case, installer: &str, hash: &str) -> Pod {
    let n = node();
    case.worker("worker", true).await;
    let pods = case.running("worker", 1, Some(hash)).await;
    let p = pods.into_iter().next().unwrap();
    let pod = p.name_any();
    assert_eq!(init_names(&p), [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER]);
    for c in [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER] {
        let t = container_status(&p, c)
            .state
            .and_then(|s| s.terminated)
            .unwrap_or_else(|| panic!("{c} did not run to completion"));
        assert_eq!(t.exit_code, 0, "{c}: {t:?}");
    }
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    let out = n.exec(
        &case.ns,
        &pod,
        "worker",
        &["python3", "-c", "import os, bifrost_hello; print(os.getuid(), os.getgid(), os.access('/usr', os.W_OK), bifrost_hello.__file__)"],
    );
    let who = String::from_utf8_lossy(&out.stdout);
    assert!(
        who.starts_with("1000 1000 False /"),
        "worker identity: {}",
        text(&out)
    );
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert!(
        log.contains("installed: 1 package(s)")
            && log.contains(hash)
            && log.contains("from the Redis key")
            && log.contains(installer),
        "install log names the hash, the source and {installer}:\n{log}"
    );
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_pods_run_the_packages_survive_a_crash_and_roll_to_new_content() {
    let _serial = serial().await;
    let content = "bifrost-hello==1.0\n";
    let (case, hash) = Case::ready("node-e2e", content, json!({})).await;
    let p = labelled_worker_imports(&case, "uv", &hash).await;
    case.rolled_out(&hash).await;
    a_crash_restarts_only_the_worker_container(&case, &p).await;
    let (pod2, hash2) = new_content_rolls_to_a_new_pod(&case, &p.name_any()).await;
    an_uninstallable_requirement_halts_the_rollout(&case, &pod2, &hash2).await;
    drop(case);
}

/// A crash of the main process: the kubelet restarts the container in the same pod; the
/// emptyDir keeps the packages and the init containers do not run again.
async fn a_crash_restarts_only_the_worker_container(case: &Case, p: &Pod) {
    let n = node();
    let pod = p.name_any();
    let installed_at = container_status(p, INSTALL_CONTAINER)
        .state
        .unwrap()
        .terminated
        .unwrap()
        .finished_at;
    let id = container_status(p, "worker")
        .container_id
        .expect("container id");
    n.kill_container(&id);
    let api = case.pods();
    let restarted = wait_for("the worker container restarted", T, || async {
        let p = api.get(&pod).await.ok()?;
        (container_status(&p, "worker").restart_count >= 1 && is_ready(&p)).then_some(p)
    })
    .await;
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    let install = container_status(&restarted, INSTALL_CONTAINER);
    assert_eq!(install.restart_count, 0);
    assert_eq!(
        install.state.unwrap().terminated.unwrap().finished_at,
        installed_at
    );
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert_eq!(
        log.matches("installed:").count(),
        1,
        "installed once:\n{log}"
    );
}

/// New content: a rolling update to pods with the new package; the old pod goes. Returns the
/// new pod and the content's hash.
async fn new_content_rolls_to_a_new_pod(case: &Case, pod: &str) -> (String, String) {
    let api = case.pods();
    let content2 = "bifrost-extra==2.0\nbifrost-hello==1.0\n";
    case.set_content(content2).await;
    let hash2 = case.ready_hash(content2).await;
    let pods = case.running("worker", 1, Some(&hash2)).await;
    let pod2 = pods[0].name_any();
    assert_ne!(pod2, pod);
    assert_eq!(case.import(&pod2, "bifrost_extra"), "2.0");
    assert!(
        api.get_opt(pod).await.unwrap().is_none(),
        "the old pod is gone"
    );
    case.rolled_out(&hash2).await;
    (pod2, hash2)
}

/// A requirement that cannot install: the new pod's install container fails, the rollout
/// halts, the old pod (`pod2`, of the content before: `hash2`) keeps serving.
async fn an_uninstallable_requirement_halts_the_rollout(case: &Case, pod2: &str, hash2: &str) {
    let api = case.pods();
    let content3 = "bifrost-extra==2.0\nbifrost-hello==1.0\nbifrost-missing==9.9\n";
    case.set_content(content3).await;
    let hash3 = case.ready_hash(content3).await;
    let lp = ListParams::default().labels("app=worker");
    let (failed, code, message) =
        wait_for("the new pod's install container to fail", T, || async {
            let list = api.list(&lp).await.ok()?.items;
            list.iter()
                .filter(|p| pod_hash(p).as_deref() == Some(hash3.as_str()))
                .find_map(|p| install_failure(p).map(|(c, m)| (p.name_any(), c, m)))
        })
        .await;
    assert!(
        message.contains("bifrost-missing"),
        "termination message names the package: {message}"
    );
    eprintln!("install container of {failed} exited {code}: {message}");
    // The resource says so: the pod, the init container and its termination message.
    let obj = case.wait_reason("RolledOut", "InstallFailing").await;
    let (rolled, _, why) = condition(&obj, "RolledOut").unwrap();
    eprintln!("RolledOut={rolled} InstallFailing: {why}");
    assert_eq!(rolled, "False");
    assert!(
        why.contains(&format!(
            "Deployment/worker: pod {failed}: init container {INSTALL_CONTAINER} exited {code}"
        )) && why.contains("bifrost-missing"),
        "{why}"
    );
    // The installer's report (its summary line: what installed, what failed and why), not the
    // log records before it (their timestamps change on every attempt, which would rewrite the
    // status each time).
    assert!(
        why.contains("failed: bifrost-missing (not found on the index)") && !why.contains(" INFO "),
        "{why}"
    );
    let (ready, reason, _) = condition(&obj, "Ready").unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "InstallFailing")
    );
    let status = obj.status.clone().unwrap();
    assert_eq!(status.rolled_out_hash.as_deref(), Some(hash2));
    let w = &status.workloads[0];
    assert_eq!(
        (
            w.up_to_date,
            w.replicas,
            w.updated_replicas,
            w.ready_updated_replicas
        ),
        (true, Some(1), Some(1), Some(0)),
        "{w:?}"
    );
    assert!(
        w.message.as_deref().is_some_and(|m| m.contains(&failed)),
        "{w:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let old = api.get(pod2).await.unwrap();
    assert!(
        is_ready(&old) && old.metadata.deletion_timestamp.is_none(),
        "the old pod keeps serving"
    );
    assert_eq!(case.import(pod2, "bifrost_extra"), "2.0");
    let newer = api.get(&failed).await.unwrap();
    assert!(!is_ready(&newer), "the failing pod never became ready");
    // One Warning for this hash, although the install container kept failing meanwhile.
    let restarts = container_status(&newer, INSTALL_CONTAINER).restart_count;
    case.one_warning("InstallFailing", &[&failed, "bifrost-missing"])
        .await;
    eprintln!(
        "one InstallFailing Warning while the install container restarted {restarts} time(s)"
    );
}

/// Issue 12 on real pods: the controller resolves `bifrost-hello>=1.0` once for the workers'
/// interpreter (the worker image's python3 is Debian bookworm's 3.11, x86_64, glibc 2.36); every
/// pod of that content installs the lock, hash-checked, even after the index publishes a newer
/// release; a new content is resolved anew and its pods get the new release.
#[tokio::test(flavor = "multi_thread")]
async fn pods_install_the_controllers_lock_which_holds_until_the_content_changes() {
    let _serial = serial().await;
    let (case, hash, pod) = Case::locked_worker("node-lock").await;
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    case.installed_from_lock(&pod, &hash);
    case.rolled_out(&hash).await;

    // A newer release on the index: a new pod of the same content still installs the locked 1.0.
    case.index.publish(&Wheel::new("bifrost_hello", "1.1"));
    case.pods().delete(&pod, &Default::default()).await.unwrap();
    let again = case
        .running("worker", 1, Some(&hash))
        .await
        .remove(0)
        .name_any();
    assert_ne!(again, pod);
    assert_eq!(case.import(&again, "bifrost_hello"), "1.0");
    case.installed_from_lock(&again, &hash);

    // A new content (the same requirement and a comment): resolved anew, the rolled pod gets 1.1.
    let changed = "bifrost-hello>=1.0\n# resolved anew\n";
    case.set_content(changed).await;
    let hash2 = case.ready_hash(changed).await;
    assert_ne!(hash2, hash);
    case.resolved(&hash2, &Wheel::new("bifrost_hello", "1.1"))
        .await;
    let rolled = case
        .running("worker", 1, Some(&hash2))
        .await
        .remove(0)
        .name_any();
    assert_eq!(case.import(&rolled, "bifrost_hello"), "1.1");
    case.installed_from_lock(&rolled, &hash2);
    case.rolled_out(&hash2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_install_from_the_snapshot_without_redis_and_start_uninjected_without_the_operator() {
    let _serial = serial().await;
    let n = node();
    let content = "bifrost-hello==1.0\n";
    let (case, hash) = Case::ready("node-fallback", content, json!({})).await;
    let p = labelled_worker_imports(&case, "uv", &hash).await;
    let api = case.pods();

    // Redis down: a new pod installs from the ConfigMap snapshot the controller wrote.
    case.redis.stop();
    api.delete(&p.name_any(), &Default::default())
        .await
        .unwrap();
    let pods = case.running("worker", 1, Some(&hash)).await;
    let pod = pods[0].name_any();
    assert_ne!(pod, p.name_any());
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert!(
        log.contains("from the fallback file") && log.contains(&hash),
        "{log}"
    );

    // Operator down: the webhook has no endpoint (failurePolicy Ignore), the pod starts without
    // the packages; once the operator is back it rolls the worker again, and the new pod is
    // injected.
    case.op.scale(&case.client, 0).await;
    api.delete(&pod, &Default::default()).await.unwrap();
    let pods = case.running("worker", 1, None).await;
    let bare = &pods[0];
    assert_ne!(bare.name_any(), pod);
    assert!(
        init_names(bare).is_empty(),
        "uninjected: {:?}",
        init_names(bare)
    );
    case.cannot_import(
        &bare.name_any(),
        "bifrost_hello",
        "an uninjected pod has no packages",
    );
    case.redis.start_again();
    case.op.scale(&case.client, 1).await;
    let replaced = wait_for(
        "the uninjected worker replaced by an injected one",
        T,
        || async {
            let list = api
                .list(&ListParams::default().labels("app=worker"))
                .await
                .ok()?
                .items;
            (list.len() == 1 && is_ready(&list[0]) && !init_names(&list[0]).is_empty())
                .then(|| list[0].name_any())
        },
    )
    .await;
    assert_ne!(replaced, bare.name_any());
    assert_eq!(case.import(&replaced, "bifrost_hello"), "1.0");
    let notes = case.notes("ReplacingUninjected").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("Deployment/worker") && n.contains("without the packages")),
        "{notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_pods_run_the_packages_installed_with_pip() {
    let _serial = serial().await;
    let content = "bifrost-hello==1.0\n";
    let (case, hash) = Case::ready("node-pip", content, json!({"installer": "pip"})).await;
    let p = labelled_worker_imports(&case, "pip", &hash).await;
    // pip ran, not uv: the install container was told so and got no uv to run.
    let install = p
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == INSTALL_CONTAINER))
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    assert!(
        install.contains(&"--installer=pip".to_string()),
        "{install:?}"
    );
    assert!(
        !install.iter().any(|a| a.starts_with("--uv=")),
        "{install:?}"
    );
    case.rolled_out(&hash).await;
}

/// Issue 15 item 1 on real pods: the default mode (UserBase) leaves the image's own
/// `ENV PYTHONPATH=/app` alone, so Bifrost's /app package and the installed packages both import,
/// `python -m` of the /app package sees them, and Bifrost's own start-up
/// `pip install -r requirements.txt` finds them already satisfied in the user site (and a package
/// it installs itself lands in the same volume).
#[tokio::test(flavor = "multi_thread")]
async fn bifrost_image_keeps_its_pythonpath_and_sees_the_packages_in_its_user_site() {
    let _serial = serial().await;
    let content = "bifrost-extra==2.0\nbifrost-hello==1.0\n";
    let (case, hash) = Case::ready("node-app", content, json!({})).await;
    let pod = a_bifrost_worker_injected_in_user_base(&case, &hash).await;
    let user_site = the_images_path_and_the_user_site_side_by_side(&case, &pod);
    bifrost_startup_install_finds_them_satisfied(&case, &pod, content, &user_site);
    a_package_bifrost_installs_lands_in_the_user_site(&case, &pod, &user_site);
}

/// A worker as Bifrost runs its image: injected in the default mode (UserBase), so with
/// `PYTHONUSERBASE` and no PYTHONPATH of the injection's; returns its pod.
async fn a_bifrost_worker_injected_in_user_base(case: &Case, hash: &str) -> String {
    let n = node();
    case.deploy("worker", true, bifrost_worker_pod_spec(&n.worker_app_image))
        .await;
    let p = case.running("worker", 1, Some(hash)).await.remove(0);
    let pod = p.name_any();
    assert_eq!(
        p.annotations()
            .get(INJECTED_MODE_ANNOTATION)
            .map(String::as_str),
        Some("UserBase")
    );
    let worker = &p.spec.as_ref().unwrap().containers[0];
    let env: BTreeMap<&str, Option<&str>> = worker
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env.get("PYTHONUSERBASE"),
        Some(&Some("/opt/bifrost/site-packages"))
    );
    assert!(!env.contains_key("PYTHONPATH"), "{env:?}");
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert!(log.contains("installed: 2 package(s)"), "{log}");
    pod
}

/// The image's PYTHONPATH and the user site, side by side in one interpreter; returns the user
/// site.
fn the_images_path_and_the_user_site_side_by_side(case: &Case, pod: &str) -> String {
    let seen = case.run(
        pod,
        &[
            "python",
            "-c",
            "import os, site, bifrost_app, bifrost_hello, bifrost_extra\n\
             print(os.environ['PYTHONPATH']); print(site.getusersitepackages())\n\
             print(bifrost_app.__file__); print(bifrost_hello.__file__)",
        ],
    );
    let lines: Vec<&str> = seen.lines().collect();
    let [path, user_site, app, hello] = lines[..] else {
        panic!("{seen}");
    };
    assert_eq!(path, "/app");
    assert!(
        user_site.starts_with("/opt/bifrost/site-packages/lib/python3"),
        "{user_site}"
    );
    assert_eq!(app, "/app/bifrost_app/__init__.py");
    assert!(hello.starts_with(&format!("{user_site}/")), "{hello}");
    assert_eq!(
        case.run(
            pod,
            &[
                "python",
                "-m",
                "bifrost_app",
                "bifrost_hello",
                "bifrost_extra"
            ]
        ),
        "bifrost_app bifrost_hello=1.0 bifrost_extra=2.0"
    );
    user_site.to_string()
}

/// Bifrost's start-up install (python -m pip install -r <the requirements>, no --user: pip
/// falls back to the user site, the root filesystem being read-only): nothing to do, no
/// index asked (the pod could reach none but ours, and pip is not pointed at it).
fn bifrost_startup_install_finds_them_satisfied(
    case: &Case,
    pod: &str,
    content: &str,
    user_site: &str,
) {
    case.run(
        pod,
        &[
            "python",
            "-c",
            &format!("open('/tmp/requirements.txt', 'w').write({content:?})"),
        ],
    );
    let pip = case.run(
        pod,
        &[
            "python",
            "-m",
            "pip",
            "install",
            "-r",
            "/tmp/requirements.txt",
        ],
    );
    for req in ["bifrost-extra==2.0", "bifrost-hello==1.0"] {
        assert!(
            pip.contains(&format!(
                "Requirement already satisfied: {req} in {user_site}"
            )),
            "{pip}"
        );
    }
    assert!(!pip.contains("Successfully installed"), "{pip}");
}

/// A package Bifrost installs itself (its packages API) lands in the same volume.
fn a_package_bifrost_installs_lands_in_the_user_site(case: &Case, pod: &str, user_site: &str) {
    case.index.publish(&Wheel::new("bifrost_late", "3.0"));
    let index = format!("--index-url={}", case.index.url());
    let trusted = format!("--trusted-host={HOST_IP}");
    case.run(
        pod,
        &[
            "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            &index,
            &trusted,
            "bifrost-late==3.0",
        ],
    );
    let late = case.run(
        pod,
        &[
            "python",
            "-c",
            "import bifrost_late; print(bifrost_late.__file__)",
        ],
    );
    assert!(late.starts_with(&format!("{user_site}/")), "{late}");
}

/// The README's "With Bifrost today (S3)" resource, as printed there.
fn readme_s3_resource() -> Value {
    let readme = include_str!("../../README.md");
    let section = &readme[readme
        .find("## With Bifrost today (S3)")
        .expect("the README's S3 section")..];
    let start = section.find("```yaml\n").expect("its resource") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    serde_yaml::from_str(yaml).expect("the README's S3 resource is YAML")
}

/// The README's S3 quick path, pasted as it stands (no `install.python`): only the values a user
/// fills in change (bucket, endpoint, namespace; the node's index, as the node has no other).
/// The resource reaches Ready and the worker imports its package at once, its pods resolving;
/// the probe pod learns the worker image's Python (Debian bookworm: 3.11.2, glibc 2.36), the lock
/// appears and the worker rolls once more, installing it.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_s3_quick_path_works_without_python_and_learns_it_for_the_lock() {
    use bifrost_requirements::crd::LOCK_ANNOTATION;
    use common::s3::{BUCKET, S3Server, bifrost_put};
    let _serial = serial().await;
    // The node first: its bridge owns the address the S3 server listens on.
    node();
    let s3 = S3Server::start_on(HOST_IP);
    let key = format!("_repo/requirements-{}.txt", std::process::id());
    let config = s3.config(&key);
    let content = "bifrost-hello>=1.0\n";
    bifrost_put(&config, content.as_bytes()).await;
    let endpoint = s3.endpoint();
    let writer = s3.writer.clone();
    let case = Case::start_resource("node-quick", true, |index, redis| {
        let mut obj = readme_s3_resource();
        assert!(obj["spec"]["install"].get("python").is_none(), "{obj}");
        obj["metadata"].as_object_mut().unwrap().remove("namespace");
        let s3 = &mut obj["spec"]["source"]["s3"];
        s3["bucket"] = json!(BUCKET);
        s3["key"] = json!(key);
        s3["endpoint"] = json!(endpoint);
        obj["spec"]["install"]["indexUrls"] = json!([index.url()]);
        // Bifrost's Secret, with its own key names.
        let secret = json!({
            "metadata": {"name": "bifrost-secrets"},
            "stringData": {
                "BIFROST_S3_ACCESS_KEY": writer.access_key_id,
                "BIFROST_S3_SECRET_KEY": writer.secret_access_key,
                "BIFROST_REDIS_URL": redis.url(),
            },
        });
        (obj, vec![secret])
    })
    .await;
    let hash = case.ready_hash(content).await;
    case.worker("worker", true).await;
    let first = case.running("worker", 1, Some(&hash)).await.remove(0);
    assert_eq!(case.import(&first.name_any(), "bifrost_hello"), "1.0");

    // The probe learned the worker image's interpreter; the lock follows, then one more rollout.
    let api = case.wsreq();
    let obj = wait_for("status.interpreter and status.lock", T, || async {
        let r = api.get("default").await.ok()?;
        let s = r.status.as_ref()?;
        (s.interpreter.is_some() && s.lock.as_ref()?.content_hash == hash).then_some(r)
    })
    .await;
    let status = obj.status.clone().unwrap();
    let learned = status.interpreter.unwrap();
    assert_eq!(learned.image, node().worker_image);
    assert_eq!(
        (learned.version.as_str(), learned.platform.as_str()),
        ("3.11.2", "x86_64-manylinux_2_36")
    );
    let sha = status.lock.unwrap().sha256[..12].to_string();
    let probes = format!(
        "app.kubernetes.io/component={}",
        bifrost_requirements::controller::probe::COMPONENT
    );
    wait_for("the probe pod deleted", T, || async {
        let left = case
            .pods()
            .list(&ListParams::default().labels(&probes))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    let locked = wait_for("a worker pod rolled for the lock", T, || async {
        let pods = case.running("worker", 1, Some(&hash)).await;
        let p = pods.into_iter().next()?;
        (p.annotations().get(LOCK_ANNOTATION)? == &sha).then_some(p)
    })
    .await;
    case.installed_from_lock(&locked.name_any(), &hash);
    assert_eq!(case.import(&locked.name_any(), "bifrost_hello"), "1.0");
    let obj = case.rolled_out(&hash).await;
    assert_eq!(condition(&obj, "Resolved").unwrap().1, "Resolved");
}

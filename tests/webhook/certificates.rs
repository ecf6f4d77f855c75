//! Serving certificates: self-managed rotation under load, and cert-manager's mounted files.

use super::*;

/// Self-managed certificates with a 30 s validity rotate (staged, then promoted) several times
/// while the API server keeps calling the webhook; not a single request may miss injection.
#[tokio::test]
async fn certificate_rotation_keeps_requests_succeeding() {
    let (client, ns) = webhook_namespace("wh-rotate").await;
    create_wsreq(&client, &ns, "default", json!({"content": CONTENT})).await;
    let wh = Webhook::start_with(&client, &ns, &["--cert-validity", "30s"]).await;
    wait_until_injecting(&client, &ns, "default").await;

    let seen = Rotation::watch_for_70s(&client, &ns, &wh).await;
    seen.every_request_was_injected_across_the_rotations();
    let log = wh.op.log_text();
    assert!(
        log.contains("staged a new CA") && log.contains("promoted the staged"),
        "rotation logged"
    );
}

/// What 70 s of pod admissions (4 a second) and a look at the served certificate and published
/// caBundle (every fourth admission) saw.
#[derive(Default)]
struct Rotation {
    served: Vec<Vec<u8>>,
    unverifiable: usize,
    bundles: std::collections::HashSet<Vec<u8>>,
    ok: usize,
    missed: Vec<String>,
    /// Which 10 s windows of the run saw an injected pod: requests kept coming throughout,
    /// across every rotation, however slow the machine (a count would measure its speed).
    windows: std::collections::BTreeSet<u64>,
}

impl Rotation {
    async fn watch_for_70s(client: &Client, ns: &str, wh: &Webhook) -> Rotation {
        let pods = Api::<Pod>::namespaced(client.clone(), ns);
        let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let mut seen = Rotation::default();
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(70) {
            i += 1;
            let pod = pod_json(&format!("r{i}"), Some("default"), worker_container());
            seen.admitted(pods.create(&dry, &pod).await, started);
            if i % 4 == 0 {
                seen.certificates(&configs, wh).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        seen
    }

    fn admitted(&mut self, pod: kube::Result<Pod>, started: Instant) {
        match pod {
            Ok(p) if annotation(&p).is_some() => {
                self.ok += 1;
                self.windows.insert(started.elapsed().as_secs() / 10);
            }
            Ok(_) => self
                .missed
                .push(format!("{:?}: not injected", started.elapsed())),
            Err(e) => self.missed.push(format!("{:?}: {e}", started.elapsed())),
        }
    }

    /// The served certificate, verified against the caBundle published now.
    async fn certificates(&mut self, configs: &Api<MutatingWebhookConfiguration>, wh: &Webhook) {
        let c = configs.get(&wh.config).await.unwrap();
        let bundle = c.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
            .unwrap()
            .0;
        match served_certificate(wh.port, &bundle).await {
            Some(cert) if self.served.last() != Some(&cert) => self.served.push(cert),
            Some(_) => {}
            None => self.unverifiable += 1,
        }
        self.bundles.insert(bundle);
    }

    fn every_request_was_injected_across_the_rotations(&self) {
        let Rotation {
            served,
            unverifiable,
            bundles,
            ok,
            missed,
            windows,
        } = self;
        eprintln!(
            "rotation: {ok} pods admitted and injected, {} distinct served certificates, {} distinct caBundles",
            served.len(),
            bundles.len()
        );
        assert!(missed.is_empty(), "{} ok, missed: {missed:#?}", ok);
        assert!(
            (0..7).all(|w| windows.contains(&w)),
            "injected pods in every 10 s of the 70 s run ({ok} in all; windows {windows:?})"
        );
        assert_eq!(
            *unverifiable, 0,
            "the served certificate always verified against the published caBundle"
        );
        assert!(
            served.len() >= 3,
            "the served certificate changed at least twice in 70 s (saw {})",
            served.len()
        );
        assert!(
            bundles.len() >= 3,
            "caBundle updated on every rotation ({} seen)",
            bundles.len()
        );
    }
}

/// The certificate the webhook presents, verified against `bundle` (what the API server trusts).
async fn served_certificate(port: u16, bundle: &[u8]) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut &*bundle).flatten() {
        roots.add(der).ok()?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = rustls::pki_types::ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    Some(
        tls.get_ref()
            .1
            .peer_certificates()?
            .first()?
            .as_ref()
            .to_vec(),
    )
}

/// cert-manager mode: the mounted files are served and swapped in when they change.
#[tokio::test]
async fn cert_manager_mode_serves_and_reloads_mounted_files() {
    let (_client, ns) = webhook_namespace("wh-files").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let names = vec!["127.0.0.1".to_string()];
    let now = time::OffsetDateTime::now_utc();
    let first = bifrost_requirements::tls::issue(&names, Duration::from_secs(3600), now).unwrap();
    std::fs::write(&cert, format!("{}{}", first.cert, first.ca)).unwrap();
    std::fs::write(&key, &first.key).unwrap();
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let wh = Webhook::serve(
        &ns,
        &[
            "--tls-mode",
            "cert-manager",
            "--tls-cert-file",
            c,
            "--tls-key-file",
            k,
        ],
    );
    let leaf = |pem: &str| {
        bifrost_requirements::tls::inspect(pem.as_bytes()).unwrap()[0]
            .der
            .clone()
    };
    let got = wait_for("the mounted certificate served", T, || async {
        served_certificate(wh.port, first.ca.as_bytes()).await
    })
    .await;
    assert_eq!(got, leaf(&first.cert));

    // cert-manager renews: the kubelet swaps the files; no restart needed.
    let second = bifrost_requirements::tls::issue(&names, Duration::from_secs(3600), now).unwrap();
    std::fs::write(&key, &second.key).unwrap();
    std::fs::write(&cert, &second.cert).unwrap();
    let got = wait_for("the renewed certificate served", T, || async {
        served_certificate(wh.port, second.ca.as_bytes()).await
    })
    .await;
    assert_eq!(got, leaf(&second.cert));
    assert!(
        !wh.op.log_text().contains("MutatingWebhookConfiguration"),
        "cert-manager mode leaves the configuration alone"
    );
}

//! The values the chart takes are the values the operator takes: `values.schema.json` refuses wrong
//! types and unknown keys with a clear message (Helm 3 and Helm 4), every value is described,
//! every variable the chart sets is one the operator reads, and every value the operator would
//! refuse at start is refused by `helm template` first, naming the value.

mod common;

use std::process::{Command, Stdio};

use common::helm::*;
use common::proc::free_port;
use serde_json::{Value, json};

#[test]
fn values_schema_rejects_wrong_types_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let chart = chart_arg();
    // Each wrong value, and what the message must name (Helm 3.6's wording, e.g.
    // `- replicaCount: Invalid type. Expected: integer, given: string`; newer Helm words it
    // differently but names the same things).
    let cases: [(&str, &[&str]); 5] = [
        (
            "replicaCount: \"two\"\n",
            &["replicaCount", "integer", "string"],
        ),
        (
            "webhook:\n  tls:\n    mode: selfSigned\n",
            &["mode", "selfManaged", "certManager"],
        ),
        (
            "webhook:\n  timeoutSeconds: 30\n",
            &["timeoutSeconds", "10"],
        ),
        (
            "serviceMonitor:\n  enabled: \"yes\"\n",
            &["enabled", "boolean", "string"],
        ),
        ("replicas: 3\n", &["replicas", "not allowed"]),
    ];
    for (i, (values, words)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("values-{i}.yaml"));
        std::fs::write(&file, values).unwrap();
        for verb in ["template", "lint"] {
            let mut args = vec![verb];
            if verb == "template" {
                args.push("x");
            }
            args.extend_from_slice(&[chart.as_str(), "-f", file.to_str().unwrap()]);
            let mut words = words.to_vec();
            words.push("values don't meet the specifications of the schema");
            refused_by_both(&args, &words);
        }
    }
    // Helm 3.6 and Helm 4 (scripts/setup.sh pins both) say exactly where and what.
    for (h, words) in [
        (
            Helm::Three,
            "- replicaCount: Invalid type. Expected: integer, given: string",
        ),
        (Helm::Four, "- at '/replicaCount': got string, want integer"),
    ] {
        let out = h.run(&["template", "x", &chart, "--set", "replicaCount=two"]);
        if String::from_utf8_lossy(&h.run(&["version", "--short"]).stdout).starts_with("v3.6.")
            || h == Helm::Four
        {
            assert!(text(&out).contains(words), "{h:?}: {}", text(&out));
        }
    }
    // The shipped defaults pass, and so does the right type.
    render("x", "x", &["replicaCount=3"]);

    // The schema documents every value (helm lint checks values.yaml against it, and unknown
    // keys are rejected, so values.yaml holds nothing the schema does not describe).
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(self::chart().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    fn described(path: &str, node: &Value) {
        for (key, sub) in node["properties"].as_object().into_iter().flatten() {
            let path = format!("{path}.{key}");
            assert!(
                sub["description"].as_str().is_some_and(|d| !d.is_empty()),
                "values.schema.json: {path} has no description"
            );
            described(&path, sub);
        }
    }
    described("", &schema);
}

/// Every variable the chart sets is one the operator reads, with a value it accepts.
#[test]
fn chart_environment_is_accepted_by_the_operator() {
    let help = common::cli(&["operator", "--help"], &[]);
    common::assert_ok(&help);
    let help = common::stdout(&help);
    for (name, sets) in VARIANTS {
        let objects = docs(&render("r", "ops", sets));
        let env = env_of(&objects);
        for (var, _) in &env {
            assert!(
                help.contains(&format!("[env: {var}="))
                    || ["RUST_LOG", "BIFROST_LOG_FORMAT"].contains(&var.as_str()),
                "{name}: the chart sets {var}, which `operator` does not read:\n{help}"
            );
        }
        assert_eq!(container(&objects)["args"], json!(["operator"]));
        // Parse them for real: no kubeconfig, so it stops right after parsing (exit 1), never
        // with clap's exit 2 for a bad value.
        let port = free_port().to_string();
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_else(|| "from-field-ref".into())))
            .collect();
        vars.push(("BIFROST_METRICS_ADDR".into(), format!("127.0.0.1:{port}")));
        vars.push(("KUBECONFIG".into(), "/nonexistent/kubeconfig".into()));
        vars.push(("KUBERNETES_SERVICE_HOST".into(), String::new()));
        let out = Command::new(common::bin())
            .arg("operator")
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(
            !text(&out).contains("invalid value"),
            "{name}: {}",
            text(&out)
        );
        assert!(text(&out).contains("kubeconfig"), "{name}: {}", text(&out));
    }
}

/// Whether the chart renders with `--set-string SET` (and `extra` --set flags): Helm 3 and Helm 4
/// must agree, and a refusal must name the value's path.
fn chart_accepts(set: &str, extra: &[&str]) -> bool {
    chart_takes("--set-string", set, extra)
}

/// [`chart_accepts`] with `SET` passed by `flag` (`--set` for an integer, as the schema types it).
fn chart_takes(flag: &str, set: &str, extra: &[&str]) -> bool {
    let chart = chart_arg();
    let mut args = vec!["template", "r", chart.as_str(), flag, set];
    for e in extra {
        args.extend_from_slice(&["--set", e]);
    }
    let [three, four] = Helm::ALL.map(|h| h.run(&args));
    assert_eq!(
        three.status.success(),
        four.status.success(),
        "Helm 3 and Helm 4 disagree on {set}:\n{}\n{}",
        text(&three),
        text(&four)
    );
    let path = set.split_once('=').unwrap().0;
    if !three.status.success() {
        // Helm 4 words schema errors as JSON pointers (`/resolver/timeout`), Helm 3 and the
        // chart's own refusals as dotted paths.
        let pointer = format!("/{}", path.replace('.', "/"));
        for (h, out) in [(Helm::Three, &three), (Helm::Four, &four)] {
            let all = text(out);
            assert!(
                all.contains(path) || all.contains(&pointer),
                "{h:?}: the refusal of {set} does not name {path}:\n{all}"
            );
        }
    }
    three.status.success()
}

/// Whether the operator accepts `VAR=VALUE`, and its first line. No kubeconfig: it stops right
/// after parsing its flags (exit 1); exit 2 is clap refusing a value.
fn operator_accepts(var: &str, value: &str) -> (bool, String) {
    let mut cmd = Command::new(common::bin());
    cmd.arg("operator")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("KUBERNETES_SERVICE_HOST", "")
        .env("BIFROST_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env(var, value)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let first = text(&out).lines().next().unwrap_or_default().to_string();
    (out.status.code() != Some(2), first)
}

/// Each sample through the chart (`path`) and the operator (`var`, the value as the chart
/// passes it): the disagreements.
fn disagreements(path: &str, var: &str, samples: &[&str], extra: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for sample in samples {
        let chart_ok = chart_accepts(&format!("{path}={sample}"), extra);
        let (binary_ok, line) = operator_accepts(var, sample);
        // An empty value is the one they treat apart, and neither crash-loops: the chart refuses
        // it (a values file's "" is a mistake), the binary reads it from the environment, where
        // empty means unset, so its default applies (as documented for every variable).
        let agree = if sample.is_empty() {
            !chart_ok && binary_ok
        } else {
            chart_ok == binary_ok
        };
        if !agree {
            found.push(format!(
                "{path}={sample:?}: chart {chart_ok}, operator {binary_ok} ({line})"
            ));
        }
    }
    found
}

/// The durations the chart passes to the operator: a value the chart accepts is one the binary
/// accepts and vice versa (one grammar, the same minimum and maximum), so a values mistake fails
/// `helm install` with the value's path instead of crash-looping the operator.
#[test]
fn chart_and_operator_accept_the_same_durations() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let tls = &schema["properties"]["webhook"]["properties"]["tls"]["properties"];
    for pattern in [
        &tls["checkInterval"]["pattern"],
        &tls["selfManaged"]["properties"]["certValidity"]["pattern"],
        &schema["properties"]["resolver"]["properties"]["timeout"]["pattern"],
    ] {
        assert_eq!(pattern, bifrost_requirements::duration::PATTERN);
    }
    let values = [
        ("webhook.tls.checkInterval", "BIFROST_TLS_CHECK_INTERVAL"),
        (
            "webhook.tls.selfManaged.certValidity",
            "BIFROST_CERT_VALIDITY",
        ),
        ("resolver.timeout", "BIFROST_RESOLVER_TIMEOUT"),
    ];
    let samples = [
        "30s",
        "100ms",
        "99ms",
        "0.1",
        "0.05",
        "10s",
        "9s",
        "9.999s",
        "10",
        "1h30m",
        "8760h",
        "8760h1s",
        "525600m",
        "5",
        "1.5h",
        "2h45m30s500ms",
        "1s500000us",
        "1.s",
        ".5s",
        "1d",
        "1 s",
        "-10s",
        "1e3",
        "",
        "10S",
        "ten",
        "banana",
    ];
    let mut found = Vec::new();
    for (path, var) in values {
        found.extend(disagreements(path, var, &samples, &[]));
    }
    assert!(found.is_empty(), "{found:#?}");
    // The chart's refusal names the value and the limit.
    chart_refuses(
        &["webhook.tls.selfManaged.certValidity=5s"],
        &[r#"webhook.tls.selfManaged.certValidity: "5s" is too short (at least 10s)"#],
    );
}

/// The resolver's memory limit: one quantity grammar and the same floor (64Mi) in the chart and
/// the binary; `resolver.memoryLimit: 1Mi` fails `helm template` naming the value instead of
/// crash-looping the pod. (The container's own limit is lifted here: the chart's second check,
/// 64Mi of headroom below it, is the next test's.)
#[test]
fn chart_and_operator_accept_the_same_resolver_memory_limits() {
    let samples = [
        "512Mi", "64Mi", "63Mi", "1Mi", "0.0625Gi", "67108864", "67108863", "64M", "68M", "1e9",
        "1E9", "1e3", "1.5Gi", "2G", "+128Mi", "-1Gi", "1GB", "1 Gi", "Mi", "", "banana", "7Ei",
        "8Ei",
    ];
    chart_refuses(
        &["resolver.memoryLimit=1Mi"],
        &[r#"resolver.memoryLimit: "1Mi" is less than 64Mi"#],
    );
    let found = disagreements(
        "resolver.memoryLimit",
        "BIFROST_RESOLVER_MEMORY_LIMIT",
        &samples,
        &["resources.limits.memory=null"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

/// Every other value the operator parses at start, with a bad value: both refuse, and the chart
/// names the value. Plus what only the chart can see: a limit below its request (the API server
/// would refuse the pods, the Deployment would never get one), the resolver's limit too close
/// to the container's, and one port for both servers.
#[test]
fn chart_and_operator_refuse_the_same_bad_values() {
    let help = common::stdout(&common::cli(&["operator", "--help"], &[]));
    for (path, bad, var, passed) in BAD_VALUES {
        assert!(
            help.contains(&format!("[env: {var}=")),
            "{var} is not an operator flag"
        );
        // Integers go in as integers (the schema's type), strings as strings.
        let set = format!("{path}={bad}");
        let flag = if bad.parse::<i64>().is_ok() {
            "--set"
        } else {
            "--set-string"
        };
        let chart_ok = chart_takes(flag, &set, &[]);
        let (operator_ok, line) = operator_accepts(var, passed);
        assert!(!chart_ok, "the chart accepts {set}");
        assert!(!operator_ok, "the operator accepts {var}={passed}: {line}");
    }
    the_chart_refuses_what_only_it_sees();
    // At the edges, both take it.
    for set in [
        "resolver.memoryLimit=448Mi",
        "resources.limits.memory=1Gi",
        "resolver.timeout=0",
    ] {
        assert!(chart_accepts(set, &[]), "{set}");
    }
    for (var, value) in [
        ("BIFROST_RESOLVER_MEMORY_LIMIT", "448Mi"),
        ("BIFROST_LEASE_DURATION_SECONDS", "300"),
        ("BIFROST_RESOLVER_TIMEOUT", "0"),
    ] {
        assert!(operator_accepts(var, value).0, "{var}={value}");
    }
}

/// (value, bad value as set, operator variable, the value as the chart passes it)
#[rustfmt::skip]
const BAD_VALUES: [(&str, &str, &str, &str); 10] = [
    ("resolver.timeout",                     "banana",     "BIFROST_RESOLVER_TIMEOUT",           "banana"),
    ("resolver.memoryLimit",                 "1Mi",        "BIFROST_RESOLVER_MEMORY_LIMIT",      "1Mi"),
    ("webhook.tls.checkInterval",            "1ms",        "BIFROST_TLS_CHECK_INTERVAL",         "1ms"),
    ("webhook.tls.selfManaged.certValidity", "9000h",      "BIFROST_CERT_VALIDITY",              "9000h"),
    ("leaderElection.leaseDurationSeconds",  "2",          "BIFROST_LEASE_DURATION_SECONDS",     "2"),
    ("leaderElection.leaseDurationSeconds",  "301",        "BIFROST_LEASE_DURATION_SECONDS",     "301"),
    ("metrics.port",                         "65536",      "BIFROST_METRICS_ADDR",               "0.0.0.0:65536"),
    ("webhook.port",                         "70000",      "BIFROST_WEBHOOK_ADDR",               "0.0.0.0:70000"),
    ("image.pullPolicy",                     "Sometimes",  "BIFROST_OPERATOR_IMAGE_PULL_POLICY", "Sometimes"),
    ("webhook.tls.mode",                     "selfSigned", "BIFROST_TLS_MODE",                   "self-signed"),
];

/// A limit below its request, the resolver's limit too close to the container's, a quantity
/// that is none, and one port for both servers.
fn the_chart_refuses_what_only_it_sees() {
    chart_refuses(
        &["resources.limits.memory=32Mi"],
        &["resources.limits.memory: 32Mi is below resources.requests.memory (64Mi)"],
    );
    chart_refuses(
        &["resources.requests.cpu=2", "resources.limits.cpu=500m"],
        &["resources.limits.cpu: 500m is below resources.requests.cpu (2)"],
    );
    chart_refuses(
        &["resolver.memoryLimit=480Mi"],
        &[
            r#"resolver.memoryLimit: "480Mi" leaves less than 64Mi of resources.limits.memory (512Mi)"#,
        ],
    );
    chart_refuses(&["resources.limits.memory=lots"], &["resources"]);
    chart_refuses(&["resolver.cacheSizeLimit=1 GB"], &["cacheSizeLimit"]);
    let chart = chart_arg();
    let ports = [
        "template",
        "r",
        chart.as_str(),
        "--set",
        "webhook.port=8080",
    ];
    refused_by_both(&ports, &["webhook.port: 8080 is metrics.port too"]);
}

/// `helm template` with each of `sets` as `--set-string` fails with both Helms, naming `words`.
fn chart_refuses(sets: &[&str], words: &[&str]) {
    let chart = chart_arg();
    let mut args = vec!["template", "r", chart.as_str()];
    for s in sets {
        args.extend_from_slice(&["--set-string", s]);
    }
    refused_by_both(&args, words);
}

// Generated values: the chart (both Helms) and the operator agree on every string of the
// quantity and duration grammars and near misses (a few dozen each: every case runs Helm twice).
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, .. Default::default() })]

    #[test]
    fn generated_memory_limits_agree(
        q in "[+-]?[0-9]{0,9}(\\.[0-9]{0,3})?(|Ki|Mi|Gi|Ti|Ei|k|M|G|T|E|m|u|n|e[+-]?[0-9]|e|GB| Mi)"
    ) {
        let found = disagreements(
            "resolver.memoryLimit",
            "BIFROST_RESOLVER_MEMORY_LIMIT",
            &[q.as_str()],
            &["resources.limits.memory=null"],
        );
        proptest::prop_assert!(found.is_empty(), "{:?}", found);
    }

    #[test]
    fn generated_durations_agree(
        d in "[0-9]{0,6}(\\.[0-9]{0,3})?(|ns|us|µs|ms|s|m|h|d|S| s)([0-9]{1,3}(ms|s|m))?"
    ) {
        let mut found = Vec::new();
        for (path, var) in [
            ("webhook.tls.checkInterval", "BIFROST_TLS_CHECK_INTERVAL"),
            ("webhook.tls.selfManaged.certValidity", "BIFROST_CERT_VALIDITY"),
            ("resolver.timeout", "BIFROST_RESOLVER_TIMEOUT"),
        ] {
            found.extend(disagreements(path, var, &[d.as_str()], &[]));
        }
        proptest::prop_assert!(found.is_empty(), "{:?}", found);
    }
}

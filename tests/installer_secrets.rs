//! Secrets stay with their owner: `install` hands uv and pip a scrubbed environment, so a source
//! build's backend — package code — sees none of `REDIS_URL`, `DATABASE_URL`,
//! `BIFROST_S3_SECRET_KEY`; index credentials travel in a private netrc file, never on a command
//! line (`/proc/PID/cmdline` of every process from the backend up); uv's own output stays free
//! of them, in `install` and in the resolver (`requirements show --lock`). Real uv, real pip, a
//! real index on loopback that requires basic auth, a real PostgreSQL for the resolver's store.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::index::{Index, path_with_real_uv, real_uv};
use common::lock_world::database_holding;
use common::wheels::Wheel;
use common::{assert_ok, cli, stderr, stdout};

const SPY: &str = "bifrost_t_envspy";
const GOOD: &str = "bifrost_t_credgood";
const USER: &str = "alice";
const PASSWORD: &str = "idx-Pw-4711-q";
const REDIS_PW: &str = "redis-Pw-0815";
const DB_PW: &str = "db-Pw-2342";
const S3_SECRET: &str = "s3-Secret-9999";

/// An in-tree PEP 517 backend (no build requirement, so nothing is fetched): its `build_wheel`
/// writes what it can see — its environment and the command line of every ancestor process up
/// to `install` — to `REPORT`, then builds a one-module wheel.
const BACKEND: &str = r#"
import base64, hashlib, json, os, zipfile
REPORT = __REPORT__
NAME = "bifrost_t_envspy"

def _ancestors():
    lines, pid = [], os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return lines

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open(REPORT + ".tmp", "w") as f:
        json.dump({"environ": dict(os.environ), "cmdlines": _ancestors()}, f)
    os.replace(REPORT + ".tmp", REPORT)
    files = {
        f"{NAME}/__init__.py": b"VERSION = '1.0'\n",
        f"{NAME}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: 1.0\n".encode(),
        f"{NAME}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: spy\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    wheel = f"{NAME}-1.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{NAME}-1.0.dist-info/RECORD,,")
        z.writestr(f"{NAME}-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel
"#;

/// Publish the spy as a source distribution only; its backend reports to `report`.
fn publish_spy(index: &Index, report: &Path) {
    let pyproject = format!(
        "[build-system]\nrequires = []\nbuild-backend = \"spy_backend\"\nbackend-path = [\".\"]\n\n\
         [project]\nname = \"{SPY}\"\nversion = \"1.0\"\n"
    );
    let code = BACKEND.replace("__REPORT__", &format!("{:?}", report.to_str().unwrap()));
    let project = index.root().join(common::index::normalize(SPY));
    std::fs::create_dir_all(&project).unwrap();
    common::wheels::sdist(&project, SPY, &pyproject, &[("spy_backend.py", &code)]);
}

/// The secrets of our own environment, as a worker's Secrets would put them there.
fn our_secrets() -> Vec<(&'static str, String)> {
    vec![
        (
            "REDIS_URL",
            format!(
                "redis://:{REDIS_PW}@127.0.0.1:{}/0",
                common::proc::free_port()
            ),
        ),
        (
            "DATABASE_URL",
            format!(
                "postgresql://bifrost:{DB_PW}@127.0.0.1:{}/bifrost",
                common::proc::free_port()
            ),
        ),
        ("BIFROST_S3_SECRET_KEY", S3_SECRET.to_string()),
        ("BIFROST_S3_ACCESS_KEY", "AKIDEXAMPLE".to_string()),
    ]
}

/// `install` of `content` from a fallback file into `target`, with `installer`, against
/// `index_url` (given by `BIFROST_INSTALL_INDEX_URL`), with our secrets in the environment.
fn install(dir: &Path, content: &str, installer: &str, index_url: &str) -> Output {
    let fallback = dir.join(format!("requirements-{installer}.txt"));
    std::fs::write(&fallback, content).unwrap();
    let target = dir.join(format!("site-{installer}"));
    let cache = dir.join(format!("cache-{installer}"));
    let uv = real_uv();
    let mut args = vec!["install", "--json", "--installer", installer];
    args.extend(["--uv", uv.to_str().unwrap()]);
    args.extend(["--target", target.to_str().unwrap()]);
    args.extend(["--cache-dir", cache.to_str().unwrap()]);
    args.extend(["--fallback-file", fallback.to_str().unwrap()]);
    args.extend(["--redis-timeout", "300ms", "--redis-attempts", "1"]);
    // The index (with its credentials) as the environment gives it: the flag would put it on
    // install's own command line.
    let mut secrets = our_secrets();
    secrets.push(("BIFROST_INSTALL_INDEX_URL", index_url.to_string()));
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cli(&args, &env)
}

#[track_caller]
fn assert_no_secret(text: &str, what: &str) {
    for secret in [PASSWORD, REDIS_PW, DB_PW, S3_SECRET] {
        assert!(!text.contains(secret), "{what} holds {secret:?}:\n{text}");
    }
}

#[test]
fn a_build_backend_sees_none_of_our_secrets_and_no_command_line_holds_the_index_password() {
    let index = Index::start(&[Wheel::new(GOOD, "1.0")]);
    index.require_credentials(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    for installer in ["uv", "pip"] {
        let report = dir.path().join(format!("spy-{installer}.json"));
        publish_spy(&index, &report);
        let url = index.url_with_credentials(USER, PASSWORD);
        let out = install(
            dir.path(),
            &format!("{SPY}==1.0\n{GOOD}==1.0\n"),
            installer,
            &url,
        );
        assert_ok(&out);
        assert_no_secret(&stderr(&out), &format!("{installer}: install's log"));
        assert_no_secret(&stdout(&out), &format!("{installer}: install's report"));
        let target = dir.path().join(format!("site-{installer}"));
        for module in [SPY, GOOD] {
            assert_eq!(
                common::wheels::import(&target, module).as_deref(),
                Ok("1.0"),
                "{installer}: {module}"
            );
        }

        let seen: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).expect("the backend ran"))
                .unwrap();
        let environ = seen["environ"].as_object().unwrap();
        for (name, _) in our_secrets() {
            assert!(
                !environ.contains_key(name),
                "{installer}: the backend saw {name}"
            );
        }
        assert!(
            environ.contains_key("PATH"),
            "{installer}: PATH is what installs need"
        );
        assert_no_secret(
            &seen["environ"].to_string(),
            &format!("{installer}: the backend's environment"),
        );
        let cmdlines = common::checks::strings(&seen["cmdlines"]);
        let reaches_install = |c: &&str| c.contains("install") && c.contains("--target");
        assert!(
            cmdlines.iter().any(reaches_install),
            "{installer}: the walk must reach the installer: {cmdlines:#?}"
        );
        assert_no_secret(
            &cmdlines.join("\n"),
            &format!("{installer}: a command line"),
        );
    }
}

/// uv's own messages about a credentialed index (here: the credentials are refused, 401) carry
/// no password, in `install` and in the resolver.
#[tokio::test]
async fn uvs_own_output_about_a_credentialed_index_holds_no_password() {
    let index = Index::start(&[Wheel::new(GOOD, "1.0")]);
    index.require_credentials(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-Pw-31337";
    let bad_url = index.url_with_credentials(USER, wrong);
    let out = install(dir.path(), &format!("{GOOD}==1.0\n"), "uv", &bad_url);
    assert!(!out.status.success(), "{}", stderr(&out));
    let all = format!("{}{}", stderr(&out), stdout(&out));
    assert!(
        all.contains("127.0.0.1"),
        "uv's message should still name the index: {all}"
    );
    assert!(!all.contains(wrong), "{all}");
    assert_no_secret(&all, "install against a refusing index");

    // The resolver: right credentials resolve, wrong ones fail without showing them.
    let db_url = database_holding(&format!("{GOOD}==1.0\n")).await;
    let path = path_with_real_uv();
    let show = |url: &str, cache: PathBuf| {
        let args = common::index::show_lock_args(url, &cache);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args, &[("DATABASE_URL", &db_url), ("PATH", &path)])
    };
    let good = show(
        &index.url_with_credentials(USER, PASSWORD),
        dir.path().join("rc1"),
    );
    assert_ok(&good);
    assert!(
        stdout(&good).contains(&format!("{}==1.0", common::index::normalize(GOOD)))
            || stdout(&good).contains(&format!("{GOOD}==1.0")),
        "{}",
        stdout(&good)
    );
    assert_no_secret(
        &format!("{}{}", stdout(&good), stderr(&good)),
        "the lock and its log",
    );
    let bad = show(&bad_url, dir.path().join("rc2"));
    assert!(!bad.status.success(), "{}", stdout(&bad));
    let all = format!("{}{}", stderr(&bad), stdout(&bad));
    assert!(!all.contains(wrong), "{all}");
    assert_no_secret(&all, "the resolver against a refusing index");
}

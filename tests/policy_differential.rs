//! Differential test of the requirements policy against the real installers.
//!
//! Two PEP 503 indexes run on loopback inside this test: a legit one (`bifrost-hello` 1.0,
//! `bifrost-other` 1.0) and a trap (`bifrost-hello` 6.6, `bifrost-trap` 1.0) that records every
//! request. For each file of a corpus of tricky requirements files, our policy gives a verdict.
//! Every accepted file is installed four ways with only the legit index configured: our `install`
//! with `--installer uv` and `--installer pip` (which feed the installers the text rendered from
//! our model), and raw `uv pip install -r FILE` and `python3 -m pip install -r FILE` (what
//! Bifrost's own worker does with the stored bytes). After each, the trap must not have been
//! asked for anything and nothing may be installed that the policy did not count. So that this
//! cannot pass vacuously, the known bypasses are fed raw to uv and pip and must reach the trap,
//! while our policy refuses them (and our `install` installs nothing).
//!
//! The third reader is the lock: every accepted file is also resolved by the operator's
//! [`Resolver`] (the bundled `uv pip compile`, as the controller and `requirements show --lock`
//! run it). It must resolve whatever the installers install, reach no trap and pin nothing the
//! policy did not count (beyond what those pull in, which this index does not have).

mod common;
#[path = "policy_differential/corpus.rs"]
mod corpus;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_requirements::lock::Lock;
use bifrost_requirements::policy::Policy;
use bifrost_requirements::requirements::RequirementsFile;
use common::index::normalize;
use common::wheels::Wheel;
use corpus::{Case, Expect, corpus};
use sha2::{Digest, Sha256};

/// A PEP 503 simple index on loopback that logs every request path.
struct Index {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Index {
    fn start(wheels: &[Wheel]) -> Index {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(String, Vec<u8>)> = wheels
            .iter()
            .map(|w| {
                let path = w.build(dir.path());
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&path).unwrap(),
                )
            })
            .collect();
        let files = Arc::new(files);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, log) = (files.clone(), shared.clone());
                std::thread::spawn(move || serve(stream, &files, &log));
            }
        });
        Index { port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/simple/", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, files: &[(String, Vec<u8>)], log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push(path.clone());
    let (status, kind, body): (&str, &str, Vec<u8>) =
        if let Some(file) = path.strip_prefix("/files/") {
            match files.iter().find(|(n, _)| n == file) {
                Some((_, bytes)) => ("200 OK", "application/octet-stream", bytes.clone()),
                None => ("404 Not Found", "text/plain", b"no such file".to_vec()),
            }
        } else if let Some(project) = path.strip_prefix("/simple/") {
            let project = normalize(project.trim_end_matches('/'));
            let links: String = files
                .iter()
                .filter(|(n, _)| normalize(n.split('-').next().unwrap_or("")) == project)
                .map(|(n, bytes)| {
                    format!(
                        "<a href=\"/files/{n}#sha256={}\">{n}</a>\n",
                        hex::encode(Sha256::digest(bytes))
                    )
                })
                .collect();
            if links.is_empty() {
                ("404 Not Found", "text/plain", b"no such project".to_vec())
            } else {
                (
                    "200 OK",
                    "text/html",
                    format!("<!DOCTYPE html><html><body>\n{links}</body></html>\n").into_bytes(),
                )
            }
        } else {
            ("404 Not Found", "text/plain", b"not found".to_vec())
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// Run a command with a deadline; the environment is cleared of installer configuration.
fn run(mut cmd: Command, cache: &Path) -> Output {
    for (var, _) in std::env::vars() {
        if var.starts_with("PIP_") || var.starts_with("UV_") || var == "REDIS_URL" {
            cmd.env_remove(var);
        }
    }
    cmd.env("UV_CACHE_DIR", cache.join("uv"))
        .env("PIP_CACHE_DIR", cache.join("pip"))
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("UV_NO_CONFIG", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How one file is installed.
#[derive(Debug, Clone, Copy)]
enum Way {
    OursUv,
    OursPip,
    RawUv,
    RawPip,
}

fn install(way: Way, file: &Path, target: &Path, legit: &str, cache: &Path) -> Output {
    let (f, t) = (file.to_str().unwrap(), target.to_str().unwrap());
    let cmd = match way {
        Way::OursUv | Way::OursPip => {
            let mut c = Command::new(common::bin());
            c.args([
                "install",
                "--target",
                t,
                "--fallback-file",
                f,
                "--index-url",
                legit,
            ])
            .args([
                "--installer",
                if matches!(way, Way::OursUv) {
                    "uv"
                } else {
                    "pip"
                },
            ]);
            c
        }
        Way::RawUv => {
            let mut c = Command::new("uv");
            c.args([
                "pip",
                "install",
                "--target",
                t,
                "--python",
                "python3",
                "--no-config",
            ])
            .args(["--index-url", legit, "-r", f]);
            c
        }
        Way::RawPip => {
            let mut c = Command::new("python3");
            c.args([
                "-m",
                "pip",
                "install",
                "--target",
                t,
                "--index-url",
                legit,
                "-r",
                f,
            ])
            .args([
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ]);
            c
        }
    };
    run(cmd, cache)
}

/// `(normalized name, version)` of every distribution in a target.
fn installed(target: &Path) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(target) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let stem = n.strip_suffix(".dist-info")?;
            let (name, version) = stem.rsplit_once('-')?;
            Some((normalize(name), version.to_string()))
        })
        .collect()
}

/// The lock of `content` as the operator resolves it against `legit` alone
/// (`requirements show --lock`, the controller's resolver, from the row at `path` of the
/// database `db`): its pins (`name==version`), or the resolver's message.
fn lock(
    content: &str,
    legit: &str,
    db: &str,
    path: &str,
    dir: &Path,
) -> Result<Vec<String>, String> {
    let file = dir.join("lock-input.txt");
    std::fs::write(&file, content).unwrap();
    let real_uv = common::index::path_with_real_uv();
    let cli = |args: &[&str]| {
        let mut c = Command::new(common::bin());
        c.args(args)
            .args(["--path", path])
            .env("DATABASE_URL", db)
            .env("PATH", &real_uv);
        run(c, &dir.join("cache"))
    };
    let set = cli(&[
        "requirements",
        "set",
        "--allow-index-url",
        legit,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(
        set.status.success(),
        "requirements set: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    let cache = dir.join("cache").join("resolver");
    let args = common::index::show_lock_args(legit, &cache);
    let out = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let lock = Lock::parse(&String::from_utf8_lossy(&out.stdout)).map_err(|e| e.to_string())?;
    Ok(lock.pins())
}

/// The lock, the third reader of an accepted file: resolved whenever the installers install
/// it, never past the trap, pinning only what the policy counted.
fn check_lock(
    case: &Case,
    content: &str,
    legit: &Index,
    trap: &Index,
    db: &str,
    dir: &Path,
) -> Vec<String> {
    let mut failures = Vec::new();
    let counted: BTreeSet<String> = RequirementsFile::parse(content)
        .requirements()
        .map(|(_, n)| n.to_string())
        .collect();
    let before = trap.requests().len();
    let locked = lock(
        content,
        &legit.url(),
        db,
        &format!("{}.txt", case.name),
        dir,
    );
    let hits = trap.requests()[before..].to_vec();
    if !hits.is_empty() {
        failures.push(format!("the resolver reached the trap: {hits:?}"));
    }
    match locked {
        Ok(pins) => {
            for pin in pins {
                let (name, version) = pin.split_once("==").unwrap_or((&pin, ""));
                if !counted.contains(name) || version == "6.6" {
                    failures.push(format!(
                        "the lock pins {pin}, which the policy did not count ({counted:?})"
                    ));
                }
            }
        }
        Err(e) if matches!(case.expect, Expect::Accept { installs: true }) => {
            failures.push(format!(
                "the resolver refused a file the installers install: {e}"
            ));
        }
        Err(_) => {}
    }
    failures
}

/// Everything that happened to one case, for the summary and the assertions.
struct Outcome {
    lines: Vec<String>,
    failures: Vec<String>,
}

/// One case on disk: its file (the trap's URL filled in), its own trap, and what the policy
/// counted in it.
struct Trial<'a> {
    case: &'a Case,
    legit: &'a Index,
    trap: Index,
    content: String,
    dir: PathBuf,
    file: PathBuf,
    counted: BTreeSet<String>,
}

impl<'a> Trial<'a> {
    fn new(case: &'a Case, legit: &'a Index, work: &Path) -> Trial<'a> {
        let trap = Index::start(&[
            Wheel::new("bifrost_hello", "6.6"),
            Wheel::new("bifrost_trap", "1.0"),
        ]);
        let content = case.content.replace("{TRAP}", &trap.url());
        let dir = work.join(&case.name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("requirements.txt");
        std::fs::write(&file, &content).unwrap();
        let counted = RequirementsFile::parse(&content)
            .requirements()
            .map(|(_, n)| n.to_string())
            .collect();
        Trial {
            case,
            legit,
            trap,
            content,
            dir,
            file,
            counted,
        }
    }

    /// The policy's verdict on the file, and a failure when it is not the one expected.
    fn verdict(&self) -> (String, bool, Option<String>) {
        let verdict = Policy {
            allowed_index_urls: vec![self.legit.url()],
            only_binary: false,
        }
        .check(&RequirementsFile::parse(&self.content));
        let failure = match (self.case.expect, &verdict) {
            (Expect::Accept { .. }, Err(e)) => Some(format!("expected acceptance, got {e}")),
            (Expect::Reject | Expect::Bypass { .. }, Ok(_)) => Some("expected rejection".into()),
            _ => None,
        };
        let said = match &verdict {
            Ok(a) => format!("accepted ({} package(s))", a.package_count),
            Err(e) => format!("rejected (line {})", e.first().line),
        };
        (said, verdict.is_ok(), failure)
    }

    /// The ways the file is installed: all four when the policy accepts it or it is a known
    /// bypass, only ours when it is refused.
    fn ways(&self) -> &'static [Way] {
        match self.case.expect {
            Expect::Accept { .. } => &[Way::OursUv, Way::OursPip, Way::RawUv, Way::RawPip],
            Expect::Reject => &[Way::OursUv, Way::OursPip],
            Expect::Bypass { .. } => &[Way::OursUv, Way::OursPip, Way::RawUv, Way::RawPip],
        }
    }

    /// Install the file `way`: the summary's part for it, and its failures.
    fn install(&self, way: Way, accepted: bool) -> (String, Vec<String>) {
        let mut failures = Vec::new();
        let mut fail = |m: String| failures.push(m);
        let target = self.dir.join(format!("{way:?}"));
        let before = self.trap.requests().len();
        let cache = self.dir.join("cache");
        let o = install(way, &self.file, &target, &self.legit.url(), &cache);
        let hits = self.trap.requests()[before..].to_vec();
        let dists = installed(&target);
        let ours = matches!(way, Way::OursUv | Way::OursPip);
        let said = format!(
            " | {way:?}: exit {:?}, trap {}",
            o.status.code(),
            hits.len()
        );
        let counted = &self.counted;
        match should_reach(self.case.expect, way) {
            // The detection works: the raw installer follows the hidden option.
            Some(true) if hits.is_empty() => fail(format!(
                "{way:?} was expected to reach the trap (a known bypass) but did not; exit {:?}\n{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            )),
            Some(_) => {}
            None => {
                if !hits.is_empty() {
                    fail(format!("{way:?} reached the trap: {hits:?}"));
                }
                for (name, version) in &dists {
                    if !counted.contains(name) || version == "6.6" {
                        fail(format!(
                            "{way:?} installed {name} {version}, which the policy did not count ({counted:?})"
                        ));
                    }
                }
            }
        }
        if ours && !accepted && (o.status.code() != Some(2) || !dists.is_empty()) {
            fail(format!(
                "{way:?} on a refused file: exit {:?}, installed {dists:?}",
                o.status.code()
            ));
        }
        let installs = matches!(self.case.expect, Expect::Accept { installs: true });
        if ours && installs && !o.status.success() {
            fail(format!(
                "{way:?} failed on an accepted file:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        (said, failures)
    }
}

/// Whether a raw installer must reach the trap (a known bypass); None where nothing may.
fn should_reach(expect: Expect, way: Way) -> Option<bool> {
    match (expect, way) {
        (Expect::Bypass { uv, .. }, Way::RawUv) => Some(uv),
        (Expect::Bypass { pip, .. }, Way::RawPip) => Some(pip),
        _ => None,
    }
}

fn check_case(case: &Case, legit: &Index, db: &str, work: &Path) -> Outcome {
    let trial = Trial::new(case, legit, work);
    let (said, accepted, failure) = trial.verdict();
    let mut failures: Vec<String> = failure.into_iter().collect();
    let mut summary = format!("{:<34} {said}", case.name);
    for &way in trial.ways() {
        let (said, failed) = trial.install(way, accepted);
        summary.push_str(&said);
        failures.extend(failed);
    }
    if accepted {
        let locked = check_lock(case, &trial.content, legit, &trial.trap, db, &trial.dir);
        failures.extend(locked.into_iter().map(|f| format!("Lock: {f}")));
        summary.push_str(" | Lock: checked");
    }
    Outcome {
        lines: vec![summary],
        failures: failures
            .into_iter()
            .map(|m| format!("{}: {m}", case.name))
            .collect(),
    }
}

#[test]
fn raw_installers_never_see_more_than_the_policy_and_known_bypasses_are_caught() {
    let started = Instant::now();
    let legit = Index::start(&[
        Wheel::new("bifrost_hello", "1.0"),
        Wheel::new("bifrost_other", "1.0"),
    ]);
    let hello_hash = {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = Wheel::new("bifrost_hello", "1.0").build(dir.path());
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    };
    let work = tempfile::Builder::new()
        .prefix("bifrost-differential-")
        .tempdir()
        .unwrap();
    let cases = corpus(&legit.url(), "{TRAP}", &hello_hash);
    // The lock's store: one database, a row per case.
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::services::fresh_database());
    let migrate = common::cli(&["migrate"], &[("DATABASE_URL", &db)]);
    common::assert_ok(&migrate);
    assert!(cases.len() >= 50, "corpus went missing");
    assert!(
        cases
            .iter()
            .any(|c| c.name.starts_with("generated") && c.content.contains("--hash")),
        "the generated variants lost their hashed line"
    );
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(case) = cases.get(i) else { break };
                    let outcome = check_case(case, &legit, &db, work.path());
                    results.lock().unwrap().push((i, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    for (_, o) in &results {
        for l in &o.lines {
            eprintln!("{l}");
        }
        failures.extend(o.failures.iter().cloned());
    }
    let accepted = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Accept { .. }))
        .count();
    eprintln!(
        "{} files ({accepted} accepted and installed 4 ways) in {:.1} s; legit index served {} requests",
        cases.len(),
        started.elapsed().as_secs_f64(),
        legit.requests().len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

//! A PEP 503 package index of wheels built in the test, served over HTTP.
//!
//! Python's `http.server` serves a folder per normalized project name; its folder listings
//! (`<a href="file.whl">`) are valid "simple" index pages, so uv and pip resolve against it as
//! against PyPI: versions, dependencies, hashes (computed from the downloaded bytes, the
//! listing carries none). Wheels may be published or replaced while it serves, which is what a
//! lock must survive: a newer release, or other bytes under the same file name.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::proc::{free_port, spawn_guarded_in, wait_for_addr};
use super::wheels::Wheel;

/// `http.server`'s file server on `HOST PORT ROOT`, answering each request as late as the file
/// `LATENCY` says (milliseconds; none while it is missing), and only to requests whose
/// `Authorization` header is what `LATENCY.auth` holds, while that file exists (401 otherwise); over
/// HTTPS when given `CERT KEY` too. Its listen backlog is raised from
/// socketserver's 5: uv fetches dozens of files at once, and the SYNs past the backlog were
/// dropped and retransmitted 1, 3, 7… s later, stalls that were neither the resolver's nor the
/// installer's.
const SERVER: &str = r#"
import functools, http.server, sys, time
host, port, root, latency = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        try:
            time.sleep(int(open(latency).read()) / 1000)
        except FileNotFoundError:
            pass
        try:
            wanted = open(latency + ".auth").read()
        except FileNotFoundError:
            wanted = None
        if wanted is not None and self.headers.get("Authorization") != wanted:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024

server = Server((host, port), functools.partial(Handler, directory=root))
if len(sys.argv) > 6:
    # HTTPS with CERT KEY; the handshake happens in the request's thread, on its first read.
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[5], sys.argv[6])
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
server.serve_forever()
"#;

/// A running index; stopped and its folder removed on drop.
pub struct Index {
    host: String,
    port: u16,
    /// `http`, or `https` ([`Index::start_https`]).
    scheme: &'static str,
    /// `root/` is served; the server's log sits beside it, not in a listing.
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl Index {
    /// An index of `wheels` on 127.0.0.1.
    pub fn start(wheels: &[Wheel]) -> Index {
        Index::start_on("127.0.0.1", wheels)
    }

    /// An index of `wheels` listening on `host` (e.g. a bridge's host address, for pods).
    pub fn start_on(host: &str, wheels: &[Wheel]) -> Index {
        Index::serve(host, wheels, false)
    }

    /// An index of `wheels` on 127.0.0.1 over HTTPS, its certificate signed by a CA of its own
    /// ([`Index::ca_file`]: what a client must trust, as a private index's CA).
    pub fn start_https(wheels: &[Wheel]) -> Index {
        Index::serve("127.0.0.1", wheels, true)
    }

    fn serve(host: &str, wheels: &[Wheel], https: bool) -> Index {
        let dir = tempfile::Builder::new()
            .prefix("bifrost-index-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("create the index root");
        let port = free_port();
        let log = dir.path().join("http.log");
        let latency = dir.path().join("latency_ms");
        let path = |p: &std::path::Path| p.to_str().expect("utf-8 temp path").to_string();
        let mut args = vec![
            "-c".to_string(),
            SERVER.to_string(),
            host.to_string(),
            port.to_string(),
            path(&root),
            path(&latency),
        ];
        if https {
            let issued = bifrost_requirements::tls::issue::issue(
                &[host.to_string()],
                Duration::from_secs(3600),
                time::OffsetDateTime::now_utc(),
            )
            .expect("issue the index's certificate");
            for (name, pem) in [
                ("ca.pem", &issued.ca),
                ("cert.pem", &issued.cert),
                ("key.pem", &issued.key),
            ] {
                std::fs::write(dir.path().join(name), pem).expect("write the index's TLS files");
            }
            args.push(path(&dir.path().join("cert.pem")));
            args.push(path(&dir.path().join("key.pem")));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = spawn_guarded_in("python3", &args, &[], &log, Some(dir.path()));
        let index = Index {
            host: host.into(),
            port,
            scheme: if https { "https" } else { "http" },
            dir,
            server: Some(server),
        };
        wait_for_addr(
            host,
            port,
            "the package index",
            &log,
            Duration::from_secs(30),
        );
        for w in wheels {
            index.publish(w);
        }
        index
    }

    /// The index URL for `--index-url` (`http://127.0.0.1:PORT/`, or `https://`).
    pub fn url(&self) -> String {
        format!("{}://{}:{}/", self.scheme, self.host, self.port)
    }

    /// The CA that signed an HTTPS index's certificate (PEM), for `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        assert_eq!(self.scheme, "https", "an HTTP index has no CA");
        self.dir.path().join("ca.pem")
    }

    /// The folder served (one folder per normalized project name).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Where `wheel`'s file is (or would be) served from.
    pub fn path_of(&self, wheel: &Wheel) -> PathBuf {
        self.root()
            .join(normalize(&wheel.name))
            .join(wheel.file_name())
    }

    /// Put `wheel` on the index (a new release while it serves); returns its file.
    pub fn publish(&self, wheel: &Wheel) -> PathBuf {
        let project = self.root().join(normalize(&wheel.name));
        std::fs::create_dir_all(&project).expect("create the project folder");
        wheel.build(&project)
    }

    /// Give `project`'s page the hashes of its files, as PyPI's pages do (`file#sha256=…`), so
    /// a resolver learns every file's hash without downloading it (and `--generate-hashes`
    /// lists them all, for every platform). Written as the folder's `index.html`, which the
    /// server then serves instead of its listing: call it again after publishing more.
    pub fn list_hashes(&self, project: &str) {
        let folder = self.root().join(normalize(project));
        let mut files: Vec<String> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("{} is not published: {e}", folder.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f != "index.html")
            .collect();
        files.sort();
        let links: String = files
            .iter()
            .map(|f| {
                let bytes = std::fs::read(folder.join(f)).expect("read a published file");
                format!("<a href=\"{f}#sha256={}\">{f}</a><br>\n", hex(&bytes))
            })
            .collect();
        let page = format!("<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n");
        std::fs::write(folder.join("index.html"), page).expect("write the project page");
    }

    /// Replace the published `wheel` by other bytes under the same file name (its module gains
    /// a line): what a compromised index or mirror serves. Returns the new file's SHA-256.
    pub fn tamper(&self, wheel: &Wheel) -> String {
        let path = self.path_of(wheel);
        let before = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} is not published: {e}", path.display()));
        self.publish(&wheel.clone().extra("TAMPERED = True\n"));
        let after = std::fs::read(&path).expect("read the tampered wheel");
        assert_ne!(before, after, "tampering must change the bytes");
        hex(&after)
    }

    /// Take `wheel` off the index (a yanked or deleted release).
    pub fn remove(&self, wheel: &Wheel) {
        let path = self.path_of(wheel);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    /// The SHA-256 (hex) of the published `wheel`, as a lock's `--hash=sha256:` names it.
    pub fn sha256(&self, wheel: &Wheel) -> String {
        let path = self.path_of(wheel);
        hex(&std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
    }

    /// Answer every request `latency` late from now on (an index across a network rather than
    /// on loopback; zero again for loopback).
    pub fn set_latency(&self, latency: Duration) {
        let file = self.dir.path().join("latency_ms");
        std::fs::write(&file, latency.as_millis().to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    /// From now on answer only requests with HTTP basic credentials `user:password` (401
    /// otherwise), as a private index does.
    pub fn require_credentials(&self, user: &str, password: &str) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let file = self.dir.path().join("latency_ms.auth");
        std::fs::write(&file, format!("Basic {token}"))
            .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    /// [`Index::url`] with `user:password@` in it (percent-encoded).
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        let enc = bifrost_requirements::redact::percent_encode;
        format!(
            "{}://{}:{}@{}:{}/",
            self.scheme,
            enc(user),
            enc(password),
            self.host,
            self.port
        )
    }

    /// Bare `uv pip install --target TARGET ARGS…` (a requirement, or `-r FILE`) from this index
    /// alone, with a fresh cache: what uv does without the operator in between.
    pub fn uv_install(&self, args: &[&OsStr], target: &Path) -> Output {
        let cache = tempfile::tempdir().expect("tempdir");
        Command::new("uv")
            .args([
                "pip",
                "install",
                "--no-config",
                "--python",
                "python3",
                "--target",
            ])
            .arg(target)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["--index-url", &self.url()])
            .args(args)
            .output()
            .expect("run uv")
    }

    /// The server's request log (one line per request), for tests that count fetches.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("http.log")).unwrap_or_default()
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Index {
    /// Stop serving (an index outage): connections are refused from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // The watchdog stops the server on TERM and waits for it.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((self.host.as_str(), self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The real uv executable (not a pyenv shim script, which would not survive being copied, nor
/// run in the resolver's clean environment, whose `HOME` is a scratch folder).
pub fn real_uv() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v uv"])
        .output()
        .unwrap();
    let found = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let is_script = std::fs::read(&found)
        .map(|b| b.starts_with(b"#!"))
        .unwrap_or(false);
    if is_script
        && let Ok(o) = Command::new("pyenv").args(["which", "uv"]).output()
        && o.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    }
    found
}

/// `PATH` with the real uv's folder first (pyenv puts the real `python3` there too), for a
/// command that runs uv in a clean environment.
pub fn path_with_real_uv() -> String {
    let uv = real_uv();
    let dir = uv.parent().expect("uv's folder");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// PEP 503: lowercase, every run of `-`, `_`, `.` one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The arguments of `requirements show --lock` for the tests' worker (Python 3.11,
/// `x86_64-manylinux_2_28`), resolving against `index_url` with its own resolver cache.
pub fn show_lock_args(index_url: &str, cache: &std::path::Path) -> Vec<String> {
    [
        "requirements",
        "show",
        "--lock",
        "--python-version",
        "3.11",
        "--python-platform",
        "x86_64-manylinux_2_28",
        "--index-url",
        index_url,
        "--resolver-cache-dir",
        cache.to_str().expect("a UTF-8 path"),
    ]
    .map(String::from)
    .to_vec()
}

//! The wheelhouse on plain values: an in-memory store in place of S3, a small HTTP server in
//! place of the index (pages and files as each test writes them, every request recorded).
//! `tests/wheelhouse.rs` runs the same flows against moto and a real index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::*;
use crate::egress::Origin;
use crate::lock::Interpreter;
use crate::shutdown::{Stop, stop_pair};

mod copying;
mod hostile;

/// What the test server answers at one path.
#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Routes {
    answers: HashMap<String, Answer>,
    /// (path, Authorization header), in order.
    seen: Vec<(String, Option<String>)>,
}

/// A tiny index: pages and files at paths, everything else 404.
struct Server {
    port: u16,
    routes: Arc<Mutex<Routes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(routes): State<Arc<Mutex<Routes>>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut routes = routes.lock().unwrap();
    routes.seen.push((path.clone(), auth));
    let found = routes.answers.get(&path).cloned().unwrap_or(Answer {
        status: 404,
        content_type: "text/plain".into(),
        body: b"not found".to_vec(),
    });
    Response::builder()
        .status(found.status)
        .header("content-type", found.content_type)
        .body(Body::from(found.body))
        .unwrap()
}

impl Server {
    async fn start() -> Server {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(routes.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { port, routes, task }
    }

    /// `http://127.0.0.1:PORT/`.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn origin(&self) -> Origin {
        ("http".into(), "127.0.0.1".into(), self.port)
    }

    fn serve(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) {
        self.answer(path, 200, content_type, body);
    }

    fn answer(&self, path: &str, status: u16, content_type: &str, body: impl Into<Vec<u8>>) {
        let answer = Answer {
            status,
            content_type: content_type.into(),
            body: body.into(),
        };
        self.routes
            .lock()
            .unwrap()
            .answers
            .insert(path.into(), answer);
    }

    /// An HTML page at `/<project>/` linking each of `links` (as written).
    fn html_page(&self, project: &str, links: &[&str]) {
        let anchors: String = links
            .iter()
            .map(|l| format!("<a href=\"{l}\">{l}</a><br>\n"))
            .collect();
        let page = format!("<html><body>\n{anchors}</body></html>");
        self.serve(&format!("/{project}/"), "text/html", page);
    }

    /// A PEP 691 page at `/<project>/`: (file name, URL, sha256) each.
    fn json_page(&self, project: &str, files: &[(&str, &str, Option<&str>)]) {
        let files: Vec<serde_json::Value> = files
            .iter()
            .map(|(name, url, sha)| {
                let hashes = match sha {
                    Some(sha) => serde_json::json!({"sha256": sha}),
                    None => serde_json::json!({}),
                };
                serde_json::json!({"filename": name, "url": url, "hashes": hashes})
            })
            .collect();
        let page =
            serde_json::json!({"meta": {"api-version": "1.1"}, "name": project, "files": files});
        self.serve(
            &format!("/{project}/"),
            "application/vnd.pypi.simple.v1+json",
            page.to_string(),
        );
    }

    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.routes.lock().unwrap().seen.clone()
    }

    /// How many requests asked for `path`.
    fn asked(&self, path: &str) -> usize {
        self.seen().iter().filter(|(p, _)| p == path).count()
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A wheelhouse in memory, under `wh/`.
fn house() -> Wheelhouse {
    Wheelhouse {
        store: Arc::new(InMemory::new()),
        config: S3Config::new("test-bucket"),
        endpoint_shown: "memory".into(),
        prefix: "wh".into(),
        part_size: PART_SIZE,
    }
}

/// A lock against `index` pinning (name, version, sha256 hashes) each; its text and SHA-256.
fn lock(index: &str, pins: &[(&str, &str, &[&str])]) -> (String, String) {
    let mut body = String::new();
    for (name, version, hashes) in pins {
        body.push_str(&format!("{name}=={version} \\\n"));
        for (i, h) in hashes.iter().enumerate() {
            let more = if i + 1 < hashes.len() { " \\" } else { "" };
            body.push_str(&format!("    --hash=sha256:{h}{more}\n"));
        }
        body.push_str("    # via -r requirements.txt\n");
    }
    let text = Lock {
        content_hash: "0".repeat(64),
        interpreter: Interpreter {
            version: "3.11".into(),
            platform: "x86_64-manylinux_2_28".into(),
        },
        index_urls: vec![index.to_string()],
        only_binary: true,
        body,
    }
    .render();
    let sha = crate::requirements::content_hash(&text);
    (text, sha)
}

fn fetcher(index: &str, more: &[Origin]) -> Fetcher {
    Fetcher::new(
        &[index.to_string()],
        more.to_vec(),
        std::time::Duration::from_secs(5),
    )
    .unwrap()
}

fn running() -> (crate::shutdown::StopHandle, Stop) {
    stop_pair()
}

/// The stored bytes at `<prefix>/<sha>/<name>`, if any.
async fn stored_bytes(house: &Wheelhouse, sha: &str, name: &str) -> Option<Vec<u8>> {
    match house.store.get(&house.key(sha, name)).await {
        Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

async fn put(house: &Wheelhouse, sha: &str, name: &str, bytes: &[u8]) {
    house
        .store
        .put(&house.key(sha, name), PutPayload::from(bytes.to_vec()))
        .await
        .unwrap();
}

/// Every object under the prefix.
async fn objects(house: &Wheelhouse) -> Vec<String> {
    use futures::TryStreamExt;
    let root = object_store::path::Path::from(house.prefix.as_str());
    let mut all: Vec<String> = house
        .store
        .list(Some(&root))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    all.sort();
    all
}

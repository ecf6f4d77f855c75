//! Two small HTTP servers on loopback for "no fetch past the allow-list" tests: a [`Redirector`]
//! that answers every request with a redirect to another origin, and a [`Recorder`] (that other
//! origin) that logs every request it gets and answers whatever it was told to.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request as a server saw it: the request line and the headers (lowercased names).
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut body).ok()?;
    Some(Seen {
        line: line.trim_end().to_string(),
        headers,
    })
}

/// Serve on a free loopback port; `answer` turns each request into a full HTTP response.
fn serve(answer: impl Fn(&Seen) -> String + Send + Sync + 'static) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (log2, answer) = (log.clone(), Arc::new(answer));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (log, answer) = (log2.clone(), answer.clone());
            thread::spawn(move || {
                let mut stream = stream;
                // Keep-alive: answer requests on this connection until the client closes it.
                while let Some(seen) = read_request(&stream) {
                    let reply = answer(&seen);
                    log.lock().unwrap().push(seen);
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, log)
}

/// The path of a request line (`GET /b/k HTTP/1.1` → `/b/k`).
fn path(seen: &Seen) -> String {
    seen.line.split(' ').nth(1).unwrap_or("/").to_string()
}

/// Answers every request with `status` and `Location: <to><path>`.
pub struct Redirector {
    pub port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Redirector {
    /// `to` is a base URL without a trailing slash (`http://127.0.0.1:4711`, `file://`).
    pub fn start(status: u16, to: &str) -> Redirector {
        let to = to.to_string();
        let (port, log) = serve(move |seen| {
            format!(
                "HTTP/1.1 {status} Moved\r\nLocation: {to}{}\r\nContent-Length: 0\r\n\r\n",
                path(seen)
            )
        });
        Redirector { port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

/// Logs every request and answers 200 with `body` (and an ETag, as S3 would).
pub struct Recorder {
    pub port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn start(body: &str, content_type: &str) -> Recorder {
        let (body, content_type) = (body.to_string(), content_type.to_string());
        let (port, log) = serve(move |_| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nETag: \"e\"\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        });
        Recorder { port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

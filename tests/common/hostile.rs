//! A small hostile registry for tests: an HTTP/1.1 server on 127.0.0.1
//! that answers each request as the test's script says (redirects
//! elsewhere, challenges naming other hosts, bodies longer than declared,
//! a byte a second, silence) and records what it was sent.
//!
//! Written on std::net rather than on an HTTP server crate because the
//! point is to misbehave at the byte level (trickle a head, stall, send a
//! chunked body without end), which servers are built to prevent.
//!
//! Bounded: request heads up to 64 KiB, request bodies up to 64 MiB, each
//! scripted stall or stream has a fixed limit, and the server stops when
//! dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most of a request body the server reads (and throws away). Uploads
/// of an uncompressed debug herd-init layer pass 64 MiB.
const MAX_BODY: u64 = 512 << 20;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query: `/v2/team/app/manifests/1`.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

/// How to answer.
pub enum Reply {
    /// A complete answer with a Content-Length.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked answer of `total` bytes of `fill`, for as long as the
    /// client reads.
    Chunked {
        status: u16,
        headers: Vec<(String, String)>,
        total: u64,
    },
    /// The whole of `reply`, head included, one byte every `interval`
    /// (at most 120 bytes).
    Trickle {
        reply: Box<Reply>,
        interval: Duration,
    },
    /// The head of `reply` at once, then its body a byte every `interval`.
    TrickleBody {
        reply: Box<Reply>,
        interval: Duration,
    },
    /// Nothing, for `for_` (at most a minute), then the connection closes.
    Silence { for_: Duration },
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json(status: u16, body: &str) -> Reply {
        Reply::status(status)
            .header("Content-Type", "application/json")
            .body(body.as_bytes())
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. } | Reply::Chunked { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    pub fn body(mut self, bytes: &[u8]) -> Reply {
        if let Reply::Full { body, .. } = &mut self {
            *body = bytes.to_vec();
        }
        self
    }

    fn head(status: u16, headers: &[(String, String)], length: Option<usize>) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {status} Scripted\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        match length {
            Some(length) => head.push_str(&format!("Content-Length: {length}\r\n\r\n")),
            None => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        }
        head.into_bytes()
    }

    /// The bytes of a Full reply.
    fn bytes(&self) -> Vec<u8> {
        match self {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut bytes = Reply::head(*status, headers, Some(body.len()));
                bytes.extend_from_slice(body);
                bytes
            }
            _ => panic!("only a full reply can be trickled"),
        }
    }
}

type Script = dyn Fn(&Request) -> Reply + Send + Sync;

/// The server; stops when dropped.
pub struct Hostile {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Body bytes the server managed to send, over all answers.
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    /// Starts a server answering each request with `script(request)`.
    pub fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (requests_, sent_, stop_) = (requests.clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (script, requests, sent, stop) = (
                    script.clone(),
                    requests_.clone(),
                    sent_.clone(),
                    stop_.clone(),
                );
                std::thread::spawn(move || serve(stream, &*script, &requests, &sent, &stop));
            }
        });
        Hostile {
            port,
            requests,
            sent,
            stop,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    stream: TcpStream,
    script: &Script,
    requests: &Mutex<Vec<Request>>,
    sent: &AtomicU64,
    stop: &AtomicBool,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap()).take(64 << 10);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_lowercase(), value.trim().to_string()));
        }
    }
    let length: u64 = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut reader = reader.into_inner();
    let body_len = std::io::copy(
        &mut (&mut reader).take(length.min(MAX_BODY)),
        &mut std::io::sink(),
    )
    .unwrap_or(0);
    let request = Request {
        method,
        target,
        headers,
        body_len,
    };
    let reply = script(&request);
    requests.lock().unwrap().push(request);
    let mut stream = stream;
    answer(&mut stream, reply, sent, stop);
}

fn answer(stream: &mut TcpStream, reply: Reply, sent: &AtomicU64, stop: &AtomicBool) {
    match reply {
        Reply::Full { .. } => {
            let _ = stream.write_all(&reply.bytes());
        }
        Reply::Chunked {
            status,
            headers,
            total,
        } => {
            if stream
                .write_all(&Reply::head(status, &headers, None))
                .is_err()
            {
                return;
            }
            let chunk = vec![b'x'; 64 << 10];
            let mut left = total;
            while left > 0 && !stop.load(Ordering::SeqCst) {
                let n = left.min(chunk.len() as u64) as usize;
                let mut piece = format!("{n:x}\r\n").into_bytes();
                piece.extend_from_slice(&chunk[..n]);
                piece.extend_from_slice(b"\r\n");
                if stream.write_all(&piece).is_err() {
                    return;
                }
                sent.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
        Reply::Trickle { reply, interval } => {
            for byte in reply.bytes().iter().take(120) {
                if stop.load(Ordering::SeqCst) || stream.write_all(&[*byte]).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(interval);
            }
        }
        Reply::TrickleBody { reply, interval } => {
            let Reply::Full {
                status,
                headers,
                body,
            } = *reply
            else {
                panic!("only a full reply can be trickled")
            };
            if stream
                .write_all(&Reply::head(status, &headers, Some(body.len())))
                .is_err()
            {
                return;
            }
            for byte in body.iter().take(120) {
                if stop.load(Ordering::SeqCst) || stream.write_all(&[*byte]).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(interval);
            }
        }
        Reply::Silence { for_ } => {
            let end = std::time::Instant::now() + for_.min(Duration::from_secs(60));
            while std::time::Instant::now() < end && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

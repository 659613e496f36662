//! A hand-rolled client that sends exact bytes, to check what drivers never
//! send: malformed messages, invalid UTF-8, wrong cancel keys.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    stream: TcpStream,
    /// ParameterStatus received at startup.
    pub params: HashMap<String, String>,
    /// BackendKeyData: process id and secret.
    pub pid: i32,
    pub secret: i32,
    /// The transaction status of the last ReadyForQuery.
    pub status: u8,
}

/// A typed message: type byte, then body.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &cstr(sql))
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend(cstr(k));
        body.extend(cstr(v));
    }
    body.push(0);
    let mut m = (body.len() as i32 + 4).to_be_bytes().to_vec();
    m.extend(body);
    m
}

/// The fields of an ErrorResponse body, by field type.
pub fn error_fields(body: &[u8]) -> HashMap<u8, String> {
    let mut fields = HashMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail
            .iter()
            .position(|b| *b == 0)
            .expect("NUL-terminated field");
        fields.insert(kind, String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = &tail[end + 1..];
    }
    fields
}

impl Raw {
    /// Connects and completes startup as `user`, with extra parameters.
    pub async fn connect(addr: SocketAddr, extra: &[(&str, &str)]) -> Raw {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut params = vec![("user", "raw")];
        params.extend_from_slice(extra);
        stream.write_all(&startup_packet(&params)).await.unwrap();
        let mut raw = Raw {
            stream,
            params: HashMap::new(),
            pid: 0,
            secret: 0,
            status: 0,
        };
        for (kind, body) in raw.until_ready().await {
            match kind {
                b'S' => {
                    let parts: Vec<&[u8]> = body.split(|b| *b == 0).collect();
                    raw.params.insert(
                        String::from_utf8_lossy(parts[0]).into_owned(),
                        String::from_utf8_lossy(parts[1]).into_owned(),
                    );
                }
                b'K' => {
                    raw.pid = i32::from_be_bytes(body[0..4].try_into().unwrap());
                    raw.secret = i32::from_be_bytes(body[4..8].try_into().unwrap());
                }
                b'R' => assert_eq!(body, 0i32.to_be_bytes(), "AuthenticationOk"),
                other => panic!("unexpected startup message {}", other as char),
            }
        }
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next message; None when the server closed the connection.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut header = [0u8; 5];
        if self.stream.read_exact(&mut header).await.is_err() {
            return None;
        }
        let len = i32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).await.ok()?;
        Some((header[0], body))
    }

    /// Messages up to and including ReadyForQuery (not included in the
    /// result); panics if the server hangs up first.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let (kind, body) = self
                .recv()
                .await
                .expect("server closed before ReadyForQuery");
            if kind == b'Z' {
                self.status = body[0];
                return out;
            }
            out.push((kind, body));
        }
    }

    /// Reads to the end of the stream and returns what came.
    pub async fn until_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            out.push(m);
        }
        out
    }

    /// Runs a simple query and returns its messages before ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<(u8, Vec<u8>)> {
        self.send(&query(sql)).await;
        self.until_ready().await
    }
}

/// The message types of `messages`, as a string (`"TDC"`).
pub fn kinds(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|(k, _)| *k as char).collect()
}

/// The SQLSTATE of the first ErrorResponse in `messages`.
pub fn sqlstate(messages: &[(u8, Vec<u8>)]) -> String {
    let (_, body) = messages
        .iter()
        .find(|(k, _)| *k == b'E')
        .unwrap_or_else(|| panic!("no ErrorResponse in {}", kinds(messages)));
    error_fields(body)[&b'C'].clone()
}

//! A loopback HTTP proxy in front of the S3 server that behaves like a server ignoring
//! conditional writes (Garage 2.5.0): a PUT the server refuses with `412 Precondition Failed`
//! is answered `200 OK`, as if it had been written. One request per connection
//! (`Connection: close` both ways), enough for object_store's client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// Starts the proxy in front of `upstream` (`http://host:port`); returns its endpoint. The
/// listener thread lives as long as the test process.
pub fn start(upstream: &str) -> String {
    let upstream = upstream
        .strip_prefix("http://")
        .expect("an http endpoint")
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("a proxy port");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let _ = serve(client, &upstream);
            });
        }
    });
    endpoint
}

/// Index just past the `\r\n\r\n` ending the head, if it has arrived.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Reads one request (head plus a `Content-Length` body), forwards it with
/// `Connection: close`, and relays the answer, turning a 412 into a 200.
fn serve(mut client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().expect("a content length"));
    while buf.len() < end + length {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let is_put = head.starts_with("PUT ");
    let mut lines: Vec<&str> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    up.write_all(&buf[end..end + length])?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    if is_put && answer.starts_with(b"HTTP/1.1 412") {
        let end = head_end(&answer).unwrap_or(answer.len());
        let head = String::from_utf8_lossy(&answer[..end]).into_owned();
        let mut lines: Vec<&str> = head
            .trim_end()
            .split("\r\n")
            .skip(1)
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                !l.starts_with("content-length:") && !l.starts_with("connection:")
            })
            .collect();
        lines.insert(0, "HTTP/1.1 200 OK");
        lines.push("ETag: \"ignored-precondition\"");
        lines.push("Content-Length: 0");
        lines.push("Connection: close");
        answer = format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes();
    }
    client.write_all(&answer)?;
    client.flush()
}

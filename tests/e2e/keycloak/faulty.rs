//! A deliberately broken identity provider, for the failure paths only: its
//! discovery is valid, but its token endpoint and keys answer garbage or hang.
//! The happy paths all run against the real Keycloak.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 200 with a body that is not JSON.
    Garbage,
    /// Answers after a minute.
    Slow,
}

pub struct FaultyIdp {
    pub issuer: String,
}

fn answer(mut stream: TcpStream, issuer: &str, fault: Fault) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 16)];
    let _ = reader.read_exact(&mut body);
    let (status, text) = if path.ends_with("/.well-known/openid-configuration") {
        (
            "200 OK",
            serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/certs"),
            })
            .to_string(),
        )
    } else {
        if fault == Fault::Slow {
            thread::sleep(Duration::from_secs(60));
        }
        ("200 OK", "{\"access_token\": [garbage".to_owned())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

impl FaultyIdp {
    /// Serves on a free loopback port until the test process ends.
    pub fn start(fault: Fault) -> FaultyIdp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let issuer = format!("http://127.0.0.1:{port}/realms/faulty");
        let iss = issuer.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let iss = iss.clone();
                thread::spawn(move || answer(stream, &iss, fault));
            }
        });
        FaultyIdp { issuer }
    }
}

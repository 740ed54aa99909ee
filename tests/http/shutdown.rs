//! SIGTERM on the real `berth serve` process: requests in flight finish, the
//! listener closes at once, and the process exits 0 within its shutdown timeout.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::server::Serve;
use crate::support::{enc, ADMIN_PW};

// ---------------------------------------------------------------------------
// SIGTERM on the real process

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_zero_in_bounded_time() {
    let mut srv = Serve::new("registry.test", "berth-ops", ADMIN_PW)
        .env("BERTH_SHUTDOWN_TIMEOUT", "3s")
        .env("RUST_LOG", "info")
        .start();
    let addr: SocketAddr = srv.addr().parse().unwrap();
    let started = Instant::now();
    while srv.get("/readyz").map(|(status, _)| status) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "berth did not become ready:\n{}",
            srv.log()
        );
        assert!(srv.running(), "berth exited:\n{}", srv.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Request A: a password grant whose body arrives slowly, across the SIGTERM.
    let body = format!(
        "grant_type=password&username=admin&password={ADMIN_PW}&client_id=t&service=registry.test&scope={}",
        enc("repository:admin/app:pull")
    );
    let mut a = std::net::TcpStream::connect(addr).unwrap();
    write!(
        a,
        "POST /token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.as_bytes().split_at(10);
    a.write_all(first).unwrap();
    // Request B: headers sent, body never finished; it must not hold up the exit
    // beyond the shutdown timeout.
    let mut b = std::net::TcpStream::connect(addr).unwrap();
    b.write_all(b"POST /token HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\ngrant")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    srv.signal("TERM");
    let term_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // The listener is closed: new connections are refused.
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "berth still accepts connections after SIGTERM"
    );
    // A finishes and gets its token.
    a.write_all(rest).unwrap();
    let mut answer = String::new();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = a.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request did not complete: {answer:?}\n{}",
        srv.log()
    );
    assert!(answer.contains("\"access_token\""), "{answer}");

    // The process exits 0 once B is cut off at the shutdown timeout.
    let status = srv
        .wait_exit(Duration::from_secs(15).saturating_sub(term_at.elapsed()))
        .unwrap_or_else(|| panic!("berth still running 15 s after SIGTERM:\n{}", srv.log()));
    let took = term_at.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", srv.log());
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(12),
        "exit after {took:?} (shutdown timeout 3 s)"
    );
    let log = srv.log();
    assert!(log.contains("shutdown timeout reached"), "{log}");
    drop(b);
}

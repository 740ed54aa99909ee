//! What doctor sees of an HTTP answer (status, Bearer challenge, `Date`, the
//! start of the body), and the host of a URL.

use time::OffsetDateTime;

use super::challenge::{parse_challenge, parse_http_date, Challenge};

/// An HTTP answer, reduced to what doctor looks at.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) challenge: Option<Challenge>,
    pub(super) date: Option<OffsetDateTime>,
    pub(super) body: String,
}

pub(super) async fn fetch(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let resp = req.send().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        msg
    })?;
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let challenge = header(reqwest::header::WWW_AUTHENTICATE).and_then(|h| parse_challenge(&h));
    let date = header(reqwest::header::DATE).and_then(|d| parse_http_date(&d));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Ok(Answer {
        status,
        challenge,
        date,
        body: body.chars().take(64 * 1024).collect(),
    })
}

/// The start of a response body, for messages (never a whole token).
pub(super) fn clip(body: &str) -> String {
    body.chars().take(200).collect()
}

pub(super) fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

pub(super) fn private_ip(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn hosts_and_private_addresses() {
        assert_eq!(host_of("http://127.0.0.1:5001/token"), "127.0.0.1");
        assert_eq!(host_of("https://auth.example/token"), "auth.example");
        assert_eq!(host_of("http://[::1]:80/x"), "::1");
        assert!(private_ip("127.0.0.1") && private_ip("10.1.2.3") && private_ip("::1"));
        assert!(!private_ip("auth.example") && !private_ip("8.8.8.8"));
    }
}

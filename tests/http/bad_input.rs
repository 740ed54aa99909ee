//! Bad input to `/token` gets a 4xx with a JSON `error`, never a 5xx: bad query
//! strings and `Authorization` headers, bad and oversized form bodies, and
//! random requests (a property test).

use serde_json::json;

use crate::support::{enc, refresh_of, Opts, Resp, TestServer, SVC};

/// A default server with alice.
async fn with_alice() -> TestServer {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    s
}

const ALICE: Option<(&str, &str)> = Some(("alice", "wonderland"));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_strings() {
    let s = with_alice().await;
    let alice = ALICE;

    let cases: Vec<(&str, String)> = vec![
        ("five colons", "scope=a:b:c:d:e:f".into()),
        ("bad scope name", "scope=repository:Alice/App:pull".into()),
        ("no actions", "scope=repository:alice/app".into()),
        ("bad percent", "scope=%ZZ%&&==&".into()),
        (
            "invalid utf-8 escape",
            "scope=repository:%FF%FE:pull".into(),
        ),
        (
            "1000 scopes",
            "scope=repository:alice/app:pull&".repeat(1000),
        ),
        (
            "1000 distinct scopes",
            (0..1000)
                .map(|i| format!("scope=repository:a/r{i}:pull&"))
                .collect(),
        ),
        (
            "twice service",
            "service=registry.test&service=other.test".into(),
        ),
        ("unknown service", "service=%00".into()),
    ];
    for (what, q) in &cases {
        s.get(q, alice).await.client_error_json(what);
        s.get(q, None).await.client_error_json(what);
    }
}

/// An empty `scope` asks for nothing, on GET as on POST (docker's POST sends
/// `scope=` at login): a token with no access, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_scope_asks_for_nothing() {
    let s = with_alice().await;
    let alice = ALICE;
    for q in ["scope=", "scope", "scope=%20%20"] {
        let access = s.access(&format!("service={SVC}&{q}"), alice).await;
        assert_eq!(access, json!([]), "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_queries() {
    let s = with_alice().await;
    let alice = ALICE;
    // Long queries, sent raw (an HTTP library refuses URIs this long). Up to the
    // HTTP layer's URI limit (64 KiB) berth answers with its own JSON error.
    let q = format!("service={SVC}&scope={}", "a".repeat(60 * 1024));
    s.get_raw(q.as_bytes())
        .await
        .client_error_json("60 KiB query");
    // Beyond it hyper refuses the request line itself (414/431, empty body, before
    // any berth code runs), as it does raw non-UTF-8 bytes: a 4xx, never a 5xx.
    let r = s.get_raw(b"scope=repository:\xff\xfe/app:pull").await;
    assert!(
        (400..500).contains(&r.status),
        "raw non-UTF-8 query: {}",
        r.status
    );
    for len in [70 * 1024, 200 * 1024, 1024 * 1024] {
        let r = s
            .get_raw(format!("scope={}", "a".repeat(len)).as_bytes())
            .await;
        assert!(
            (400..500).contains(&r.status),
            "{len}-byte query: {}",
            r.status
        );
    }
    // The server is still fine afterwards.
    s.get(&format!("service={SVC}"), alice).await.ok();
}

/// Bad `Authorization` headers and credentials: a 4xx with a JSON `error`,
/// never a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_authorization_headers() {
    let s = with_alice().await;
    let basic = |s: &[u8]| {
        [
            b"Basic ".as_slice(),
            data_encoding::BASE64.encode(s).as_bytes(),
        ]
        .concat()
    };
    let auth_cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid base64", b"Basic !!!not-base64!!!".to_vec()),
        ("invalid utf-8 header", b"Basic \xff\xfe\xfd".to_vec()),
        ("invalid utf-8 credentials", basic(b"al\xffice:pw\xfe")),
        ("no colon", basic(b"alice")),
        ("empty user", basic(b":pw")),
        ("bearer", b"Bearer x".to_vec()),
        ("scheme only", b"Basic".to_vec()),
        ("empty", Vec::new()),
        (
            "long user",
            basic(format!("{}:pw", "a".repeat(300)).as_bytes()),
        ),
        (
            "long password",
            basic(format!("alice:{}", "p".repeat(5000)).as_bytes()),
        ),
        ("sql", basic(b"' OR 1=1 --:x")),
        ("sql in password", basic(b"alice:' OR '1'='1")),
        ("nul", basic(b"ali\0ce:wonderland")),
        ("nul password", basic(b"alice:wonder\0land")),
        ("admin with nul", basic(b"admin\0:adminpw")),
    ];
    for (what, h) in &auth_cases {
        let r = s.get_auth(&format!("service={SVC}"), h).await;
        r.client_error_json(what);
        assert!(r.json().get("token").is_none(), "{what}");
    }
    // A username with SQL metacharacters is simply unknown.
    let r = s
        .get(&format!("service={SVC}"), Some(("' OR 1=1 --", "x")))
        .await;
    r.err(401, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_form_bodies() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    let refresh = refresh_of(
        &s.get(
            &format!("offline_token=true&service={SVC}"),
            Some(("alice", "wonderland")),
        )
        .await,
    );
    let pw = |user: &str, scope: String| -> Vec<u8> {
        format!(
            "grant_type=password&username={}&password=wonderland&client_id=t&service={SVC}&scope={}",
            enc(user),
            enc(&scope)
        )
        .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", Vec::new()),
        ("garbage", b"%%%&&&===".to_vec()),
        ("invalid utf-8", b"grant_type=\xff\xfe&client_id=\xc3&service=\x80".to_vec()),
        ("json body", br#"{"grant_type":"password"}"#.to_vec()),
        ("unknown grant", b"grant_type=implicit&client_id=t&service=registry.test".to_vec()),
        ("grant twice", b"grant_type=password&grant_type=refresh_token&client_id=t".to_vec()),
        ("five colons", pw("alice", "a:b:c:d:e:f".into())),
        ("1000 scopes", pw("alice", "repository:alice/app:pull ".repeat(1000))),
        ("sql user", pw("' OR 1=1 --", String::new())),
        ("nul user", pw("ali\0ce", String::new())),
        ("long user", pw(&"a".repeat(300), String::new())),
        (
            "refresh for another service",
            format!("grant_type=refresh_token&refresh_token={refresh}&client_id=t&service=other.test").into_bytes(),
        ),
        (
            "refresh with password fields",
            b"grant_type=refresh_token&username=alice&password=wonderland&client_id=t&service=registry.test"
                .to_vec(),
        ),
        ("60 KiB", format!("grant_type=password&x={}", "a".repeat(60 * 1024)).into_bytes()),
    ];
    for (what, body) in cases {
        let r = s.post_raw(body).await;
        r.client_error_json(what);
        assert!(r.json().get("token").is_none(), "{what}");
    }
}

/// Forms over the 64 KiB limit: 413 or 400 with a JSON `error` body, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_form_body_is_rejected_with_json() {
    let s = TestServer::start(Opts::default()).await;
    let mut answers: Vec<(String, Resp)> = Vec::new();
    for len in [65 * 1024, 100 * 1024] {
        let body = format!("grant_type=password&x={}", "a".repeat(len));
        answers.push((
            format!("{len}-byte body"),
            s.post_raw(body.into_bytes()).await,
        ));
    }
    let body = format!(
        "grant_type=password&client_id=t&service={SVC}&username=alice&password={}",
        "a".repeat(200 * 1024)
    );
    // With Content-Length, via the client library…
    answers.push((
        "200 KB body (content-length)".into(),
        s.post_raw(body.clone().into_bytes()).await,
    ));
    // …and chunked, without a length up front.
    let mut req = b"POST /token HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
        Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for chunk in body.as_bytes().chunks(16 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    answers.push(("200 KB body (chunked)".into(), s.raw(&req).await));

    // Every case is checked before failing, so one run shows them all.
    let bad: Vec<String> = answers
        .iter()
        .filter(|(_, r)| !((r.status == 413 || r.status == 400) && r.json()["error"].is_string()))
        .map(|(what, r)| format!("{what}: {} {:?}", r.status, r.text()))
        .collect();
    assert!(
        bad.is_empty(),
        "oversized forms must get 413/400 with a JSON `error` body:\n{}",
        bad.join("\n")
    );
    // The server is still fine afterwards.
    s.get_path("/healthz").await.ok();
}

// ---------------------------------------------------------------------------
// Property: random requests never get a 5xx

#[test]
fn random_requests_never_get_a_5xx() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = TestServer::start(Opts::default()).await;
        s.add_user("alice", "wonderland", &[]).await;
        s
    });

    // Query strings built from the characters that matter to the parsers.
    let piece = prop_oneof![
        Just("scope=".to_owned()),
        Just("service=".to_owned()),
        Just("account=".to_owned()),
        Just("offline_token=true".to_owned()),
        Just("service=registry.test".to_owned()),
        Just("repository:".to_owned()),
        Just("registry:catalog:*".to_owned()),
        Just("alice/app:pull,push".to_owned()),
        "[a-z0-9:/,*&=%._\\-+ ]{0,12}",
        "%[0-9A-Fa-f]{2}",
        "\\PC{0,8}",
    ];
    let query = proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat());
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (
            prop_oneof![Just("password"), Just("refresh_token"), Just("implicit"), Just("")],
            "\\PC{0,20}",
            "\\PC{0,20}",
            "[a-z0-9:/,* ]{0,40}",
        )
            .prop_map(|(g, u, p, scope)| {
                format!(
                    "grant_type={g}&username={}&password={}&refresh_token={}&client_id=t&service=registry.test&scope={}",
                    enc(&u),
                    enc(&p),
                    enc(&u),
                    enc(&scope)
                )
                .into_bytes()
            }),
    ];
    let auth = prop_oneof![
        3 => Just(None),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
            Some([b"Basic ".as_slice(), data_encoding::BASE64.encode(&b).as_bytes()].concat())
        }),
        1 => proptest::collection::vec(32u8..=126, 0..40).prop_map(Some),
    ];

    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(query, body, auth), |(q, body, auth)| {
            let (get, post) = rt.block_on(async {
                let url = format!("{}/token?{q}", s.base);
                let mut rb = s.client.get(&url);
                if let Some(a) = &auth {
                    if let Ok(v) = reqwest::header::HeaderValue::from_bytes(a) {
                        rb = rb.header("authorization", v);
                    }
                }
                let get = rb.send().await.map(|r| r.status().as_u16());
                let post = s.post_raw(body.clone()).await;
                (get, post)
            });
            let get = get.map_err(|e| TestCaseError::fail(format!("GET {q:?}: {e}")))?;
            prop_assert!(get < 500, "GET ?{:?} → {}", q, get);
            prop_assert!(
                post.status < 500,
                "POST {:?} → {}",
                String::from_utf8_lossy(&body),
                post.status
            );
            if post.status >= 400 {
                prop_assert!(
                    post.json()["error"].is_string(),
                    "POST error without JSON: {}",
                    post.text()
                );
            }
            Ok(())
        })
        .unwrap();
    drop(s);
}

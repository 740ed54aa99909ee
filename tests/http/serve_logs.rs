//! What the real `berth serve` process logs at debug level: no password,
//! robot secret, access token, refresh token or issued token (nor a hash of
//! one), and one decision line per audit row, carrying the row's request id.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::machine::{
    assert_no_leak, cli, leak_forms, logs, ok, serve_debug_json, shown_once, stop, SVC,
};

/// What a stopped `berth serve` left behind after nine decisions.
struct Served {
    /// Everything it logged.
    logs: String,
    /// The audit rows, as `berth audit --json` prints them.
    rows: Vec<Value>,
    /// Every text form of every secret the requests carried or got back.
    forms: Vec<String>,
    /// How many decisions were made.
    n: usize,
}

/// Starts `berth serve` logging JSON at debug level, makes a user, a robot
/// and an access token with the CLI, asks for tokens with right and wrong
/// secrets (GET with Basic, POST refresh and password grants), waits for the
/// audit rows and stops the server, so every log line is written.
async fn served() -> Served {
    let admin_pw = "Admin-Secret-4711";
    let mut srv = serve_debug_json(admin_pw);
    let db = srv.setting("BERTH_DATABASE").unwrap().to_owned();
    ok(
        cli(&db, &["user", "add", "alice", "--password-stdin"])
            .stdin("Alice-Secret-0815\n")
            .run_async()
            .await,
        "berth user add",
    );
    let robot = shown_once(&ok(
        cli(&db, &["robot", "create", "ci"]).run_async().await,
        "berth robot create",
    ));
    let pat = shown_once(&ok(
        cli(
            &db,
            &[
                "token",
                "create",
                "--user",
                "alice",
                "--limit",
                "repository:team-a/**:pull",
            ],
        )
        .run_async()
        .await,
        "berth token create",
    ));
    let c = reqwest::Client::new();
    let url = srv.realm();
    let mut secrets = vec![
        admin_pw.to_owned(),
        "Alice-Secret-0815".to_owned(),
        "Wrong-Secret-1234".to_owned(),
        robot.clone(),
        pat.clone(),
    ];
    let basic: Vec<(&str, &str, &str)> = vec![
        (
            "alice",
            "Alice-Secret-0815",
            "repository:alice/app:pull,push",
        ),
        ("alice", "Wrong-Secret-1234", "repository:alice/app:pull"),
        ("robot$ci", &robot, "repository:ci/app:push"),
        ("robot$nope", &robot, "repository:ci/app:push"),
        ("alice", &pat, "repository:team-a/app:pull,push"),
        ("admin", &pat, "repository:team-a/app:pull"),
        ("admin", admin_pw, "registry:catalog:*"),
    ];
    for (user, pw, scope) in &basic {
        let r = c
            .get(&url)
            .query(&[
                ("service", SVC),
                ("scope", scope),
                ("offline_token", "true"),
            ])
            .basic_auth(user, Some(pw))
            .send()
            .await
            .unwrap();
        let j: Value = r.json().await.unwrap_or(Value::Null);
        for k in ["token", "refresh_token"] {
            if let Some(t) = j[k].as_str() {
                secrets.push(t.to_owned());
            }
        }
    }
    let refresh = secrets.last().unwrap().clone();
    for (grant, secret) in [
        ("refresh_token", refresh.as_str()),
        ("password", "Wrong-Secret-5678"),
    ] {
        secrets.push(secret.to_owned());
        let r = c
            .post(&url)
            .form(&[
                ("grant_type", grant),
                ("refresh_token", secret),
                ("username", "alice"),
                ("password", secret),
                ("service", SVC),
                ("client_id", "docker"),
                ("scope", "repository:alice/app:pull"),
            ])
            .send()
            .await
            .unwrap();
        let j: Value = r.json().await.unwrap_or(Value::Null);
        if let Some(t) = j["token"].as_str() {
            secrets.push(t.to_owned());
        }
    }
    let n = basic.len() + 2;
    let start = Instant::now();
    let rows = loop {
        let out = ok(
            cli(&db, &["audit", "--json"]).run_async().await,
            "berth audit",
        );
        let rows: Vec<Value> = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if rows.len() >= n || start.elapsed() > Duration::from_secs(2) {
            assert_eq!(rows.len(), n, "audit rows: {rows:#?}");
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop(&mut srv);
    Served {
        logs: logs(&srv),
        rows,
        forms: leak_forms(&secrets),
        n,
    }
}

/// No password, robot secret, access token, refresh token or issued token (nor
/// a hash of one) appears in what `berth serve` logs at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_hold_no_secrets() {
    let Served { logs, forms, .. } = served().await;
    assert_no_leak(&logs, &forms, "berth serve's log");
}

/// Nor in the audit rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_hold_no_secrets() {
    let Served { rows, forms, .. } = served().await;
    assert_no_leak(&format!("{rows:?}"), &forms, "the audit log");
}

/// Every decision's log line carries the request id of its row, and says what
/// the row says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_decision_logs_one_line_matching_its_row() {
    let Served { logs, rows, n, .. } = served().await;
    let decisions: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "berth::decision")
        .collect();
    assert_eq!(decisions.len(), n, "decision log lines:\n{logs}");
    for r in &rows {
        let line = decisions
            .iter()
            .find(|d| d["request_id"] == r["request_id"])
            .unwrap_or_else(|| panic!("no log line for audit row {r}:\n{logs}"));
        for k in [
            "account",
            "outcome",
            "requested",
            "granted",
            "denied",
            "via",
            "kind",
        ] {
            assert_eq!(line[k], r[k], "{k}: log {line} vs row {r}");
        }
    }
}

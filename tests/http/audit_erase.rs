//! `berth audit erase`, run as the real binary on a live server's database:
//! one person's name or address becomes a keyed pseudonym in every row, counts
//! and decisions stay queryable, the erasure is itself recorded (without the
//! name), a second run changes nothing, and an unknown name is a clear refusal.
//! Each test runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`, PostgreSQL.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth::store::{AuditQuery, AuditRecord};

use crate::machine::{cli, on_both_databases, query, server, TestDb};
use crate::support::TestServer;

/// Runs `berth audit …` on the server's database with `keys` as the keys
/// directory; returns success, stdout and stderr.
fn audit_cli(db: &TestDb, keys: &Path, args: &[&str]) -> (bool, String, String) {
    let out = cli(&db.url, &[&["audit"], args].concat())
        .env("BERTH_KEYS_DIR", keys)
        .run();
    (out.success(), out.stdout, out.stderr)
}

async fn all_rows(s: &TestServer) -> Vec<AuditRecord> {
    s.store()
        .query_audit(&AuditQuery {
            limit: 10_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

/// Waits until at least `n` rows are written.
async fn written(s: &TestServer, n: usize) -> Vec<AuditRecord> {
    for _ in 0..100 {
        let rows = all_rows(s).await;
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} audit rows: {:#?}", all_rows(s).await);
}

fn names(r: &AuditRecord) -> [&str; 3] {
    [
        r.account.as_str(),
        r.subject.as_deref().unwrap_or(""),
        r.client.as_str(),
    ]
}

/// A server with decisions written, and the keys directory the CLI uses.
struct Written {
    s: TestServer,
    keys: PathBuf,
    _keys_dir: tempfile::TempDir,
    /// Every row before an erasure.
    before: Vec<AuditRecord>,
}

/// carol: a login and a repeat (folded), a refusal, a wrong password; bob: one.
async fn written_rows(db: &TestDb) -> Written {
    let s = server(db, "audit_fold_window = \"1h\"").await;
    s.add_user("carol", "carol-pw", &[]).await;
    s.add_user("bob", "bob-pw", &[]).await;
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys");
    let login = "service=registry.test&account=carol";
    // carol: a login and a repeat (folded), a refusal, a wrong password; bob: one.
    for _ in 0..2 {
        assert_eq!(s.get(login, Some(("carol", "carol-pw"))).await.status, 200);
    }
    let base = query("carol", &["repository:base/img:pull"]);
    assert_eq!(s.get(&base, Some(("carol", "carol-pw"))).await.status, 200);
    assert_eq!(
        s.get(login, Some(("carol", "wrong-pw-9"))).await.status,
        401
    );
    assert_eq!(
        s.get("service=registry.test&account=bob", Some(("bob", "bob-pw")))
            .await
            .status,
        200
    );
    let before = written(&s, 4).await;
    Written {
        s,
        keys,
        _keys_dir: keys_dir,
        before,
    }
}

/// Unknown names and bad addresses are refused clearly, without a trace.
async fn refusals(db: TestDb) {
    let Written {
        s, keys, before, ..
    } = written_rows(&db).await;
    let (ok, _, err) = audit_cli(&db, &keys, &["erase", "--user", "nobody-here"]);
    assert!(
        !ok && err.contains("no audit row names the account"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let (ok, _, err) = audit_cli(&db, &keys, &["erase", "--address", "not-an-ip"]);
    assert!(!ok && err.contains("not an IP address"), "{err}");
    let (ok, _, _) = audit_cli(&db, &keys, &["erase"]);
    assert!(!ok, "erase needs --user or --address");
    assert_eq!(
        all_rows(&s).await,
        before,
        "a refusal leaves the rows alone"
    );
}

on_both_databases!(refusals => erase_refusals_sqlite, erase_refusals_postgres);

/// [`written_rows`], then `berth audit erase --user carol` and a shutdown
/// (which adds the folded repeat to carol's, now erased, row).
struct Erased {
    w: Written,
    /// What `erase` printed.
    out: String,
    /// carol's pseudonym.
    pseudonym: String,
    /// Every row after the erasure and the shutdown.
    after: Vec<AuditRecord>,
}

async fn carol_erased(db: &TestDb) -> Erased {
    let w = written_rows(db).await;
    let keys = &w.keys;
    let (ok, out, err) = audit_cli(db, keys, &["erase", "--user", "carol"]);
    assert!(ok, "{out}{err}");
    let pseudonym = out
        .split_whitespace()
        .find(|w| w.starts_with("erased:"))
        .unwrap_or_else(|| panic!("no pseudonym in {out}"))
        .to_owned();
    w.s.state.audit.shutdown().await;
    let after = all_rows(&w.s).await;
    Erased {
        w,
        out,
        pseudonym,
        after,
    }
}

/// carol's name becomes a pseudonym in every row; the same decisions, in the
/// same order, with their counts, and the erasure itself, stay; others are
/// untouched; the erasure key is private.
async fn erase_user(db: TestDb) {
    let Erased {
        w,
        out,
        pseudonym,
        after,
    } = carol_erased(&db).await;
    let Written { keys, before, .. } = &w;
    let carol_before: Vec<&AuditRecord> = before.iter().filter(|r| r.account == "carol").collect();
    assert_eq!(carol_before.len(), 3, "{before:#?}");
    assert!(out.contains("3 audit rows pseudonymised"), "{out}");
    assert!(!out.contains("carol"), "{out}");
    assert_eq!(pseudonym.len(), "erased:".len() + 16, "{pseudonym}");
    let mode = std::fs::metadata(keys.join("audit-erasure.secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the erasure key is private");
    for r in &after {
        assert!(!names(r).contains(&"carol"), "carol still readable: {r:?}");
        assert!(!r.error.contains("carol"), "{r:?}");
    }
    let mine: Vec<&AuditRecord> = after.iter().filter(|r| r.account == pseudonym).collect();
    assert_eq!(
        mine.len(),
        4,
        "carol's three rows and the erasure: {after:#?}"
    );
    let erasure = mine.iter().find(|r| r.outcome == "erased").unwrap();
    assert_eq!((erasure.via.as_str(), erasure.repeats), ("cli", 1));
    let decisions: Vec<&&AuditRecord> = mine.iter().filter(|r| r.outcome != "erased").collect();
    // The same decisions, in the same order, under the pseudonym.
    for (old, new) in carol_before.iter().zip(&decisions) {
        assert_eq!(
            (
                &old.request_id,
                &old.outcome,
                &old.granted,
                &old.denied,
                &old.requested
            ),
            (
                &new.request_id,
                &new.outcome,
                &new.granted,
                &new.denied,
                &new.requested
            )
        );
        if old.subject.is_some() {
            assert_eq!(new.subject.as_deref(), Some(pseudonym.as_str()));
        }
    }
    let login_row = decisions
        .iter()
        .find(|r| r.outcome == "issued" && r.requested.is_empty())
        .unwrap();
    assert_eq!(login_row.repeats, 2, "counts survive the erasure");
    let bob: Vec<&AuditRecord> = after.iter().filter(|r| r.account == "bob").collect();
    assert_eq!(bob.len(), 1, "others are untouched");
    assert_eq!(bob[0].subject.as_deref(), Some("bob"));
}

on_both_databases!(erase_user => erase_user_sqlite, erase_user_postgres);

/// Still queryable: by pseudonym, and `--denied` finds the refusals, not the
/// erasure.
async fn still_queryable(db: TestDb) {
    let Erased { w, pseudonym, .. } = carol_erased(&db).await;
    let keys = &w.keys;
    let (ok, out, _) = audit_cli(&db, keys, &["--user", &pseudonym]);
    assert!(ok && out.lines().count() == 4, "{out}");
    assert!(out.contains("×2"), "the folded count is shown: {out}");
    let (ok, out, _) = audit_cli(&db, keys, &["--denied"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    assert!(!out.contains(" erased "), "{out}");
}

on_both_databases!(still_queryable => erase_still_queryable_sqlite, erase_still_queryable_postgres);

/// Idempotent: nothing changes, nothing more is recorded.
async fn idempotent(db: TestDb) {
    let Erased { w, after, .. } = carol_erased(&db).await;
    let (s, keys) = (&w.s, &w.keys);
    let (ok, out, err) = audit_cli(&db, keys, &["erase", "--user", "carol"]);
    assert!(ok && out.contains("already erased"), "{out}{err}");
    assert_eq!(all_rows(s).await, after);
}

on_both_databases!(idempotent => erase_idempotent_sqlite, erase_idempotent_postgres);

/// An address: every row from it, under another pseudonym than carol's.
async fn erase_address(db: TestDb) {
    let Erased {
        w,
        pseudonym,
        after,
        ..
    } = carol_erased(&db).await;
    let (s, keys) = (&w.s, &w.keys);
    // `--vacuum` also rewrites the storage, while the server holds connections.
    let (ok, out, err) = audit_cli(
        &db,
        keys,
        &["erase", "--address", " 127.0.0.1 ", "--vacuum"],
    );
    assert!(ok, "{out}{err}");
    let rows = all_rows(s).await;
    assert!(rows.iter().all(|r| r.client != "127.0.0.1"), "{rows:#?}");
    let from: Vec<&AuditRecord> = rows
        .iter()
        .filter(|r| r.client.starts_with("erased:"))
        .collect();
    assert_eq!(
        from.len(),
        after.len() - 1 + 1,
        "every request's row (not carol's erasure) and the new erasure"
    );
    assert!(from.iter().all(|r| r.client != pseudonym));
    let (ok, out, _) = audit_cli(&db, keys, &["erase", "--address", "127.0.0.1"]);
    assert!(ok && out.contains("already erased"), "{out}");
}

on_both_databases!(erase_address => erase_address_sqlite, erase_address_postgres);

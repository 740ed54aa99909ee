//! Filling a temp SQLite database through berth's own store: users, robots and
//! audit rows, as `berth serve` would have written them.

use std::path::Path;

use berth::authn::Username;
use berth::config::Database;
use berth::store::{AuditRecord, Store};

pub struct Seed<'a> {
    pub users: &'a [(&'a str, &'a [&'a str])],
    pub robots: &'a [(&'a str, &'a [&'a str])],
    pub rows: Vec<AuditRecord>,
}

pub fn seed(db: &Path, seed: Seed<'_>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&Database::Sqlite(db.to_owned())).await.unwrap();
        for (name, groups) in seed.users {
            let name: Username = name.parse().unwrap();
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            store
                .create_user(&name, "$argon2id$not-a-real-hash", &groups, 1)
                .await
                .unwrap();
        }
        for (name, groups) in seed.robots {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            store
                .create_robot(name, &[0u8; 32], &groups, "", None, 1)
                .await
                .unwrap();
        }
        for chunk in seed.rows.chunks(512) {
            store.insert_audit(chunk).await.unwrap();
        }
        store.close().await;
    });
}

/// An audit row with an identity snapshot (`kind` empty: a row without one).
pub fn row(
    at: i64,
    kind: &str,
    subject: &str,
    groups: &[&str],
    requested: &str,
    repeats: i64,
) -> AuditRecord {
    let snapshot = !kind.is_empty();
    AuditRecord {
        at,
        request_id: format!("r{at}"),
        client: "192.0.2.7".into(),
        account: subject.into(),
        kind: kind.into(),
        via: if snapshot { "local" } else { "" }.into(),
        service: "registry".into(),
        requested: requested.into(),
        outcome: "issued".into(),
        subject: snapshot.then(|| subject.to_owned()),
        groups: snapshot.then(|| groups.iter().map(|g| g.to_string()).collect()),
        repeats,
        ..AuditRecord::default()
    }
}

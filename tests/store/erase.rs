//! Erasure on disk: after `erase_audit` and `compact_audit`, an SQLite
//! database file and its write-ahead log no longer hold the erased name.

use berth::store::{AuditRecord, ErasedColumn, Store};

use super::TestDb;

fn bytes_of(path: &std::path::Path) -> Vec<u8> {
    let mut all = std::fs::read(path).unwrap_or_default();
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        all.extend(std::fs::read(std::path::PathBuf::from(p)).unwrap_or_default());
    }
    all
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn sqlite_erasure_leaves_no_trace_on_disk() {
    let t = TestDb::sqlite();
    let path = std::path::PathBuf::from(&t.url);
    let store = Store::open(&t.database()).await.unwrap();
    let name = "zelda-q-erase-me";
    let rows: Vec<AuditRecord> = (0..200)
        .map(|i| AuditRecord {
            at: 1000 + i,
            request_id: format!("r{i}"),
            client: "192.0.2.4".into(),
            account: if i % 2 == 0 { name } else { "other" }.into(),
            subject: (i % 4 == 0).then(|| name.to_owned()),
            groups: (i % 4 == 0).then(Vec::new),
            kind: "user".into(),
            outcome: "issued".into(),
            ..AuditRecord::default()
        })
        .collect();
    store.insert_audit(&rows).await.unwrap();
    assert!(
        holds(&bytes_of(&path), name),
        "the test must see the name first"
    );
    let record = AuditRecord {
        at: 5000,
        request_id: "erasure".into(),
        account: "erased:0123456789abcdef".into(),
        outcome: "erased".into(),
        ..AuditRecord::default()
    };
    let (changed, before) = store
        .erase_audit(
            ErasedColumn::Account,
            name,
            "erased:0123456789abcdef",
            &record,
        )
        .await
        .unwrap();
    assert_eq!((changed, before), (100, 0));
    store.compact_audit().await.unwrap();
    let main = std::fs::read(&path).unwrap();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::fs::read(std::path::PathBuf::from(wal)).unwrap_or_default();
    assert!(
        !holds(&main, name) && !holds(&wal, name),
        "the old values were overwritten: in the file {}, in the log {} ({} bytes)",
        holds(&main, name),
        holds(&wal, name),
        wal.len()
    );
    let again = store
        .erase_audit(
            ErasedColumn::Account,
            name,
            "erased:0123456789abcdef",
            &record,
        )
        .await
        .unwrap();
    assert_eq!(again, (0, 101), "idempotent: nothing left to change");
    store.close().await;
}

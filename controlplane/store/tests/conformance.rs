//! The behaviour every store backend must have, run against SQLite and against a real etcd member.
//!
//! Cases use a key prefix of their own and assert orderings rather than exact revisions, so that the etcd
//! cases can share one member while running in parallel.

use std::sync::Arc;
use std::time::Duration;

use basalt_store::{EtcdConfig, EtcdStore, EventKind, ListRequest, SqliteStore, Store, StoreError};
use basalt_testsupport::EtcdCluster;

type S = Arc<dyn Store>;

fn sqlite() -> (S, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    (Arc::new(store), dir)
}

async fn etcd(cluster: &EtcdCluster) -> S {
    let config = EtcdConfig {
        endpoints: cluster.endpoints(),
        ..Default::default()
    };
    Arc::new(EtcdStore::connect(&config).await.expect("connect to etcd"))
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _dir) = super::sqlite();
                    super::$case(store, concat!("/t/sqlite/", stringify!($case), "/")).await;
                }
            )*
        }
        /// Every case against one etcd member at once, each under its own prefix.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn on_etcd() {
            let cluster = EtcdCluster::start(1).expect("start etcd");
            let mut cases = Vec::new();
            $(
                let store = etcd(&cluster).await;
                cases.push((
                    stringify!($case),
                    tokio::spawn(async move {
                        $case(store, concat!("/t/etcd/", stringify!($case), "/")).await
                    }),
                ));
            )*
            let mut failed = Vec::new();
            for (name, case) in cases {
                if case.await.is_err() {
                    failed.push(name);
                }
            }
            assert!(failed.is_empty(), "failed on etcd: {failed:?}");
        }
    };
}

cases!(
    create_then_get,
    update_compares_revisions,
    delete_compares_revisions,
    list_pages_share_one_revision,
    list_at_a_past_revision,
    watch_replays_then_follows,
    watch_sees_only_its_prefix,
    future_revisions_are_refused,
    concurrent_writers,
);

async fn create_then_get(s: S, p: &str) {
    let key = format!("{p}a");
    let kv = s.create(&key, b"one".to_vec()).await.unwrap();
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert!(kv.mod_revision > 0);
    let got = s.get(&key).await.unwrap().expect("created key is readable");
    assert_eq!(got, kv);
    assert!(matches!(
        s.create(&key, b"two".to_vec()).await,
        Err(StoreError::AlreadyExists(k)) if k == key
    ));
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, b"one");
    assert!(s.get(&format!("{p}missing")).await.unwrap().is_none());
    assert!(s.current_revision().await.unwrap() >= kv.mod_revision);
}

async fn update_compares_revisions(s: S, p: &str) {
    let key = format!("{p}a");
    let v1 = s.create(&key, b"1".to_vec()).await.unwrap();
    let v2 = s
        .update(&key, b"2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    assert!(v2.mod_revision > v1.mod_revision);
    assert_eq!(v2.create_revision, v1.create_revision);
    match s.update(&key, b"3".to_vec(), v1.mod_revision).await {
        Err(StoreError::Conflict {
            current, expected, ..
        }) => {
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(current.value, b"2");
            assert_eq!(current.mod_revision, v2.mod_revision);
        }
        other => panic!("a stale update must conflict, got {other:?}"),
    }
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, b"2");
    assert!(matches!(
        s.update(&format!("{p}missing"), b"x".to_vec(), 1).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn delete_compares_revisions(s: S, p: &str) {
    let key = format!("{p}a");
    let v1 = s.create(&key, b"1".to_vec()).await.unwrap();
    let v2 = s
        .update(&key, b"2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    assert!(matches!(
        s.delete(&key, Some(v1.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));
    let gone = s.delete(&key, Some(v2.mod_revision)).await.unwrap();
    assert_eq!(gone.value, b"2");
    assert!(
        gone.mod_revision > v2.mod_revision,
        "the deletion has its own revision"
    );
    assert!(s.get(&key).await.unwrap().is_none());
    assert!(matches!(
        s.delete(&key, None).await,
        Err(StoreError::NotFound(_))
    ));
    let again = s.create(&key, b"new".to_vec()).await.unwrap();
    assert!(
        again.create_revision > gone.mod_revision,
        "a recreated key starts a new incarnation"
    );
    let unconditional = s.delete(&key, None).await.unwrap();
    assert_eq!(unconditional.value, b"new");
}

async fn list_pages_share_one_revision(s: S, p: &str) {
    for i in 0..25 {
        s.create(&format!("{p}k{i:02}"), format!("{i}").into_bytes())
            .await
            .unwrap();
    }
    // A key just past the prefix must not be listed.
    let outside = format!("{}x", p.trim_end_matches('/'));
    s.create(&outside, b"outside".to_vec()).await.unwrap();

    let mut request = ListRequest::prefix(p);
    request.limit = Some(10);
    let first = s.list(request.clone()).await.unwrap();
    assert_eq!(first.kvs.len(), 10);
    assert_eq!(first.remaining, 15);
    assert_eq!(first.kvs[0].key, format!("{p}k00"));
    // A write between pages must not show up in the later pages, read at the first page's revision.
    s.create(&format!("{p}k05a"), b"late".to_vec())
        .await
        .unwrap();
    let mut seen: Vec<String> = first.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut last = first;
    while last.remaining > 0 {
        let mut next = request.clone();
        next.start = format!("{}\u{0}", last.kvs.last().unwrap().key);
        next.revision = Some(last.revision);
        let page = s.list(next).await.unwrap();
        assert_eq!(page.revision, last.revision);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        last = page;
    }
    let expected: Vec<String> = (0..25).map(|i| format!("{p}k{i:02}")).collect();
    assert_eq!(seen, expected);
    let all = s.list(ListRequest::prefix(p)).await.unwrap();
    assert_eq!(all.kvs.len(), 26, "the late key is there now");
    assert_eq!(all.remaining, 0);
}

async fn list_at_a_past_revision(s: S, p: &str) {
    let a = s.create(&format!("{p}a"), b"a1".to_vec()).await.unwrap();
    let b = s.create(&format!("{p}b"), b"b1".to_vec()).await.unwrap();
    let before = b.mod_revision;
    s.update(&format!("{p}a"), b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    s.delete(&format!("{p}b"), None).await.unwrap();
    s.create(&format!("{p}c"), b"c1".to_vec()).await.unwrap();

    let mut then = ListRequest::prefix(p);
    then.revision = Some(before);
    let old = s.list(then).await.unwrap();
    let values: Vec<(&str, &[u8])> = old
        .kvs
        .iter()
        .map(|kv| (kv.key.rsplit('/').next().unwrap(), kv.value.as_slice()))
        .collect();
    assert_eq!(values, vec![("a", &b"a1"[..]), ("b", &b"b1"[..])]);
    let now = s.list(ListRequest::prefix(p)).await.unwrap();
    let values: Vec<(&str, &[u8])> = now
        .kvs
        .iter()
        .map(|kv| (kv.key.rsplit('/').next().unwrap(), kv.value.as_slice()))
        .collect();
    assert_eq!(values, vec![("a", &b"a2"[..]), ("c", &b"c1"[..])]);
}

async fn next_events(w: &mut basalt_store::Watch, n: usize) -> Vec<basalt_store::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("events arrive")
            .expect("the watch is open")
            .expect("no watch error");
        out.extend(batch);
    }
    out
}

async fn watch_replays_then_follows(s: S, p: &str) {
    let start = s
        .create(&format!("{p}before"), b"x".to_vec())
        .await
        .unwrap()
        .mod_revision;
    let a = s.create(&format!("{p}a"), b"1".to_vec()).await.unwrap();
    let a2 = s
        .update(&format!("{p}a"), b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    let del = s.delete(&format!("{p}a"), None).await.unwrap();

    let mut w = s.watch(p, start).await.unwrap();
    let past = next_events(&mut w, 3).await;
    assert_eq!(
        past.iter()
            .map(|e| (e.kind, e.revision()))
            .collect::<Vec<_>>(),
        vec![
            (EventKind::Put, a.mod_revision),
            (EventKind::Put, a2.mod_revision),
            (EventKind::Delete, del.mod_revision)
        ]
    );
    assert!(past[0].is_create() && past[0].prev.is_none());
    assert_eq!(past[1].prev.as_ref().unwrap().value, b"1");
    assert_eq!(past[2].kv.value, b"2", "a deletion carries the last value");

    let live = s.create(&format!("{p}b"), b"live".to_vec()).await.unwrap();
    let next = next_events(&mut w, 1).await;
    assert_eq!(next[0].kv.key, format!("{p}b"));
    assert_eq!(next[0].revision(), live.mod_revision);
    assert_eq!(w.last_revision(), live.mod_revision);
}

async fn watch_sees_only_its_prefix(s: S, p: &str) {
    let now = s.current_revision().await.unwrap();
    let mut w = s.watch(&format!("{p}mine/"), now).await.unwrap();
    s.create(&format!("{p}other/x"), b"no".to_vec())
        .await
        .unwrap();
    s.create(&format!("{p}mine-not/x"), b"no".to_vec())
        .await
        .unwrap();
    let mine = s
        .create(&format!("{p}mine/x"), b"yes".to_vec())
        .await
        .unwrap();
    let got = next_events(&mut w, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kv.key, mine.key);
}

async fn compaction_forgets_the_past_only(s: S, p: &str) {
    let a = s.create(&format!("{p}a"), b"1".to_vec()).await.unwrap();
    let old = a.mod_revision;
    let a2 = s
        .update(&format!("{p}a"), b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    s.create(&format!("{p}gone"), b"x".to_vec()).await.unwrap();
    s.delete(&format!("{p}gone"), None).await.unwrap();
    let horizon = s
        .create(&format!("{p}b"), b"b".to_vec())
        .await
        .unwrap()
        .mod_revision;
    s.compact(horizon).await.unwrap();
    assert!(s.compacted_revision().await.unwrap() >= horizon);

    let mut past = ListRequest::prefix(p);
    past.revision = Some(old);
    assert!(matches!(
        s.list(past).await,
        Err(StoreError::Compacted { .. })
    ));
    match s.watch(p, old).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("a watch from a compacted revision must fail as Compacted, got {e}"),
        Ok(mut w) => {
            let first = tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .unwrap();
            assert!(
                matches!(first, Some(Err(StoreError::Compacted { .. }))),
                "a watch from a compacted revision must end as Compacted, got {first:?}"
            );
        }
    }

    let mut at = ListRequest::prefix(p);
    at.revision = Some(horizon);
    let kept = s.list(at).await.unwrap();
    let keys: Vec<&str> = kept
        .kvs
        .iter()
        .map(|kv| kv.key.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(keys, vec!["a", "b"]);
    assert_eq!(kept.kvs[0].mod_revision, a2.mod_revision);
    // Compacting to where it already is changes nothing.
    s.compact(horizon).await.unwrap();
    let after = s.create(&format!("{p}c"), b"c".to_vec()).await.unwrap();
    let mut w = s.watch(p, horizon).await.unwrap();
    assert_eq!(
        next_events(&mut w, 1).await[0].revision(),
        after.mod_revision
    );
}

async fn future_revisions_are_refused(s: S, p: &str) {
    s.create(&format!("{p}a"), b"1".to_vec()).await.unwrap();
    let now = s.current_revision().await.unwrap();
    let mut future = ListRequest::prefix(p);
    future.revision = Some(now + 1_000_000);
    assert!(matches!(
        s.list(future).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

async fn concurrent_writers(s: S, p: &str) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        let key = format!("{p}k{i:03}");
        tasks.push(tokio::spawn(async move {
            s.create(&key, vec![b'x'; 100]).await
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap().unwrap().mod_revision);
    }
    revisions.sort();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        200,
        "every write has a revision of its own"
    );

    // Many writers racing on one key from the same revision: exactly one wins.
    let base = s
        .create(&format!("{p}contended"), b"0".to_vec())
        .await
        .unwrap();
    let mut racers = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        let key = base.key.clone();
        racers.push(tokio::spawn(async move {
            s.update(&key, format!("{i}").into_bytes(), base.mod_revision)
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
}

// Compaction is cluster-wide, so its etcd case has a member of its own: the shared one serves cases that read
// at past revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_compaction_forgets_the_past_only() {
    let (store, _dir) = sqlite();
    compaction_forgets_the_past_only(store, "/t/compaction/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_forgets_the_past_only() {
    let cluster = EtcdCluster::start(1).unwrap();
    compaction_forgets_the_past_only(etcd(&cluster).await, "/t/compaction/").await;
}

#[tokio::test]
async fn sqlite_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (rev, compacted) = {
        let s = SqliteStore::open(&path).unwrap();
        let a = s.create("/r/a", b"1".to_vec()).await.unwrap();
        s.update("/r/a", b"2".to_vec(), a.mod_revision)
            .await
            .unwrap();
        let b = s.create("/r/b", b"b".to_vec()).await.unwrap();
        s.compact(b.mod_revision).await.unwrap();
        s.delete("/r/b", None).await.unwrap();
        (s.current_revision().await.unwrap(), b.mod_revision)
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(s.compacted_revision().await.unwrap(), compacted);
    assert_eq!(s.get("/r/a").await.unwrap().unwrap().value, b"2");
    assert!(s.get("/r/b").await.unwrap().is_none());
    let next = s.create("/r/c", b"c".to_vec()).await.unwrap();
    assert_eq!(
        next.mod_revision,
        rev + 1,
        "revisions continue where they stopped"
    );
}

/// A watcher that stops reading is closed once it is far behind, at the last revision it was handed, and
/// a watch from there carries on without a gap; a watcher of another prefix, and one that reads, are not
/// disturbed. (The hub shares each committed batch between its watchers; this is what it must keep.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_lagging_watcher_is_closed_and_resumes_where_it_was() {
    let (s, _dir) = sqlite();
    let start = s.current_revision().await.unwrap();
    let mut stalled = s.watch("/lag/a/", start).await.unwrap();
    let mut other = s.watch("/lag/b/", start).await.unwrap();
    let writes = 1100;
    let mut last = start;
    for i in 0..writes {
        last = s
            .create(&format!("/lag/a/{i:04}"), b"x".to_vec())
            .await
            .unwrap()
            .mod_revision;
    }
    let b = s.create("/lag/b/x", b"y".to_vec()).await.unwrap();
    let mut seen = Vec::new();
    let at = loop {
        match stalled.next().await.expect("the watch ends with an error") {
            Ok(batch) => seen.extend(batch.into_iter().map(|e| e.kv.key)),
            Err(StoreError::WatchLagged(at)) => break at,
            Err(e) => panic!("unexpected watch error: {e}"),
        }
    };
    assert!(
        seen.len() < writes,
        "closed before the end: saw {}",
        seen.len()
    );
    assert_eq!(at, stalled.last_revision());
    let mut resumed = s.watch("/lag/a/", at).await.unwrap();
    seen.extend(
        next_events(&mut resumed, writes - seen.len())
            .await
            .into_iter()
            .map(|e| e.kv.key),
    );
    let expected: Vec<String> = (0..writes).map(|i| format!("/lag/a/{i:04}")).collect();
    assert_eq!(seen, expected, "every write once, in order");
    assert_eq!(resumed.last_revision(), last);
    let got = next_events(&mut other, 1).await;
    assert_eq!((got.len(), got[0].revision()), (1, b.mod_revision));
}

//! The event log's store, on SQLite and on a real PostgreSQL (TEST_DATABASE_URL).

mod common;

use livehub::store::{Appended, NewEvent, OfflineMark, PRUNE_STEP, Store};

fn event(name: &str, rooms: &[&str]) -> NewEvent {
    NewEvent {
        event: name.into(),
        payload: format!(r#"{{"type":"{name}"}}"#),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        except: Vec::new(),
        idempotency_key: None,
        created_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

fn keyed(name: &str, rooms: &[&str], key: &str) -> NewEvent {
    NewEvent {
        idempotency_key: Some(key.into()),
        ..event(name, rooms)
    }
}

async fn append(store: &Store, batch: &[NewEvent]) -> Vec<Appended> {
    store.append(batch, 0).await.expect("append")
}

fn seqs(appended: &[Appended]) -> Vec<i64> {
    appended
        .iter()
        .map(|a| match a {
            Appended::New { seq, .. } | Appended::Duplicate { seq, .. } => *seq,
        })
        .collect()
}

/// Runs `body` on SQLite and, when configured, on PostgreSQL.
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        #[tokio::test]
        async fn $name() {
            let (sqlite, _dir) = common::sqlite().await;
            ($body)(sqlite).await;
            if let Some(pg) = common::postgres(stringify!($name)).await {
                ($body)(pg).await;
            }
        }
    };
}

on_both!(
    appends_get_gapless_increasing_seqs_and_their_payload,
    |store: Store| async move {
        let meta = store.log_meta().await.unwrap();
        assert_eq!(meta.last_seq, 0);
        assert_eq!(meta.epoch.len(), 8);
        let first = append(
            &store,
            &[event("a", &["order:1"]), event("b", &["order:2"])],
        )
        .await;
        let second = append(&store, &[event("c", &["order:1", "branch:b"])]).await;
        assert_eq!(seqs(&first), vec![1, 2]);
        assert_eq!(seqs(&second), vec![3]);
        assert_eq!(store.log_meta().await.unwrap().last_seq, 3);
        let all = store.read_after(0, 100).await.unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[2].rooms, vec!["order:1", "branch:b"]);
        assert_eq!(all[2].payload, r#"{"type":"c"}"#, "stored as given");
    }
);

on_both!(
    reads_by_room_in_order_once_within_bounds,
    |store: Store| async move {
        append(
            &store,
            &[
                event("e1", &["order:1"]),
                event("e2", &["order:2"]),
                event("e3", &["order:1", "order:2"]),
                event("e4", &["branch:x"]),
                event("e5", &["order:1"]),
            ],
        )
        .await;
        let rooms = |rs: &[&str]| rs.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let got = store
            .read_rooms(&rooms(&["order:1", "order:2"]), 0, i64::MAX, 100)
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 5],
            "e3 once"
        );
        let after = store
            .read_rooms(&rooms(&["order:1"]), 1, i64::MAX, 100)
            .await
            .unwrap();
        assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 5]);
        let upto = store
            .read_rooms(&rooms(&["order:1"]), 0, 3, 100)
            .await
            .unwrap();
        assert_eq!(upto.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3]);
        let limited = store
            .read_rooms(&rooms(&["order:1", "order:2"]), 0, i64::MAX, 2)
            .await
            .unwrap();
        assert_eq!(
            limited.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(
            store
                .read_rooms(&rooms(&["nobody:1"]), 0, i64::MAX, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .read_rooms(&[], 0, i64::MAX, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .count_rooms(&rooms(&["order:1", "order:2"]), 0, 100)
                .await
                .unwrap(),
            4
        );
        assert_eq!(
            store
                .count_rooms(&rooms(&["order:1", "order:2"]), 0, 2)
                .await
                .unwrap(),
            2,
            "capped"
        );
    }
);

/// Appends to users' rooms and others, and reads back each user room's last
/// event, as a start does to know which users have nothing queued.
async fn users_last_events(store: &Store) -> Vec<(String, i64)> {
    append(
        store,
        &[
            event("a", &["user:42"]),
            event("b", &["branch:1", "user:7"]),
            event("c", &["user:42"]),
            event("d", &["dm:u1:u2", "order:user:9"]),
        ],
    )
    .await;
    let mut highs = store.user_room_highs().await.unwrap();
    highs.sort();
    highs
}

fn each_users_last() -> Vec<(String, i64)> {
    vec![("user:42".into(), 3), ("user:7".into(), 2)]
}

on_both!(
    each_users_room_is_found_with_its_last_event,
    |store: Store| async move {
        assert_eq!(users_last_events(&store).await, each_users_last());
    }
);

/// Under a linguistic collation `user:42` does not sort between `user:` and
/// `user;`: the users' rooms must be found in byte order whatever the
/// database's collation, or every user counts as having nothing queued.
#[tokio::test]
async fn each_users_room_is_found_under_a_linguistic_collation() {
    let Some((store, db)) = common::postgres_collated("users_collated", "en-US").await else {
        return;
    };
    let highs = users_last_events(&store).await;
    common::drop_database(store, db).await;
    assert_eq!(highs, each_users_last());
}

on_both!(
    idempotency_keys_return_the_first_receipt,
    |store: Store| async move {
        let first = append(&store, &[keyed("a", &["order:1"], "k1")]).await;
        assert!(matches!(first[0], Appended::New { seq: 1, .. }));
        // A retry, and a duplicate inside one batch, store nothing new.
        let retry = append(
            &store,
            &[
                keyed("a", &["order:9"], "k1"),
                event("b", &["order:1"]),
                keyed("c", &["x:1"], "k2"),
                keyed("c", &["x:1"], "k2"),
            ],
        )
        .await;
        assert_eq!(
            retry,
            vec![
                Appended::Duplicate {
                    seq: 1,
                    rooms: vec!["order:1".into()]
                },
                Appended::New { seq: 2 },
                Appended::New { seq: 3 },
                Appended::Duplicate {
                    seq: 3,
                    rooms: vec!["x:1".into()]
                },
            ]
        );
        assert_eq!(
            store.log_meta().await.unwrap().last_seq,
            3,
            "duplicates take no offset"
        );
        // Once the key is older than the window, it is fresh again.
        let later = store
            .append(&[keyed("a", &["order:1"], "k1")], i64::MAX)
            .await
            .unwrap();
        assert!(matches!(later[0], Appended::New { seq: 4, .. }));
    }
);

on_both!(
    pruning_removes_old_events_and_records_how_far,
    |store: Store| async move {
        let old = NewEvent {
            created_at_ms: 1_000,
            ..event("old", &["order:1"])
        };
        let old_keyed = NewEvent {
            created_at_ms: 1_000,
            ..keyed("old", &["order:1"], "old-key")
        };
        append(&store, &[old.clone(), old_keyed, old]).await;
        append(&store, &[event("new", &["order:1"])]).await;
        let through = store.prune(2_000, 2_000).await.unwrap();
        assert_eq!(through, 3);
        assert_eq!(store.log_meta().await.unwrap().pruned_through, 3);
        let left = store
            .read_rooms(&["order:1".into()], 0, i64::MAX, 10)
            .await
            .unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
        // The pruned idempotency key no longer blocks a new emit.
        let again = append(&store, &[keyed("again", &["order:1"], "old-key")]).await;
        assert!(matches!(again[0], Appended::New { seq: 5, .. }));
        // Pruning again with nothing old is a no-op that keeps the mark.
        assert_eq!(store.prune(2_000, 2_000).await.unwrap(), 3);
    }
);

on_both!(
    a_backlog_over_a_pruning_step_is_pruned_through,
    |store: Store| async move {
        let backlog = PRUNE_STEP * 2 + 7;
        let old: Vec<NewEvent> = (0..backlog)
            .map(|i| NewEvent {
                created_at_ms: 1_000,
                ..keyed("old", &["order:1", "branch:b"], &format!("k{i}"))
            })
            .collect();
        append(&store, &old).await;
        append(&store, &[event("new", &["order:1"])]).await;
        let through = store.prune(2_000, 2_000).await.unwrap();
        assert_eq!(through, backlog as i64);
        let left = store.read_after(0, 10).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![backlog as i64 + 1]
        );
        // Every old key is gone, not only the first step's.
        let again = append(
            &store,
            &[keyed("again", &["order:1"], &format!("k{}", backlog - 1))],
        )
        .await;
        assert!(matches!(again[0], Appended::New { .. }));
    }
);

on_both!(offline_marks_survive_reading, |store: Store| async move {
    assert_eq!(store.offline_mark("u1").await.unwrap(), OfflineMark::Never);
    let mark = |user: &str, m: OfflineMark| [(user.to_string(), m)];
    store
        .set_offline_marks(&mark("u1", OfflineMark::Offline(7)), 1)
        .await
        .unwrap();
    store
        .set_offline_marks(&mark("u1", OfflineMark::Offline(9)), 2)
        .await
        .unwrap();
    assert_eq!(
        store.offline_mark("u1").await.unwrap(),
        OfflineMark::Offline(9)
    );
    assert_eq!(
        store.offline_mark("u1").await.unwrap(),
        OfflineMark::Offline(9),
        "reading does not consume the queue: only a completed replay does"
    );
    store
        .set_offline_marks(&mark("u1", OfflineMark::Online(12)), 3)
        .await
        .unwrap();
    assert_eq!(
        store.offline_mark("u1").await.unwrap(),
        OfflineMark::Online(12)
    );
    assert_eq!(store.offline_mark("u2").await.unwrap(), OfflineMark::Never);
});

on_both!(
    many_marks_are_written_at_once_the_last_of_each_user_winning,
    |store: Store| async move {
        // Thousands of users, one of them twice, one `Never`.
        let mut marks: Vec<(String, OfflineMark)> = (0..2500)
            .map(|i| (format!("m{i}"), OfflineMark::Offline(i)))
            .collect();
        marks.push(("m7".into(), OfflineMark::Online(70)));
        marks.push(("m8".into(), OfflineMark::Never));
        // Ids are the tokens' `sub`: anything a string can hold.
        let odd = "o'brien \"x\" \\ ü ,]";
        marks.push((odd.into(), OfflineMark::Offline(5)));
        store.set_offline_marks(&marks, 1).await.unwrap();
        assert_eq!(
            store.offline_mark(odd).await.unwrap(),
            OfflineMark::Offline(5)
        );
        assert_eq!(
            store.offline_mark("m0").await.unwrap(),
            OfflineMark::Offline(0)
        );
        assert_eq!(
            store.offline_mark("m2499").await.unwrap(),
            OfflineMark::Offline(2499)
        );
        assert_eq!(
            store.offline_mark("m7").await.unwrap(),
            OfflineMark::Online(70)
        );
        assert_eq!(
            store.offline_mark("m8").await.unwrap(),
            OfflineMark::Offline(8),
            "`Never` writes nothing: the stored mark stays"
        );
    }
);

#[tokio::test]
async fn sqlite_log_survives_reopening_with_its_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let url =
        livehub::config::DatabaseUrl::Sqlite(format!("sqlite://{}/log.db", dir.path().display()));
    let store = Store::connect(&url).await.unwrap();
    append(&store, &[event("a", &["order:1"])]).await;
    let epoch = store.log_meta().await.unwrap().epoch;
    store.close().await;
    let reopened = Store::connect(&url).await.unwrap();
    let meta = reopened.log_meta().await.unwrap();
    assert_eq!((meta.epoch, meta.last_seq), (epoch, 1));
}

/// A burst grows SQLite's WAL file; once the background checkpoint has copied
/// it into the database, the file is cut back instead of keeping its size.
#[tokio::test]
async fn sqlite_wal_file_is_cut_back_after_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let url =
        livehub::config::DatabaseUrl::Sqlite(format!("sqlite://{}/log.db", dir.path().display()));
    let store = Store::connect(&url).await.unwrap();
    let wal = dir.path().join("log.db-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let pad = "x".repeat(2000);
    let batch: Vec<NewEvent> = (0..50)
        .map(|_| NewEvent {
            payload: format!(r#"{{"pad":"{pad}"}}"#),
            ..event("burst", &["order:1"])
        })
        .collect();
    // 12 MB of events in 120 commits, faster than the once-a-second checkpoint.
    for _ in 0..120 {
        store.append(&batch, 0).await.unwrap();
    }
    let peak = wal_size();
    assert!(peak > 8 << 20, "the burst grew the WAL to {peak} bytes");
    let limit = livehub::store::WAL_SIZE_LIMIT;
    let mut now = peak;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // A writer restarts a checkpointed WAL from its start: that is when the file is cut.
        append(&store, &[event("after", &["order:2"])]).await;
        now = wal_size();
        if now <= limit {
            break;
        }
    }
    assert!(
        now <= limit,
        "the WAL went from {peak} to {now} bytes, over the {limit}-byte limit"
    );
}

/// Two appenders on one PostgreSQL log (two nodes): offsets stay unique and
/// gapless, and a reader never sees a later offset before an earlier one.
#[tokio::test]
async fn postgres_concurrent_appenders_commit_in_offset_order() {
    let Some(a) = common::postgres("concurrent").await else {
        return;
    };
    let url = std::env::var("TEST_DATABASE_URL").unwrap();
    let schema = format!("t_concurrent_{}", std::process::id());
    let b = Store::connect_postgres_schema(&url, &schema).await.unwrap();
    let writer = |store: Store, tag: &'static str| {
        tokio::spawn(async move {
            for i in 0..40 {
                let batch: Vec<NewEvent> = (0..5).map(|_| event(tag, &["order:1"])).collect();
                let _ = i;
                append(&store, &batch).await;
            }
        })
    };
    let reader_store = a.clone();
    let reader = tokio::spawn(async move {
        // Every read must be a gapless prefix 1..=n.
        for _ in 0..200 {
            let seen = reader_store.read_after(0, 10_000).await.unwrap();
            for (i, e) in seen.iter().enumerate() {
                assert_eq!(e.seq, i as i64 + 1, "gap or reordering visible to a reader");
            }
            tokio::task::yield_now().await;
        }
    });
    let (wa, wb) = (writer(a.clone(), "a"), writer(b, "b"));
    wa.await.unwrap();
    wb.await.unwrap();
    reader.await.unwrap();
    let all = a.read_after(0, 10_000).await.unwrap();
    assert_eq!(all.len(), 400);
    assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1));
}

/// The SQLite store appends in one round trip on a head it remembers; if
/// something else appended meanwhile, it must notice and stay gapless.
#[tokio::test]
async fn sqlite_append_survives_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let url =
        livehub::config::DatabaseUrl::Sqlite(format!("sqlite://{}/log.db", dir.path().display()));
    let first = Store::connect(&url).await.unwrap();
    let second = Store::connect(&url).await.unwrap();
    assert_eq!(
        seqs(&append(&first, &[event("a", &["order:1"])]).await),
        vec![1]
    );
    assert_eq!(
        seqs(&append(&second, &[event("b", &["order:1"])]).await),
        vec![2]
    );
    // `first` still believes the head is 1.
    assert_eq!(
        seqs(
            &append(
                &first,
                &[event("c", &["order:1"]), event("d", &["order:2"])]
            )
            .await
        ),
        vec![3, 4]
    );
    let all = first.read_after(0, 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|e| (e.seq, e.event.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    );
    assert_eq!(all[3].rooms, vec!["order:2"]);
    // Quotes in payloads survive the one-round-trip path.
    let quoted = NewEvent {
        payload: r#"{"text":"it's"}"#.into(),
        ..event("q", &["order:1"])
    };
    assert_eq!(seqs(&append(&first, &[quoted]).await), vec![5]);
    assert_eq!(
        first.read_after(4, 1).await.unwrap()[0].payload,
        r#"{"text":"it's"}"#
    );
}

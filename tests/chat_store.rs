//! Chat storage on SQLite and on a real PostgreSQL (TEST_DATABASE_URL):
//! idempotent clientId, history pages, read receipts, full-text and blind-index
//! search, and encryption at rest checked by reading the table directly.

mod common;

use std::sync::Arc;

use livehub::auth::Claims;
use livehub::chat::Chat;
use livehub::hub::{BoxFuture, Census, Fabric, Hub, HubOptions, LoggedEvent, SendOutcome};
use livehub::store::{NewMessage, SearchQuery, Store};
use serde_json::{Value, json};
use socketioxide::socket::Sid;

/// A hub with no sockets behind it: chat's emits are logged and go nowhere.
struct NoSockets;

impl Fabric for NoSockets {
    fn deliver(&self, _: &LoggedEvent) -> usize {
        0
    }
    fn force_reconnect(&self, _: Sid) {}
    fn send(&self, _: Sid, _: &str, _: &serde_json::value::RawValue) -> SendOutcome {
        SendOutcome::Gone
    }
    fn disconnect(&self, _: Sid) {}
    fn join(&self, _: Sid, _: &[String]) {}
    fn leave(&self, _: Sid, _: &str) {}
    fn rooms_of(&self, _: Sid) -> Vec<String> {
        Vec::new()
    }
    fn signal(&self, _: &[String], _: &[String], _: &str, _: &serde_json::value::RawValue) {}
    fn disconnect_room(&self, _: String) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn census(&self) -> Census {
        Census::default()
    }
}

async fn chat_service(store: &Store, key: Option<[u8; 32]>) -> Chat {
    let options = HubOptions {
        replay_limit: 1000,
        retention: std::time::Duration::from_secs(3600),
        node: "test".into(),
        max_payload_bytes: 64 * 1024,
    };
    let (hub, _tasks) = Hub::start(Some(store.clone()), Arc::new(NoSockets), options)
        .await
        .unwrap();
    Chat::new(store.clone(), hub, key.as_ref())
}

fn user(sub: &str) -> Claims {
    Claims::from_json(json!({ "sub": sub, "exp": u64::MAX, "name": format!("User {sub}") }))
        .unwrap()
}

fn data(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn message(room: &str, content: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        room: room.into(),
        sender_id: "ann".into(),
        sender_name: Some("Ann".into()),
        content: content.into(),
        encrypted: false,
        message_type: "text".into(),
        client_id: client_id.map(String::from),
        created_at_ms: 1_700_000_000_000,
        search_text: Some(content.into()),
        tokens: Vec::new(),
    }
}

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

on_both!(client_id_stores_one_message, |store: Store| async move {
    let (a, created_a) = store
        .insert_message(&message("order:1", "hello", Some("c1")))
        .await
        .unwrap();
    let (b, created_b) = store
        .insert_message(&message("order:1", "hello again", Some("c1")))
        .await
        .unwrap();
    assert!(created_a && !created_b);
    assert_eq!(a.id, b.id);
    assert_eq!(b.content, "hello");
    // Another room, or no clientId, is another message.
    let (c, created_c) = store
        .insert_message(&message("order:2", "hello", Some("c1")))
        .await
        .unwrap();
    assert!(created_c && c.id != a.id);
    assert!(
        store
            .insert_message(&message("order:1", "x", None))
            .await
            .unwrap()
            .1
    );
    assert!(
        store
            .insert_message(&message("order:1", "x", None))
            .await
            .unwrap()
            .1
    );
});

on_both!(
    history_pages_newest_last_with_receipts,
    |store: Store| async move {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                store
                    .insert_message(&message("order:h", &format!("m{i}"), None))
                    .await
                    .unwrap()
                    .0
                    .id,
            );
        }
        store
            .insert_message(&message("order:other", "elsewhere", None))
            .await
            .unwrap();
        let last3 = store.history("order:h", None, 0, 3).await.unwrap();
        assert_eq!(
            last3.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["m2", "m3", "m4"]
        );
        let older = store
            .history("order:h", Some(last3[0].id), 0, 10)
            .await
            .unwrap();
        assert_eq!(
            older.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["m0", "m1"]
        );
        // Skipping the newest: seed 001's `offset`.
        let skipped = store.history("order:h", None, 2, 2).await.unwrap();
        assert_eq!(
            skipped
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>(),
            ["m1", "m2"]
        );
        assert!(
            store
                .history("order:h", None, 5, 2)
                .await
                .unwrap()
                .is_empty()
        );
        let marked = store
            .mark_read("order:h", "bob", &[ids[4], ids[3], 424242], 5)
            .await
            .unwrap();
        assert_eq!(marked, vec![ids[3], ids[4]], "only this room's messages");
        assert_eq!(
            store
                .mark_read("order:other", "bob", &[ids[0]], 5)
                .await
                .unwrap(),
            Vec::<i64>::new()
        );
        store
            .mark_read("order:h", "bob", &[ids[4]], 9)
            .await
            .unwrap();
        store
            .mark_read("order:h", "cat", &[ids[4]], 7)
            .await
            .unwrap();
        let latest = store.history("order:h", None, 0, 1).await.unwrap();
        let expected = vec![("bob".to_string(), 5), ("cat".to_string(), 7)];
        assert_eq!(
            latest[0].read_by, expected,
            "the first read counts; ordered by time"
        );
    }
);

on_both!(
    full_text_search_finds_words_and_prefixes,
    |store: Store| async move {
        store
            .insert_message(&message(
                "order:s",
                "Pallet seven is DAMAGED at dock four",
                None,
            ))
            .await
            .unwrap();
        store
            .insert_message(&message("order:s", "all good at dock two", None))
            .await
            .unwrap();
        store
            .insert_message(&message("shipment:s", "damaged crate", None))
            .await
            .unwrap();
        let words = |w: &[&str]| SearchQuery::Words(w.iter().map(|s| s.to_string()).collect());
        let hits = store
            .search(&words(&["damag"]), None, None, 10)
            .await
            .unwrap();
        assert_eq!(
            hits.iter().map(|m| m.room.as_str()).collect::<Vec<_>>(),
            ["shipment:s", "order:s"],
            "newest first"
        );
        let both = store
            .search(&words(&["dock", "damaged"]), None, None, 10)
            .await
            .unwrap();
        assert_eq!(both.len(), 1);
        assert_eq!(
            store
                .search(&words(&["dock"]), Some("order:s"), None, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store
                .search(&words(&["dock"]), Some("shipment:s"), None, 10)
                .await
                .unwrap()
                .len(),
            0
        );
        assert!(
            store
                .search(&words(&["zebra"]), None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .search(&words(&[]), None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
);

on_both!(
    search_sees_own_matches_behind_newer_ones_elsewhere,
    |store: Store| async move {
        let chat = chat_service(&store, None).await;
        for i in 0..3 {
            let mine = message("order:mine", &format!("pallet {i} for me"), None);
            store.insert_message(&mine).await.unwrap();
        }
        for i in 0..450 {
            let theirs = message("branch:other", &format!("pallet {i} for them"), None);
            store.insert_message(&theirs).await.unwrap();
        }
        let found = chat
            .search("pallet", None, |room| room == "order:mine", 10)
            .await
            .unwrap();
        let contents: Vec<_> = found
            .messages
            .iter()
            .map(|m| m["content"].clone())
            .collect();
        assert_eq!(
            contents,
            ["pallet 2 for me", "pallet 1 for me", "pallet 0 for me"],
            "newest first, past 450 newer matches the caller may not see"
        );
    }
);

on_both!(
    encrypted_content_is_not_stored_in_plaintext,
    |store: Store| async move {
        let key = [42u8; 32];
        let chat = chat_service(&store, Some(key)).await;
        let ann = user("ann");
        let sent = chat
            .send(
                &ann,
                "quote:9",
                &data(json!({ "content": "Secret margin is 17 percent", "clientId": "x" })),
            )
            .await
            .unwrap();
        assert_eq!(
            sent["content"], "Secret margin is 17 percent",
            "the sender sees plaintext"
        );
        // What the `messages` table holds, read straight from the database.
        let stored = store.debug_raw_message_contents().await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(
            !stored[0].contains("Secret") && !stored[0].contains("margin"),
            "ciphertext at rest: {}",
            stored[0]
        );
        // Through livehub it reads back; whole words are searchable, prefixes are not.
        let history = chat.history("quote:9", None, 0, None).await.unwrap();
        assert_eq!(history[0]["content"], "Secret margin is 17 percent");
        let found = chat.search("margin", None, |_| true, 10).await.unwrap();
        assert_eq!((found.mode, found.messages.len()), ("exact-words", 1));
        assert_eq!(
            chat.search("marg", None, |_| true, 10)
                .await
                .unwrap()
                .messages
                .len(),
            0
        );
        // With another key the content does not open.
        let other = chat_service(&store, Some([7u8; 32])).await;
        assert_eq!(
            other.history("quote:9", None, 0, None).await.unwrap()[0]["content"],
            Value::Null
        );
    }
);

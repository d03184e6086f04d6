//! Shared helpers for the Rust integration tests: which databases to run on.
#![allow(dead_code)]

use livehub::config::DatabaseUrl;
use livehub::store::Store;

/// Whether CI demands the external services (then a missing one fails the test).
pub fn services_required() -> bool {
    std::env::var("LIVEHUB_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A fresh SQLite store in a temporary directory (kept alive by the returned guard).
pub async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/test.db", dir.path().display());
    let store = Store::connect(&DatabaseUrl::Sqlite(url))
        .await
        .expect("sqlite store");
    (store, dir)
}

/// TEST_DATABASE_URL, or `None` with a message saying `test` skips its
/// PostgreSQL half (a failure instead when CI requires the services).
fn database_url(test: &str) -> Option<String> {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        assert!(
            !services_required(),
            "TEST_DATABASE_URL is required here (LIVEHUB_REQUIRE_SERVICES=1)"
        );
        eprintln!("skipping the PostgreSQL half of `{test}`: TEST_DATABASE_URL is not set");
        return None;
    };
    Some(url)
}

/// The schema or database a test makes for itself: its name and this process's.
fn isolated_name(test: &str) -> String {
    format!("t_{}_{}", test, std::process::id())
}

/// A fresh PostgreSQL store in its own schema, or `None` (with a message) when
/// TEST_DATABASE_URL is not set.
pub async fn postgres(test: &str) -> Option<Store> {
    let url = database_url(test)?;
    let schema = isolated_name(test);
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("TEST_DATABASE_URL is reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("drop old schema");
    admin.close().await;
    Some(
        Store::connect_postgres_schema(&url, &schema)
            .await
            .expect("postgres store"),
    )
}

/// A fresh PostgreSQL store in a database of its own whose collation is the
/// ICU locale `locale` (as managed PostgreSQL and the official images create
/// them), with that database's name; `None` (with a message) when
/// TEST_DATABASE_URL is not set. Give both to [`drop_database`].
pub async fn postgres_collated(test: &str, locale: &str) -> Option<(Store, String)> {
    let url = database_url(test)?;
    let name = isolated_name(test);
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("TEST_DATABASE_URL is reachable");
    for statement in [
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 \
             LOCALE_PROVIDER icu ICU_LOCALE '{locale}' LOCALE 'C.UTF-8'"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&admin)
            .await
            .expect("create the collated database");
    }
    admin.close().await;
    let (server, _) = url
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL names a database");
    let store = Store::connect(&DatabaseUrl::Postgres(format!("{server}/{name}")))
        .await
        .expect("postgres store");
    Some((store, name))
}

/// Closes `store` and drops its database, made by [`postgres_collated`].
pub async fn drop_database(store: Store, name: String) {
    store.close().await;
    let url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let admin = sqlx::PgPool::connect(&url).await.expect("reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .expect("drop the collated database");
    admin.close().await;
}

/// A TCP link on loopback to `target` (`host:port`) that holds every chunk
/// `delay` each way, in order: a slow network between a node and its
/// database. Returns the address to connect to instead.
pub async fn slow_link(target: String, delay: std::time::Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    async fn forward(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: std::time::Duration,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(delay).await;
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    }
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(forward(client_read, server_write, delay));
            tokio::spawn(forward(server_read, client_write, delay));
        }
    });
    local
}

/// A second connection to the schema [`postgres`] made for `test` (another
/// node on the same log), through a [`slow_link`] of `delay` each way.
pub async fn postgres_again_slowly(test: &str, delay: std::time::Duration) -> Store {
    let url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let (scheme_user, rest) = url
        .rsplit_once('@')
        .expect("TEST_DATABASE_URL has user@host");
    let (host_port, database) = rest
        .split_once('/')
        .expect("TEST_DATABASE_URL names a database");
    let link = slow_link(host_port.to_string(), delay).await;
    let schema = isolated_name(test);
    Store::connect_postgres_schema(&format!("{scheme_user}@{link}/{database}"), &schema)
        .await
        .expect("postgres store")
}

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

/// A fresh PostgreSQL store in its own schema, or `None` (with a message) when
/// TEST_DATABASE_URL is not set.
pub async fn postgres(test: &str) -> Option<Store> {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        assert!(
            !services_required(),
            "TEST_DATABASE_URL is required here (LIVEHUB_REQUIRE_SERVICES=1)"
        );
        eprintln!("skipping the PostgreSQL half of `{test}`: TEST_DATABASE_URL is not set");
        return None;
    };
    let schema = format!("t_{}_{}", test, std::process::id());
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
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        assert!(
            !services_required(),
            "TEST_DATABASE_URL is required here (LIVEHUB_REQUIRE_SERVICES=1)"
        );
        eprintln!("skipping the PostgreSQL half of `{test}`: TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!("t_{}_{}", test, std::process::id());
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

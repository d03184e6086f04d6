//! The pub/sub driver under socketioxide's Redis adapter.
//!
//! socketioxide-redis ships a driver on a plain multiplexed connection, which
//! never comes back after Redis restarts: its subscriptions are gone and every
//! publish fails from then on. This one sits on redis-rs's `ConnectionManager`,
//! which reconnects with backoff and re-subscribes to every channel by itself,
//! and it bounds every call with a timeout so that no request waits on a Redis
//! that is not answering.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind};
use socketioxide_redis::drivers::{Driver, MessageStream};
use tokio::sync::mpsc;

/// How long one Redis call may take before it counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

type Subscribers = Arc<RwLock<HashMap<String, mpsc::Sender<(String, Vec<u8>)>>>>;

/// A Redis failure as the adapter sees it.
#[derive(Debug)]
pub enum DriverError {
    /// Redis answered with an error, or the connection failed.
    Redis(redis::RedisError),
    /// Redis did not answer within [`REDIS_TIMEOUT`].
    Timeout,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Redis(e) => write!(f, "redis: {e}"),
            DriverError::Timeout => write!(f, "redis did not answer in time"),
        }
    }
}

impl std::error::Error for DriverError {}

/// Pub/sub over a self-healing Redis connection.
#[derive(Clone)]
pub struct ResilientDriver {
    conn: ConnectionManager,
    subscribers: Subscribers,
}

async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, DriverError> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DriverError::Redis(e)),
        Err(_) => Err(DriverError::Timeout),
    }
}

impl ResilientDriver {
    /// Connects (RESP3, for push messages) and keeps reconnecting on its own.
    pub async fn connect(client: &redis::Client) -> Result<ResilientDriver, redis::RedisError> {
        let subscribers: Subscribers = Arc::default();
        let routes = subscribers.clone();
        let config = ConnectionManagerConfig::new()
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_max_delay(Duration::from_secs(2))
            .set_push_sender(move |push: PushInfo| {
                route(push, &routes);
                Ok::<(), std::convert::Infallible>(())
            });
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(ResilientDriver { conn, subscribers })
    }

    /// A connection for other Redis work (presence), sharing the same manager.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Hands a pub/sub message to the adapter stream subscribed to its channel.
fn route(push: PushInfo, subscribers: &Subscribers) {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(channel), Ok(payload)) = (
        redis::from_redis_value::<String>(channel),
        redis::from_redis_value::<Vec<u8>>(payload),
    ) else {
        return;
    };
    if let Some(tx) = subscribers
        .read()
        .expect("subscriber map lock")
        .get(&channel)
        && tx.try_send((channel, payload)).is_err()
    {
        tracing::warn!("cluster message dropped: the adapter is not keeping up");
    }
}

impl Driver for ResilientDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), DriverError> {
        let mut conn = self.conn.clone();
        bounded(conn.publish::<_, _, ()>(chan, val)).await
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<(String, Vec<u8>)>, DriverError> {
        let (tx, rx) = mpsc::channel(size);
        self.subscribers
            .write()
            .expect("subscriber map lock")
            .insert(chan.clone(), tx);
        let mut conn = self.conn.clone();
        bounded(conn.subscribe(chan.as_str())).await?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), DriverError> {
        self.subscribers
            .write()
            .expect("subscriber map lock")
            .remove(&chan);
        let mut conn = self.conn.clone();
        bounded(conn.unsubscribe(chan.as_str())).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, DriverError> {
        let mut conn = self.conn.clone();
        let (_, count): (String, u16) = bounded(
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(chan)
                .query_async(&mut conn),
        )
        .await?;
        Ok(count)
    }
}

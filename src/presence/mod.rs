//! Presence: who is viewing which room, and which users are connected at all.
//!
//! Counted by *user*, not by socket: a user with two tabs on a shipment is one
//! viewer, and closing one tab changes nothing for the others. One boundary,
//! two backings — in memory on a single node, and in Redis with per-entry
//! expiry refreshed by a heartbeat when several nodes form a cluster — so that
//! counting viewers never means asking every node (which stalls when one is
//! slow or dead).
//!
//! This module only keeps the state and reports *transitions* (a user started or
//! stopped viewing). What to tell the room about them is [`announce`]'s job;
//! typing indicators live in [`typing`].

pub mod announce;
mod memory;
pub mod redis;
pub mod status;
pub mod typing;

use serde::Serialize;

pub use announce::Announcer;
pub use memory::MemoryPresence;
pub use status::Statuses;
pub use typing::Typing;

/// A user viewing a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Viewer {
    /// User id.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// One of the user's sockets in the room.
    pub socket_id: String,
}

/// What a join or leave did to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Whether the user started (join) or stopped (leave) viewing — false when
    /// another of their sockets keeps them in the room.
    pub user_changed: bool,
    /// Distinct users viewing after the change.
    pub viewers: usize,
}

/// Where a user's connect or disconnect falls among the cluster's transitions
/// of that user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Its number: the user's transitions are counted in Redis, in the order
    /// Redis applied them.
    pub number: i64,
    /// How long after the transition before it (ms).
    pub after_ms: i64,
}

/// What a user's connect or disconnect did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserChange {
    /// The user's first socket anywhere (connect), or their last (disconnect).
    pub changed: bool,
    /// Where it falls in the cluster's order (`None` on a single node, or
    /// when nothing changed).
    pub order: Option<Order>,
}

/// Two transitions of one user closer than this (a reload onto another node)
/// may be announced out of order: each node's signal crosses Redis on its own
/// connection. The later one is announced again after this long, unless yet
/// another transition superseded it, so that the branch settles on the truth.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

impl UserChange {
    /// A change at `order`.
    pub fn ordered(changed: bool, order: Option<Order>) -> UserChange {
        UserChange { changed, order }
    }

    /// The transition number to announce again after [`SETTLE`]: when it
    /// came within [`SETTLE`] of the transition before it.
    pub fn reannounce(&self) -> Option<i64> {
        self.order
            .filter(|o| self.changed && o.after_ms < SETTLE.as_millis() as i64)
            .map(|o| o.number)
    }
}

/// The presence store.
#[derive(Clone)]
pub enum Presence {
    /// This node only.
    Memory(MemoryPresence),
    /// Shared by the cluster through Redis.
    Redis(redis::RedisPresence),
}

/// What the cluster keeps of a connected user, to speak for them if their node dies.
#[derive(Debug, Clone, Copy)]
pub struct Departing<'a> {
    /// Their branch, whose room hears `offline`.
    pub branch: Option<&'a str>,
    /// Their display name.
    pub name: &'a str,
    /// The log position they have been delivered up to.
    pub position: i64,
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Presence::Memory(p) => p.$method($($arg),*).await,
            Presence::Redis(p) => p.$method($($arg),*).await,
        }
    };
}

impl Presence {
    /// In-memory presence for a single node.
    pub fn memory() -> Presence {
        Presence::Memory(MemoryPresence::default())
    }

    /// Socket `sid` of `user` now views `room`.
    pub async fn join(&self, room: &str, user: &str, name: &str, sid: &str) -> Change {
        dispatch!(self.join(room, user, name, sid))
    }

    /// Socket `sid` of `user` no longer views `room`.
    pub async fn leave(&self, room: &str, user: &str, sid: &str) -> Change {
        dispatch!(self.leave(room, user, sid))
    }

    /// Who views `room`, one entry per user: at most `limit` of them (sorted by
    /// user id), and how many there are in all.
    pub async fn viewers(&self, room: &str, limit: usize) -> (Vec<Viewer>, usize) {
        dispatch!(self.viewers(room, limit))
    }

    /// How many distinct users view `room`.
    pub async fn count(&self, room: &str) -> usize {
        dispatch!(self.count(room))
    }

    /// Socket `sid` of `user` connected; `changed` when it is the user's first anywhere.
    /// `who` is what the cluster needs to announce the user's departure if
    /// this node dies: their branch, their name, and the log position the
    /// user has been delivered up to.
    pub async fn connect_user(&self, user: &str, sid: &str, who: &Departing<'_>) -> UserChange {
        match self {
            Presence::Memory(p) => UserChange::ordered(p.connect_user(user, sid).await, None),
            Presence::Redis(p) => {
                p.describe_user(user, who.branch, who.name);
                p.connect_user(user, sid, who.position).await
            }
        }
    }

    /// Socket `sid` of `user` disconnected; `changed` when it was the user's last anywhere.
    pub async fn disconnect_user(&self, user: &str, sid: &str) -> UserChange {
        match self {
            Presence::Memory(p) => UserChange::ordered(p.disconnect_user(user, sid).await, None),
            Presence::Redis(p) => p.disconnect_user(user, sid).await,
        }
    }

    /// The number of `user`'s latest connect or disconnect in the cluster
    /// (`None` on a single node, or when Redis does not answer).
    pub async fn transition_number(&self, user: &str) -> Option<i64> {
        match self {
            Presence::Memory(_) => None,
            Presence::Redis(p) => p.transition_number(user).await,
        }
    }

    /// Users with at least one socket (cluster-wide with Redis).
    pub async fn users_online(&self) -> usize {
        dispatch!(self.users_online())
    }
}

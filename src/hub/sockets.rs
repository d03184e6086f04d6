//! The hub's delivery half: putting connections in rooms with their replay,
//! ephemeral sends, and this node's connections.
//!
//! A join is a step of the deliverer ([`super::delivery`]), so its replay is
//! ordered exactly against live delivery; what the deliverer's ring no longer
//! holds is read from the log here and sent paced to what the client takes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use socketioxide::socket::Sid;
use tokio::sync::oneshot;

use super::delivery::{JoinOp, JoinReply};
use super::reader::LogReader;
use super::{Census, Fill, Hub, JoinFailure, Membership, SendOutcome, census};
use crate::error::Rejection;

/// Events read from the database per page during a replay.
const REPLAY_PAGE: usize = 1000;
/// How long a replay waits for a slow client's buffer before giving up on it.
const REPLAY_SEND_PATIENCE: Duration = Duration::from_secs(10);

impl Hub {
    /// Whether more than the replay limit of events for `rooms` follow `after`.
    pub async fn too_far_behind(&self, rooms: &[String], after: i64) -> Result<bool, JoinFailure> {
        let Some(store) = &self.inner.store else {
            return Ok(false);
        };
        let limit = self.inner.options.replay_limit;
        // Seqs are consecutive: no more than `known - after` events follow
        // `after` in the log as this node knows it (every local commit, and
        // other nodes' as they announce them). A client back from a short drop
        // (the usual reconnect) is then within the limit without a database
        // count: a reconnect storm is thousands of these at once.
        if self.inner.delivery.known() - after <= limit as i64 {
            return Ok(false);
        }
        let n = store
            .count_rooms(rooms, after, limit + 1)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "replay count failed");
                JoinFailure::Store
            })?;
        Ok(n > limit)
    }

    /// Puts a socket in rooms, first sending it what `fill` asks for, exactly
    /// once and in order (see [`super::delivery`]). Returns how many events were sent.
    pub async fn join(
        &self,
        sid: Sid,
        membership: Arc<Membership>,
        rooms: Vec<String>,
        mut fill: Option<Fill>,
    ) -> Result<usize, JoinFailure> {
        // The client may have seen events this node has not delivered yet
        // (another node's, before this one hears of them): joined first, it
        // would get them again live. The deliverer reads the shared log up to
        // them before it handles the join, queued after.
        if let Some(seen) = fill.as_ref().map(Fill::max_after) {
            self.inner.delivery.remote(seen).await;
        }
        let mut sent = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.inner
                .delivery
                .join(JoinOp {
                    sid,
                    membership: membership.clone(),
                    rooms: rooms.clone(),
                    fill: fill.clone(),
                    reply,
                })
                .await;
            match answer.await.unwrap_or(JoinReply::Gone) {
                JoinReply::Joined { sent: n, .. } => {
                    self.inner.census.changed();
                    return Ok(sent + n);
                }
                JoinReply::Gone => return Err(JoinFailure::Gone),
                JoinReply::NotCovered { through } => {
                    fill = self
                        .fill_from_store(sid, &membership, fill, through, &mut sent)
                        .await?;
                }
                JoinReply::Backlog {
                    sent: n,
                    sent_through,
                    through,
                } => {
                    sent += n;
                    if let Some(f) = fill.as_mut() {
                        f.advance_to(sent_through);
                    }
                    fill = self
                        .fill_from_store(sid, &membership, fill, through, &mut sent)
                        .await?;
                }
            }
        }
    }

    /// Sends a fill's stretch up to `through` from the database and returns
    /// the fill that is left (none without a log: then there is nothing to read).
    async fn fill_from_store(
        &self,
        sid: Sid,
        membership: &Membership,
        fill: Option<Fill>,
        through: i64,
        sent: &mut usize,
    ) -> Result<Option<Fill>, JoinFailure> {
        let (Some(log), Some(mut f)) = (self.log_reader(), fill) else {
            return Ok(None);
        };
        *sent += self
            .send_from_store(&log, sid, membership, &f, through)
            .await?;
        f.advance_to(through);
        Ok(Some(f))
    }

    /// Sends the events of `fill` up to `through` from the database, paced to
    /// what the client's buffer takes. The socket is not yet in the fill's
    /// rooms, so nothing in this stretch can also reach it live.
    async fn send_from_store(
        &self,
        log: &LogReader,
        sid: Sid,
        membership: &Membership,
        fill: &Fill,
        through: i64,
    ) -> Result<usize, JoinFailure> {
        let rooms: Vec<String> = fill.after.iter().map(|(r, _)| r.clone()).collect();
        let mut cursor = fill.min_after();
        let mut sent = 0;
        loop {
            let page = log
                .rooms(&rooms, cursor, through, REPLAY_PAGE)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "replay read failed");
                    JoinFailure::Store
                })?;
            let socket_rooms = self.inner.fabric.rooms_of(sid);
            let full = page.len() == REPLAY_PAGE;
            for ev in page {
                cursor = ev.seq;
                if fill.wants(ev.seq, &ev.rooms, &ev.except, membership, &socket_rooms)
                    && let Some(payload) = fill.payload(ev.seq, ev.payload)
                {
                    self.send_patiently(sid, &ev.event, &payload).await?;
                    sent += 1;
                }
            }
            if !full {
                return Ok(sent);
            }
        }
    }

    async fn send_patiently(
        &self,
        sid: Sid,
        event: &str,
        payload: &serde_json::value::RawValue,
    ) -> Result<(), JoinFailure> {
        let deadline = tokio::time::Instant::now() + REPLAY_SEND_PATIENCE;
        loop {
            match self.inner.fabric.send(sid, event, payload) {
                SendOutcome::Sent => return Ok(()),
                SendOutcome::Gone => return Err(JoinFailure::Gone),
                SendOutcome::Slow if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                SendOutcome::Slow => {
                    self.inner.fabric.force_reconnect(sid);
                    return Err(JoinFailure::Slow);
                }
            }
        }
    }

    /// Sends an ephemeral event (presence, typing…) to rooms on every node,
    /// except sockets in the `except` rooms. Not logged, not replayed. The
    /// payload is serialised here, once, for every front and node.
    pub(crate) fn signal(
        &self,
        rooms: &[String],
        except: &[String],
        event: &str,
        payload: &impl serde::Serialize,
    ) {
        match serde_json::value::to_raw_value(payload) {
            Ok(payload) => self.inner.fabric.signal(rooms, except, event, &payload),
            Err(e) => tracing::error!(error = %e, event, "a signal's payload did not serialise"),
        }
    }

    /// Waits, for at most `within`, until the signals made so far have left
    /// this node for the cluster. Returns whether they all did.
    pub(crate) async fn settle(&self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, self.inner.fabric.settle())
            .await
            .is_ok()
    }

    /// Closes a socket's transport so that its client reconnects by itself.
    pub(crate) fn reconnect(&self, sid: Sid) {
        self.inner.fabric.force_reconnect(sid);
    }

    /// Sends an ephemeral event to one socket on this node (`pong`, `replay:reset`…).
    pub(crate) fn send_to(&self, sid: Sid, event: &str, payload: &Value) -> SendOutcome {
        let raw = serde_json::value::to_raw_value(payload).expect("JSON values serialise");
        self.inner.fabric.send(sid, event, &raw)
    }

    /// Takes a connection on this node out of a room.
    pub(crate) fn leave(&self, sid: Sid, room: &str) {
        self.inner.fabric.leave(sid, room);
        self.inner.census.changed();
    }

    /// The rooms a connection on this node is in.
    pub(crate) fn rooms_of(&self, sid: Sid) -> Vec<String> {
        self.inner.fabric.rooms_of(sid)
    }

    /// The rooms of a user's connections on this node (internal ones excluded).
    pub(crate) fn user_rooms(&self, user: &str) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .inner
            .fabric
            .user_rooms(user)
            .into_iter()
            .filter(|r| !crate::rooms::is_internal(r))
            .collect();
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// Ends one socket on this node with a Socket.IO disconnect.
    pub(crate) fn disconnect_socket(&self, sid: Sid) {
        self.inner.fabric.disconnect(sid);
    }

    /// Disconnects every socket of a user, on every node.
    pub async fn disconnect_user(&self, user_id: &str) -> Result<(), Rejection> {
        self.inner
            .fabric
            .disconnect_room(crate::rooms::user_sockets_room(user_id))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "user disconnect failed");
                Rejection::internal("could not reach every node")
            })
    }

    /// This node's sockets and rooms by kind (walked again only after a
    /// change, or 2 s after the last walk).
    pub fn census(&self) -> Census {
        self.inner.census.current(|| self.inner.fabric.census())
    }

    /// This node's open connections of every front, exactly.
    pub fn open_connections(&self) -> usize {
        self.inner.census.open()
    }

    /// Counts a connection a front accepted, until the guard is dropped.
    pub(crate) fn connection_opened(&self) -> census::OpenConnection {
        self.inner.census.opened()
    }
}

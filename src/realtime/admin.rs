//! The server side of the Socket.IO Admin UI (`@socket.io/admin-ui`), on the
//! `/admin` namespace.
//!
//! What the UI gets: `session` after a password login, `config` with the
//! features livehub offers, `all_sockets` (this node's sockets, their rooms
//! and handshakes) on connect, and every 2 s from every node, through the
//! adapter: `server_stats` (one entry per `serverId`) and what changed since
//! the last tick (`socket_connected`, `socket_disconnected`, `room_joined`,
//! `room_left`). Comparing snapshots instead of hooking each join and leave
//! keeps the hot paths free of admin code; the view is at most 2 s old.
//!
//! What the UI can do: `join`, `leave` and `_disconnect` sockets (one socket by
//! id, a room, or everyone; cluster-wide), and `emit`, which goes through the
//! hub like any other emit (checked, logged, delivered to both fronts) when it
//! targets a room or everyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Event, SocketRef, TryData};
use socketioxide::handler::{
    ConnectHandler, FromConnectParts, FromMessageParts, MessageHandler, Value as SioValue,
};
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::{RemoteSocket, Sid, Socket};

use super::connect::MiddlewareFuture;
use crate::config::AdminAccess;
use crate::events::{Emit, Target};
use crate::hub::Hub;
use crate::session::Session;

/// The namespace the UI connects to.
pub(crate) const NAMESPACE: &str = "/admin";
/// How often every node sends its stats (the UI marks a server down after 10 s).
const STATS_EVERY: Duration = Duration::from_secs(2);
/// The `connect_error` message the UI recognises.
const REFUSED: &str = "invalid credentials";
/// Request headers never shown in the UI: they carry credentials.
const SECRET_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];
/// Query parameters never shown: the token may travel there.
const SECRET_QUERY: &[&str] = &["token", "access_token", "auth"];

/// The admin namespace's state, shared by its handlers.
pub(crate) struct Admin<A: Adapter> {
    io: SocketIo<A>,
    access: AdminAccess,
    hub: Hub,
    node: String,
    started: Instant,
    /// Login sessions handed out by this node (`auth.sessionId` on a reload).
    logins: Mutex<Logins>,
    password_checks: PasswordChecks,
}

/// How long a login session lets the UI back in without the password. The UI
/// keeps its `sessionId` across reloads; a leaked one is good for this long at
/// most, not until the server restarts.
const LOGIN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Login sessions kept at most (the oldest is forgotten first), so that logins
/// cannot grow memory whatever the lifetime.
const MAX_LOGINS: usize = 256;

/// Password checks waiting for their turn, at most; past it a login is
/// refused at once.
const CHECKS_WAITING_AT_MOST: usize = 8;
/// How long a wrong password holds the next check back.
const WRONG_PASSWORD_PAUSE: Duration = Duration::from_secs(1);

/// Checks admin passwords one at a time. bcrypt is slow on purpose (about
/// 250 ms at cost 12) and anyone who can open Engine.IO sessions can send
/// logins: unbounded, they would keep every core busy, and guesses would go
/// as fast as the cores allow. One at a time, a few waiting and a pause after
/// each wrong one, guesses go at about one a second whatever the number of
/// sessions sending them.
struct PasswordChecks {
    turn: Arc<tokio::sync::Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl PasswordChecks {
    fn new() -> PasswordChecks {
        PasswordChecks {
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
            waiting: Arc::default(),
        }
    }

    /// Runs `check` (on the blocking pool) when its turn comes: whether it
    /// passed, or `None` at once when too many checks are waiting already.
    /// A check runs to its end even if its login is abandoned, and holds the
    /// turn until then.
    async fn run(&self, check: impl FnOnce() -> bool + Send + 'static) -> Option<bool> {
        let waiting = Waiting::join(&self.waiting)?;
        let turn = self.turn.clone().acquire_owned().await.ok()?;
        drop(waiting);
        let checked = tokio::spawn(async move {
            let passed = tokio::task::spawn_blocking(check).await.unwrap_or(false);
            if !passed {
                tokio::time::sleep(WRONG_PASSWORD_PAUSE).await;
            }
            drop(turn);
            passed
        });
        Some(checked.await.unwrap_or(false))
    }
}

/// One check counted among those waiting, until dropped.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn join(count: &Arc<AtomicUsize>) -> Option<Waiting> {
        let before = count.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(count.clone());
        (before < CHECKS_WAITING_AT_MOST).then_some(waiting)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The login sessions this node handed out, and when.
#[derive(Default)]
struct Logins(HashMap<String, Instant>);

impl Logins {
    /// Records a new login session at `now`.
    fn issue(&mut self, id: String, now: Instant) {
        self.0
            .retain(|_, at| now.duration_since(*at) < LOGIN_LIFETIME);
        if self.0.len() >= MAX_LOGINS
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone())
        {
            self.0.remove(&oldest);
        }
        self.0.insert(id, now);
    }

    /// Whether `id` is a login session still good at `now`.
    fn admits(&self, id: &str, now: Instant) -> bool {
        self.0
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < LOGIN_LIFETIME)
    }
}

/// A login session created by the middleware, for the connect handler to announce.
#[derive(Clone)]
struct NewLogin(String);

impl<A: Adapter> Admin<A> {
    /// The admin namespace's state; [`register`] puts it to work.
    pub(crate) fn new(io: SocketIo<A>, access: AdminAccess, hub: Hub, node: String) -> Arc<Self> {
        Arc::new(Admin {
            io,
            access,
            hub,
            node,
            started: Instant::now(),
            logins: Mutex::new(Logins::default()),
            password_checks: PasswordChecks::new(),
        })
    }

    async fn admit(&self, s: &Arc<Socket<A>>, auth: &Option<SioValue>) -> Result<(), &'static str> {
        let Ok(TryData(auth)) = TryData::<Value>::from_connect_parts(s, auth);
        let auth = auth.unwrap_or(Value::Null);
        let field = |name: &str| auth.get(name).and_then(Value::as_str).map(str::to_string);
        match &self.access {
            AdminAccess::Closed => Err(REFUSED),
            AdminAccess::Open => Ok(()),
            AdminAccess::Password { .. }
                if field("sessionId")
                    .is_some_and(|id| self.logins.lock().admits(&id, Instant::now())) =>
            {
                Ok(())
            }
            AdminAccess::Password {
                username,
                password_hash,
            } => {
                let (Some(user), Some(password)) = (field("username"), field("password")) else {
                    return Err(REFUSED);
                };
                let hash = password_hash.clone();
                let matches = self
                    .password_checks
                    .run(move || bcrypt::verify(password, &hash).unwrap_or(false))
                    .await
                    .unwrap_or(false);
                if !matches || user != *username {
                    return Err(REFUSED);
                }
                let login = hex::encode(rand::random::<[u8; 16]>());
                self.logins.lock().issue(login.clone(), Instant::now());
                s.extensions.insert(NewLogin(login));
                Ok(())
            }
        }
    }

    fn features(&self) -> Value {
        json!({ "supportedFeatures": [
            "EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT",
            "AGGREGATED_EVENTS", "ALL_EVENTS",
        ] })
    }

    fn stats(&self) -> Value {
        let census = self.hub.census();
        let admins = self
            .io
            .of(NAMESPACE)
            .map_or(0, |ns| ns.local().sockets().len());
        json!({
            "serverId": self.node,
            "hostname": self.node,
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs_f64(),
            "clientsCount": census.websocket + census.polling,
            "pollingClientsCount": census.polling,
            "aggregatedEvents": [],
            "namespaces": [
                { "name": "/", "socketsCount": census.websocket + census.polling },
                { "name": NAMESPACE, "socketsCount": admins },
            ],
        })
    }

    /// This node's sockets of the default namespace, as the UI lists them.
    fn local_sockets(&self) -> Vec<Value> {
        let Some(ns) = self.io.of("/") else {
            return Vec::new();
        };
        ns.local().sockets().iter().map(serialize).collect()
    }

    /// The socket `filter` names by id, on this node or another (the UI
    /// lists every node's sockets); `None` when it names a room or is absent.
    async fn socket_named(&self, filter: Option<&str>) -> Option<Found<A>> {
        let sid: Sid = filter?.parse().ok()?;
        let ns = self.io.of("/")?;
        if let Some(socket) = ns.get_socket(sid) {
            return Some(Found::Here(socket));
        }
        let everyone = ns
            .broadcast()
            .fetch_sockets()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "admin: the other nodes' sockets could not be listed"))
            .ok()?;
        let remote = everyone.into_iter().find(|s| s.data().id == sid)?;
        Some(Found::Elsewhere(remote))
    }

    /// A command from the UI: `[name, nsp, …args]`.
    async fn command(&self, name: &str, args: &[Value]) {
        let text = |i: usize| {
            args.get(i)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if text(0) != Some("/") {
            return; // livehub's sockets are all on "/"
        }
        let Some(ns) = self.io.of("/") else { return };
        match name {
            "join" | "leave" => {
                let (Some(room), filter) = (text(1), text(2)) else {
                    return;
                };
                if room.starts_with('*') {
                    return; // livehub's own rooms are not the operator's to change
                }
                let join = name == "join";
                if let Err(e) = self.change_rooms(join, room.to_string(), filter).await {
                    tracing::warn!(error = %e, "admin {name} did not reach every node");
                }
            }
            "_disconnect" => match self.socket_named(text(2)).await {
                Some(socket) => socket.disconnect().await,
                None => {
                    let _ = targets(ns, text(2)).disconnect().await;
                }
            },
            "emit" => self.emit(text(1), args.get(2..).unwrap_or_default()).await,
            _ => {}
        }
    }

    /// Joins or leaves `room` for one socket (by id), a room's sockets, or
    /// every socket (`filter` absent), on every node.
    async fn change_rooms(
        &self,
        join: bool,
        room: String,
        filter: Option<&str>,
    ) -> Result<(), A::Error> {
        let Some(ns) = self.io.of("/") else {
            return Ok(());
        };
        if let Some(socket) = self.socket_named(filter).await {
            return socket.change_rooms(join, room).await;
        }
        let targets = targets(ns, filter);
        if join {
            targets.join(room).await
        } else {
            targets.leave(room).await
        }
    }

    /// `emit(nsp, filter, event, ...args)`: to one socket directly (not
    /// logged: it is for that connection alone, and a name livehub emits
    /// itself is refused); to a room or everyone through the hub, like any
    /// emit.
    async fn emit(&self, filter: Option<&str>, rest: &[Value]) {
        let Some(event) = rest.first().and_then(Value::as_str) else {
            return;
        };
        let args = &rest[1..];
        if let Some(socket) = self.socket_named(filter).await {
            match crate::events::validate_name(event) {
                Ok(()) => {
                    socket
                        .emit(event, args.first().unwrap_or(&Value::Null))
                        .await
                }
                Err(refused) => tracing::info!(message = %refused.message, "admin emit refused"),
            }
            return;
        }
        let data = match args {
            [Value::Object(data)] => data.clone(),
            [] => Map::new(),
            _ => Map::from_iter([("args".to_string(), Value::Array(args.to_vec()))]),
        };
        let target = match filter {
            Some(room) => Target::rooms(vec![room.to_string()]),
            None => Target {
                broadcast: true,
                ..Default::default()
            },
        };
        let emit = Emit {
            event: event.to_string(),
            data,
            target,
            idempotency_key: None,
        };
        if let Err(refused) = self.hub.emit(emit).await {
            tracing::info!(code = refused.code.as_str(), message = %refused.message, "admin emit refused");
        }
    }
}

/// A socket the UI named by id.
enum Found<A: Adapter> {
    /// On this node.
    Here(SocketRef<A>),
    /// On another node, reached through the adapter.
    Elsewhere(RemoteSocket<A>),
}

impl<A: Adapter> Found<A> {
    async fn change_rooms(self, join: bool, room: String) -> Result<(), A::Error> {
        match self {
            Found::Here(socket) if join => socket.join(room),
            Found::Here(socket) => socket.leave(room),
            Found::Elsewhere(socket) if join => return socket.join(room).await,
            Found::Elsewhere(socket) => return socket.leave(room).await,
        }
        Ok(())
    }

    async fn disconnect(self) {
        match self {
            Found::Here(socket) => {
                let _ = socket.disconnect();
            }
            Found::Elsewhere(socket) => {
                let _ = socket.disconnect().await;
            }
        }
    }

    async fn emit(self, event: &str, data: &Value) {
        match self {
            Found::Here(socket) => {
                let _ = socket.emit(event, data);
            }
            Found::Elsewhere(socket) => {
                let _ = socket.emit(event, data).await;
            }
        }
    }
}

/// Every socket of `ns` in the room `filter` names, or every socket.
fn targets<A: Adapter>(ns: BroadcastOperators<A>, filter: Option<&str>) -> BroadcastOperators<A> {
    match filter {
        Some(room) => ns.to(room.to_string()),
        None => ns.broadcast(),
    }
}

/// A socket as the UI shows it. Credentials (the token in the handshake's
/// `auth`, query or headers) are left out.
fn serialize<A: Adapter>(socket: &SocketRef<A>) -> Value {
    let parts = socket.req_parts();
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.into())))
        .collect();
    let query: Map<String, Value> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| !SECRET_QUERY.contains(k))
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let session = socket.extensions.get::<Arc<Session>>();
    let data = session.as_ref().map_or(Value::Null, |s| {
        let claims = s.claims();
        json!({
            "userId": claims.sub,
            "name": claims.name,
            "branchId": claims.branch_id,
            "role": claims.role,
        })
    });
    let issued = session
        .as_ref()
        .map_or(SystemTime::now(), |s| s.since)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let address = parts
        .extensions
        .get::<crate::transport::ConnInfo>()
        .map(|c| c.peer.ip().to_string())
        .unwrap_or_default();
    let sid = socket.id.to_string();
    let transport = match socket.transport_type() {
        socketioxide::TransportType::Websocket => "websocket",
        socketioxide::TransportType::Polling => "polling",
    };
    let rooms = visible_rooms(socket);
    json!({
        "id": sid,
        "clientId": sid.chars().take(12).collect::<String>(),
        "transport": transport,
        "nsp": "/",
        "data": data,
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": issued,
            "secure": false,
            "time": chrono::DateTime::<chrono::Utc>::from(SystemTime::UNIX_EPOCH + Duration::from_millis(issued)).to_rfc2822(),
            "url": parts.uri.path(),
            "xdomain": parts.headers.contains_key(http::header::ORIGIN),
        },
        "rooms": rooms,
    })
}

/// A socket's rooms, sorted, without livehub's internal ones (`*`,
/// `*user:…`): leaving one from the UI would silently cut the socket off
/// broadcasts or disconnects.
fn visible_rooms<A: Adapter>(socket: &SocketRef<A>) -> Vec<String> {
    let mut rooms: Vec<String> = socket
        .rooms()
        .into_iter()
        .filter(|r| !r.starts_with('*'))
        .map(|r| r.to_string())
        .collect();
    rooms.sort();
    rooms
}

/// Type marker for [`AdminConnect`]'s `ConnectHandler` impl.
pub(crate) struct AdminMarker;

/// The namespace's middleware (credentials) and connect handler.
struct AdminConnect<A: Adapter>(Arc<Admin<A>>);

impl<A: Adapter> Clone for AdminConnect<A> {
    fn clone(&self) -> Self {
        AdminConnect(self.0.clone())
    }
}

impl<A: Adapter> ConnectHandler<A, AdminMarker> for AdminConnect<A> {
    fn call(&self, s: Arc<Socket<A>>, auth: Option<SioValue>) {
        let Ok(socket) = SocketRef::from_connect_parts(&s, &auth);
        let admin = self.0.clone();
        // The UI listens once connected: announce the login first, then what it may do.
        if let Some(NewLogin(login)) = socket.extensions.get::<NewLogin>() {
            let _ = socket.emit("session", &login);
        }
        let _ = socket.emit("config", &admin.features());
        let _ = socket.emit("all_sockets", &admin.local_sockets());
        socket.on_fallback(AdminCommands(admin));
    }

    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<A>>,
        auth: &'a Option<SioValue>,
    ) -> MiddlewareFuture<'a> {
        Box::pin(async move {
            self.0.admit(&s, auth).await.map_err(|refused| {
                crate::metrics::rejected("unauthorized");
                Box::new(refused) as Box<dyn std::fmt::Display + Send>
            })
        })
    }
}

/// Type marker for [`AdminCommands`]'s `MessageHandler` impl.
pub(crate) struct CommandMarker;

/// The UI's commands, whatever their name (unknown ones are ignored).
struct AdminCommands<A: Adapter>(Arc<Admin<A>>);

impl<A: Adapter> Clone for AdminCommands<A> {
    fn clone(&self) -> Self {
        AdminCommands(self.0.clone())
    }
}

impl<A: Adapter> MessageHandler<A, CommandMarker> for AdminCommands<A> {
    fn call(&self, s: Arc<Socket<A>>, mut v: SioValue, ack_id: Option<i64>) {
        let Ok(Event(name)) = Event::from_message_parts(&s, &mut v, &ack_id) else {
            return;
        };
        let SioValue::Str(text, _) = &v else { return };
        let Ok(mut args) = serde_json::from_str::<Vec<Value>>(text.as_str()) else {
            return;
        };
        if args.is_empty() {
            return;
        }
        args.remove(0); // the event name
        let admin = self.0.clone();
        tokio::spawn(async move { admin.command(&name, &args).await });
    }
}

/// Opens the `/admin` namespace and starts the ticker. The result is the
/// adapter's initialisation, as for the default namespace.
pub(crate) fn register<A>(admin: Arc<Admin<A>>) -> A::InitRes
where
    A: Adapter + socketioxide_core::adapter::DefinedAdapter,
{
    let init = admin.io.ns(NAMESPACE, AdminConnect(admin.clone()));
    // Closed, the namespace refuses every UI: no one to tell. The ticker would
    // otherwise keep a snapshot of every socket's rooms and serialise each new
    // socket every two seconds for nobody.
    if !admin.access.is_open() {
        return init;
    }
    let weak = Arc::downgrade(&admin);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATS_EVERY);
        let mut seen = Snapshot::default();
        loop {
            tick.tick().await;
            let Some(admin) = weak.upgrade() else { return };
            let Some(ns) = admin.io.of(NAMESPACE) else {
                continue;
            };
            // Every node's stats and socket changes reach every admin socket,
            // through the adapter.
            let _ = ns.clone().emit("server_stats", &admin.stats()).await;
            for change in admin.changes(&mut seen) {
                let ns = ns.clone();
                // Several arguments are sent as a tuple.
                let _ = match change {
                    Change::Connected(socket, at) => {
                        ns.emit("socket_connected", &(socket, at)).await
                    }
                    Change::Disconnected(id, at) => {
                        ns.emit("socket_disconnected", &("/", id, "disconnect", at))
                            .await
                    }
                    Change::Joined(room, id, at) => {
                        ns.emit("room_joined", &("/", room, id, at)).await
                    }
                    Change::Left(room, id, at) => ns.emit("room_left", &("/", room, id, at)).await,
                };
            }
        }
    });
    init
}

/// A change the UI hears of, with its time (ISO 8601).
enum Change {
    Connected(Value, String),
    Disconnected(String, String),
    Joined(String, String, String),
    Left(String, String, String),
}

/// This node's sockets and their rooms at the last tick.
#[derive(Default)]
struct Snapshot(std::collections::HashMap<Sid, Vec<String>>);

impl<A: Adapter> Admin<A> {
    /// What changed since `seen`, as the UI's events: sockets connected and
    /// disconnected, rooms joined and left. `seen` becomes the present.
    fn changes(&self, seen: &mut Snapshot) -> Vec<Change> {
        let Some(ns) = self.io.of("/") else {
            return Vec::new();
        };
        let now = crate::events::now_iso8601();
        let mut changes = Vec::new();
        let mut present = std::collections::HashMap::new();
        for socket in ns.local().sockets() {
            let rooms = visible_rooms(&socket);
            match seen.0.remove(&socket.id) {
                None => changes.push(Change::Connected(serialize(&socket), now.clone())),
                Some(before) => {
                    let id = socket.id.to_string();
                    for room in rooms.iter().filter(|r| !before.contains(r)) {
                        changes.push(Change::Joined(room.clone(), id.clone(), now.clone()));
                    }
                    for room in before.iter().filter(|r| !rooms.contains(r)) {
                        changes.push(Change::Left(room.clone(), id.clone(), now.clone()));
                    }
                }
            }
            present.insert(socket.id, rooms);
        }
        for gone in seen.0.keys() {
            changes.push(Change::Disconnected(gone.to_string(), now.clone()));
        }
        seen.0 = present;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_session_lets_the_ui_back_in_until_its_lifetime_ends() {
        let start = Instant::now();
        let mut logins = Logins::default();
        logins.issue("a".into(), start);
        assert!(logins.admits("a", start + LOGIN_LIFETIME - Duration::from_secs(1)));
        assert!(!logins.admits("a", start + LOGIN_LIFETIME));
        assert!(!logins.admits("b", start), "an id never issued");
    }

    #[test]
    fn logins_are_bounded_and_the_oldest_goes_first() {
        let start = Instant::now();
        let mut logins = Logins::default();
        for i in 0..MAX_LOGINS + 1 {
            logins.issue(i.to_string(), start + Duration::from_secs(i as u64));
        }
        let now = start + Duration::from_secs(MAX_LOGINS as u64);
        assert!(!logins.admits("0", now), "the oldest was forgotten");
        assert!(logins.admits("1", now));
        assert!(logins.admits(&MAX_LOGINS.to_string(), now));
        assert_eq!(logins.0.len(), MAX_LOGINS);
    }

    #[tokio::test]
    async fn passwords_are_checked_one_at_a_time() {
        let checks = Arc::new(PasswordChecks::new());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let logins = (0..4).map(|_| {
            let (running, most, checks) = (running.clone(), most.clone(), checks.clone());
            tokio::spawn(async move {
                checks
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        true
                    })
                    .await
            })
        });
        for login in futures_util::future::join_all(logins).await {
            assert_eq!(login.unwrap(), Some(true));
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn past_the_checks_waiting_a_login_is_refused_at_once() {
        let checks = Arc::new(PasswordChecks::new());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let first = {
            let checks = checks.clone();
            tokio::spawn(async move { checks.run(move || held.recv().is_ok()).await })
        };
        while checks.turn.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let waiting: Vec<_> = (0..CHECKS_WAITING_AT_MOST)
            .map(|_| {
                let checks = checks.clone();
                tokio::spawn(async move { checks.run(|| true).await })
            })
            .collect();
        while checks.waiting.load(Ordering::SeqCst) < CHECKS_WAITING_AT_MOST {
            tokio::task::yield_now().await;
        }
        assert_eq!(checks.run(|| true).await, None, "one too many");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(true));
        for login in waiting {
            assert_eq!(
                login.await.unwrap(),
                Some(true),
                "those waiting had their turn"
            );
        }
        assert_eq!(checks.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrong_password_holds_the_next_check_back() {
        let checks = PasswordChecks::new();
        let start = tokio::time::Instant::now();
        let (wrong, right) = tokio::join!(checks.run(|| false), async {
            let passed = checks.run(|| true).await;
            (passed, start.elapsed())
        });
        assert_eq!(wrong, Some(false));
        assert_eq!(right.0, Some(true));
        assert!(right.1 >= WRONG_PASSWORD_PAUSE, "{:?}", right.1);
    }

    #[test]
    fn expired_logins_are_dropped_when_a_new_one_is_issued() {
        let start = Instant::now();
        let mut logins = Logins::default();
        logins.issue("old".into(), start);
        logins.issue("new".into(), start + LOGIN_LIFETIME);
        assert_eq!(logins.0.len(), 1);
    }
}

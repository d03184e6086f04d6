//! Assembling livehub: the store, the hub, Socket.IO and the routes, wired in
//! the one order that works — and taken apart again on shutdown.
//!
//! The hub needs the socket fabric to deliver, and the socket handlers need the
//! hub to emit; so socketioxide is built first, the hub is started on its
//! fabric, and only then are the handlers registered.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use socketioxide::SocketIoBuilder;
use socketioxide::adapter::Adapter;
use socketioxide_core::adapter::Spawnable;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{ApiKeys, Verifier};
use crate::chat::Chat;
use crate::cluster::forward::Forwarder;
use crate::cluster::membership::Membership;
use crate::cluster::relay::{Relay, RelayTarget};
use crate::cluster::{self, ClusterAdapter};
use crate::config::{Config, LogFormat, redact_url};
use crate::http::{self, AppState, dev::DevInfo};
use crate::hub::{Fabric, Fabrics};
use crate::hub::{Hub, HubOptions, HubTasks};
use crate::plain::{self, Front};
use crate::presence::Presence;
use crate::realtime::{self, IoFabric};
use crate::session::{self, Sessions};
use crate::store::Store;
use crate::transport::TransportControl;

/// How long a drain may take before livehub exits anyway (the contract: 10 s).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(9);
/// How long past [`SHUTDOWN_DEADLINE`] the hub's tasks and the database's
/// connections may take to close.
const FINISH_AT_MOST: Duration = Duration::from_millis(800);
/// How long shutdown waits for the cluster to take this node's last signals
/// (each broadcast gives up after a second, and a hung Redis is then skipped).
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// What the nodes of a cluster share (or, alone, what stands in for it).
struct Shared {
    presence: Presence,
    /// Redis pub/sub, for the plain front's relay.
    driver: Option<crate::cluster::driver::ResilientDriver>,
    /// Sends polling requests to their session's node.
    forwarder: Option<Arc<Forwarder>>,
    /// Which nodes are alive.
    membership: Option<Arc<Membership>>,
}

type Closer = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A built livehub, ready to serve.
pub struct App {
    hub: Hub,
    router: Router,
    ready: Arc<AtomicBool>,
    close_sockets: Closer,
    tasks: HubTasks,
    store: Store,
    /// The effective configuration (dev secrets filled in).
    pub config: Config,
    dev: Option<DevInfo>,
    forwarder: Option<Arc<Forwarder>>,
}

impl App {
    /// Builds everything; nothing listens yet.
    pub async fn build(mut config: Config) -> anyhow::Result<App> {
        let dev = prepare_dev(&mut config);
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot open DATABASE_URL {}",
                    redact_url(config.database_url.as_str())
                )
            })?;
        if !config.event_log {
            tracing::warn!("EVENT_LOG=off: events are not stored and cannot be replayed");
        }
        let verifier = Verifier::new(&config.jwt);
        if let Some(jwks) = verifier.jwks() {
            jwks.refresh(true).await;
        }
        let store = store.with_origin(&config.node_id);
        let builder = realtime::builder(&config);
        match config.redis_url.clone() {
            None => {
                let shared = Shared {
                    presence: Presence::memory(),
                    driver: None,
                    forwarder: None,
                    membership: None,
                };
                Self::assemble(
                    builder,
                    config,
                    store,
                    verifier,
                    dev,
                    shared,
                    |init| async move {
                        init.spawn();
                        Ok(())
                    },
                )
                .await
            }
            Some(url) => {
                let ca = config.redis_ca_pem.as_deref();
                let cluster = cluster::connect(&url, ca, &config.cluster_name, &config.node_id)
                    .await
                    .context("cannot reach Redis at REDIS_URL")?;
                let forwarder = Forwarder::new(
                    cluster.driver.connection(),
                    &config.cluster_name,
                    config.advertise_url.clone(),
                    config.trusted_proxies.clone(),
                )
                .await
                .context("cannot set up request forwarding through Redis")?;
                let builder = builder.with_adapter::<ClusterAdapter<_>>(cluster.adapter);
                let shared = Shared {
                    presence: Presence::Redis(cluster.presence),
                    driver: Some(cluster.driver),
                    forwarder: Some(forwarder),
                    membership: Some(cluster.membership),
                };
                Self::assemble(
                    builder,
                    config,
                    store,
                    verifier,
                    dev,
                    shared,
                    |init| async move { init.await.context("the Redis adapter failed to start") },
                )
                .await
            }
        }
    }

    async fn assemble<A, F, Fut>(
        builder: SocketIoBuilder<A>,
        config: Config,
        store: Store,
        verifier: Verifier,
        dev: Option<DevInfo>,
        shared: Shared,
        init: F,
    ) -> anyhow::Result<App>
    where
        A: Adapter + socketioxide_core::adapter::DefinedAdapter,
        F: Fn(A::InitRes) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let Shared {
            presence,
            driver,
            forwarder,
            membership,
        } = shared;
        let (layer, io) = builder.build_layer();
        let transport = Arc::new(TransportControl::default());
        let (fabric, plain_conns) = fabrics(&io, &transport, &config, &store, driver);
        let log_store = config.event_log.then(|| store.clone());
        let (hub, tasks) = Hub::start(log_store.clone(), fabric, hub_options(&config))
            .await
            .context("cannot read the event log")?;
        let chat = Chat::new(store.clone(), hub.clone(), config.encryption_key.as_ref());
        let sessions = Arc::new(Sessions::new(session::Parts {
            hub: hub.clone(),
            verifier: verifier.clone(),
            settings: session::Settings::from_config(&config),
            store: log_store,
            presence: presence.clone(),
            chat: chat.clone(),
            presence_broadcast_limit: config.presence_broadcast_limit,
        }));
        init(realtime::register(&io, sessions.clone(), transport.clone())).await?;
        realtime::start_ghost_sweeper(io.clone(), transport.clone());
        if let Presence::Redis(shared) = &presence {
            session::start_cluster_presence(&sessions, shared);
        }

        let ready = Arc::new(AtomicBool::new(false));
        crate::metrics::start_draining(Arc::downgrade(&ready));
        if let Some(membership) = &membership {
            let hub = hub.clone();
            membership.start(move || hub.open_connections());
        }
        let state = http_state(
            &config, &hub, verifier, chat, presence, &dev, membership, &ready,
        );
        let front = Arc::new(Front {
            sessions: sessions.clone(),
            registry: plain_conns,
            ready: ready.clone(),
            cors: config.cors_origins.clone(),
            ping_every: config.ws_ping_interval,
            idle_after: config.ws_idle_timeout,
        });
        init(realtime::admin::register(realtime::admin::Admin::new(
            io.clone(),
            config.admin.clone(),
            hub.clone(),
            config.node_id.clone(),
        )))
        .await?;
        let admin_ui = config
            .admin_ui_dir
            .as_deref()
            .filter(|_| config.admin.is_open());
        let routes = http::router(state, config.demo_dir.as_deref(), admin_ui)
            .merge(plain::router(front.clone()))
            .layer(layer);
        let router = http::outer_layers(
            routes,
            &config.cors_origins,
            transport,
            ready.clone(),
            forwarder.clone(),
        );
        let close_sockets = closer(io, sessions, front);
        Ok(App {
            hub,
            router,
            ready,
            close_sockets,
            tasks,
            store,
            config,
            dev,
            forwarder,
        })
    }

    /// The emitter, for Rust code running in the same process.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: `/health`
    /// turns `ready: false`, new connections are refused, every socket's transport
    /// is closed so its client reconnects elsewhere, the log is flushed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let local = listener.local_addr()?;
        if let Some(f) = &self.forwarder {
            f.listening_on(local);
            if !f.is_reachable() {
                tracing::warn!(
                    "listening on every interface without ADVERTISE_URL: other nodes cannot forward \
                     polling requests here, so polling clients need sticky sessions"
                );
            }
        }
        // Ready before the address is announced: whoever reads it may connect at once.
        self.ready.store(true, Ordering::Release);
        let stop_accepting = CancellationToken::new();
        let server = tokio::spawn(crate::server::serve(
            listener,
            self.router.clone(),
            stop_accepting.clone(),
            crate::server::Limits {
                grace: Duration::from_secs(2),
                max_connections: self.config.max_connections as usize,
                max_per_address: crate::server::Limits::tcp_per_address(
                    self.config.max_connections_per_ip,
                ),
                trusted_proxies: self.config.trusted_proxies.clone(),
            },
        ));
        announce(&self, local);
        shutdown.await;

        let started = Instant::now();
        // Every step is bounded: a database or Redis that stops answering must
        // not hold the exit past the contract's 10 s.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        tracing::info!("draining: refusing new connections, closing sockets");
        self.ready.store(false, Ordering::Release);
        // Engine.IO close packets, not Socket.IO disconnects: clients reconnect by themselves.
        if tokio::time::timeout(Duration::from_secs(5), (self.close_sockets)())
            .await
            .is_err()
        {
            tracing::warn!("some sockets did not close in time");
        }
        if tokio::time::timeout_at(deadline, self.hub.flush())
            .await
            .is_err()
        {
            tracing::warn!("the event log did not flush in time");
        }
        stop_accepting.cancel();
        let _ = tokio::time::timeout_at(deadline, server).await;
        let App {
            hub,
            tasks,
            store,
            router,
            close_sockets,
            ..
        } = self;
        drop((hub, router, close_sockets));
        let end = deadline + FINISH_AT_MOST;
        let _ = tokio::time::timeout_at(end, tasks.finish()).await;
        if tokio::time::timeout_at(end, store.close()).await.is_err() {
            tracing::warn!("the database did not close in time");
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
        Ok(())
    }

    /// The generated secrets in dev mode.
    pub fn dev_info(&self) -> Option<&DevInfo> {
        self.dev.as_ref()
    }
}

/// Fills in a generated secret and API key in dev mode.
fn prepare_dev(config: &mut Config) -> Option<DevInfo> {
    if !config.dev {
        return None;
    }
    // Real secrets or keys mean real users: a secret, a public key or a key
    // set for their tokens, or controllers' API keys.
    let real = config.jwt.is_configured() || !config.api_keys.is_empty();
    if !config.jwt.is_configured() {
        config.jwt.secret = Some(hex::encode(rand::random::<[u8; 32]>()));
    }
    if config.api_keys.is_empty() {
        config
            .api_keys
            .push(format!("dev-{}", hex::encode(rand::random::<[u8; 12]>())));
    }
    if real {
        // The admin namespace needs its own credentials.
        if config.admin == crate::config::AdminAccess::Open {
            config.admin = crate::config::AdminAccess::Closed;
        }
        tracing::warn!(
            "dev mode beside a configured JWT_SECRET, JWT_PUBLIC_KEY_FILE, JWKS_URL or API_KEYS: \
             /dev/token and /dev/config are off, and the Admin UI needs ADMIN_USERNAME and \
             ADMIN_PASSWORD_HASH, so that they never hand out real credentials or control"
        );
    }
    Some(DevInfo {
        secret: config.jwt.secret.clone().unwrap_or_default(),
        api_key: config.api_keys[0].clone(),
        generated: !real,
    })
}

fn hub_options(config: &Config) -> HubOptions {
    HubOptions {
        replay_limit: config.replay_limit,
        retention: config.event_retention,
        node: config.node_id.clone(),
        max_payload_bytes: config.max_payload_bytes,
    }
}

/// What the HTTP routes share.
#[allow(clippy::too_many_arguments)]
fn http_state(
    config: &Config,
    hub: &Hub,
    verifier: Verifier,
    chat: Chat,
    presence: Presence,
    dev: &Option<DevInfo>,
    membership: Option<Arc<Membership>>,
    ready: &Arc<AtomicBool>,
) -> AppState {
    Arc::new(http::AppContext {
        hub: hub.clone(),
        api_keys: ApiKeys::new(&config.api_keys),
        verifier,
        chat,
        presence,
        metrics: crate::metrics::install(),
        node_id: config.node_id.clone(),
        started: Instant::now(),
        ready: ready.clone(),
        max_payload_bytes: config.max_payload_bytes,
        dev: dev.clone(),
        user_limits: http::UserLimits::per_minute(config.rate_limit_per_minute),
        membership,
    })
}

/// This node's fabrics: its Socket.IO sockets and its plain connections,
/// the latter relayed across nodes on `driver` when clustered.
fn fabrics<A: Adapter>(
    io: &socketioxide::SocketIo<A>,
    transport: &Arc<TransportControl>,
    config: &Config,
    store: &Store,
    driver: Option<crate::cluster::driver::ResilientDriver>,
) -> (Arc<dyn Fabric>, Arc<plain::Registry>) {
    // Without a shared log (SQLite), logged events cross nodes through the adapter.
    let cross_node_broadcast = config.redis_url.is_some() && !store.is_shared();
    let io_fabric = Arc::new(IoFabric::new(
        io.clone(),
        transport.clone(),
        cross_node_broadcast,
    ));
    let plain_conns = Arc::new(plain::Registry::default());
    if let Some(driver) = driver {
        let target: Arc<dyn RelayTarget> = plain_conns.clone();
        plain_conns.set_relay(Relay::start(
            driver,
            &config.cluster_name,
            &config.node_id,
            target,
        ));
    }
    let fabric: Arc<dyn Fabric> = Arc::new(Fabrics(vec![io_fabric, plain_conns.clone()]));
    (fabric, plain_conns)
}

/// What shutdown runs before closing the transports: every socket's
/// disconnect cleanup on both fronts, and the offline marks flushed.
fn closer<A: Adapter>(
    io: socketioxide::SocketIo<A>,
    sessions: Arc<Sessions>,
    front: Arc<Front>,
) -> Closer {
    Box::new(move || {
        let io = io.clone();
        let sessions = sessions.clone();
        let front = front.clone();
        Box::pin(async move {
            futures_util::join!(realtime::drain(&io, &sessions), plain::drain(&front));
            // Their `offline`s and viewers' departures too, to the sockets on other nodes.
            sessions.statuses.flush();
            sessions.announcer.flush_all().await;
            // Those wait in queues for the cluster: closing the namespace now
            // would drop them. And the departures just recorded must reach the
            // database before it closes.
            let (settled, marked) = futures_util::join!(
                sessions.hub.settle(SETTLE_AT_MOST),
                tokio::time::timeout(SETTLE_AT_MOST, sessions.flush_marks())
            );
            if !settled {
                tracing::warn!("the cluster did not take this node's last signals in time");
            }
            if marked.is_err() {
                // They are lost with the process: those users' next connects
                // replay from their earlier marks (duplicates, not loss).
                tracing::warn!("the database did not take this node's last offline marks in time");
            }
            io.close().await
        })
    })
}

/// Binds, announces, serves until SIGTERM or SIGINT, drains, returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let addr = SocketAddr::new(config.host, config.port);
    let app = App::build(config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HOST/PORT)"))?;
    app.serve(listener, shutdown_signal()).await
}

fn announce(app: &App, addr: SocketAddr) {
    let c = &app.config;
    // Tests and scripts read this line to find the port when PORT=0.
    let mut fields = serde_json::Map::new();
    fields.insert("addr".into(), addr.to_string().into());
    fields.insert("node".into(), c.node_id.to_string().into());
    crate::cli::say(
        c.log_format,
        &format!("livehub listening on http://{addr}"),
        fields,
    );
    tracing::info!(
        %addr,
        node = %c.node_id,
        database = %redact_url(c.database_url.as_str()),
        cluster = c.redis_url.is_some(),
        "livehub started"
    );
    // Secrets are printed only when they were generated for this run.
    if let Some(dev) = app.dev_info().filter(|d| d.generated) {
        let token = crate::auth::mint_dev_token(
            &dev.secret,
            "ana",
            Some("north"),
            Some("manager"),
            Some("Ana Ortiz"),
            12 * 3600,
        );
        match c.log_format {
            LogFormat::Json => {
                let fields = serde_json::json!({
                    "demoPage": format!("http://{addr}/"),
                    "adminUi": format!("http://{addr}/admin/"),
                    "apiKey": dev.api_key,
                    "jwtSecret": dev.secret,
                    "demoToken": token,
                });
                let serde_json::Value::Object(fields) = fields else {
                    unreachable!("a JSON object literal")
                };
                crate::cli::say(
                    c.log_format,
                    "DEV MODE: generated secrets, not for production",
                    fields,
                );
            }
            LogFormat::Pretty => dev_banner(
                addr,
                dev,
                &token,
                c.demo_dir.is_none(),
                c.admin_ui_dir.is_some(),
            ),
        }
    }
}

fn dev_banner(addr: SocketAddr, dev: &DevInfo, token: &str, no_demo: bool, admin_ui: bool) {
    println!();
    println!("  ┌──────────────────────────────────────────────────────────────────┐");
    println!("  │  DEV MODE — generated secrets, NOT FOR PRODUCTION                 │");
    println!("  └──────────────────────────────────────────────────────────────────┘");
    println!("  demo page:   http://{addr}/");
    if admin_ui {
        println!("  admin UI:    http://{addr}/admin/   (Socket.IO Admin UI, open in dev mode)");
    }
    println!("  API key:     {}", dev.api_key);
    println!(
        "  JWT secret:  {}   (export JWT_SECRET=… to mint more with `livehub token`)",
        dev.secret
    );
    println!("  demo token:  {token}");
    println!(
        "  try:         curl -X POST http://{addr}/api/v1/emit -H 'Authorization: Bearer {}' \\",
        dev.api_key
    );
    println!(
        "                 -H 'Content-Type: application/json' -d '{{\"event\":\"shipment:updated\",\"data\":{{\"shipmentId\":\"42\",\"status\":\"received\"}}}}'"
    );
    println!();
    if no_demo {
        println!("  (no demo page: build it with `npm ci && npm run build` in web-demo/)");
    }
}

/// Waits for a registered signal (forever if it could not be registered).
#[cfg(unix)]
async fn received(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn shutdown_signal() -> impl Future<Output = ()> + Send {
    // Registered here, before `serve` prints the address, not when the future
    // is first polled: on a busy machine the main thread can be descheduled
    // right after printing while the workers already serve clients, and a
    // SIGTERM then met the default action and killed livehub without its
    // drain (seen twice in CI: exit by signal, no output, clients got 1006).
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (terminate, interrupt) = signals;
            tokio::select! {
                () = received(terminate) => {},
                () = received(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

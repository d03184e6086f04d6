//! Settings: read once at start-up, validated, then passed down as plain values.
//!
//! Every setting is an environment variable mirrored by a `serve` flag
//! (`PORT` ↔ `--port`). Clap reads both as raw strings; [`Config::from_args`]
//! validates them and refuses to start with a one-line error that names the
//! variable. No other module reads the environment.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

/// The raw settings, as clap reads them from flags or the environment.
///
/// Values stay strings here so that a malformed one is reported by
/// [`Config::from_args`] with the variable's name, in one line.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Bind address.
    #[arg(long, env = "HOST")]
    pub host: Option<String>,
    /// Port for Socket.IO, the HTTP API, /health, /metrics and the demo (0 picks a free one).
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    /// HS256 secret for user tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key (RS256/ES256) for user tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<String>,
    /// JWKS endpoint; keys are cached and refreshed on an unknown `kid`.
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Comma-separated API keys for controllers.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// `sqlite://…` (embedded default) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis for running several nodes as one cluster.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// A PEM CA certificate to trust for `rediss://` instead of the system's roots.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<String>,
    /// This node's URL as the other nodes reach it (`http://10.0.0.5:3000`).
    #[arg(long, env = "ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Comma-separated allowed origins (`*` = any origin, without credentials).
    #[arg(long, env = "CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Largest accepted message in bytes.
    #[arg(long, env = "MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<String>,
    /// Open TCP connections this node accepts, of every kind (0 = no cap).
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Socket.IO connections per client address (0 = no cap).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<String>,
    /// Client→server events per socket per minute (0 = no limit).
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: Option<String>,
    /// How long the event log keeps events for replay (e.g. `24h`, `90m`).
    #[arg(long, env = "EVENT_RETENTION")]
    pub event_retention: Option<String>,
    /// How often plain WebSocket connections are pinged (e.g. `25s`).
    #[arg(long, env = "WS_PING_INTERVAL")]
    pub ws_ping_interval: Option<String>,
    /// A plain WebSocket connection silent this long is closed with 4408 (e.g. `60s`).
    #[arg(long, env = "WS_IDLE_TIMEOUT")]
    pub ws_idle_timeout: Option<String>,
    /// `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Colour in pretty logs: `auto` (only on a terminal, and not with NO_COLOR), `always` or `never`.
    #[arg(long, env = "LOG_COLOR")]
    pub log_color: Option<String>,
    /// Set (to anything but empty) to turn colour off in `auto` mode (no-color.org).
    #[arg(long, env = "NO_COLOR", hide = true)]
    pub no_color: Option<String>,
    /// Log filter, e.g. `info` or `livehub=debug,info`.
    #[arg(long, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    /// 64 hex characters: chat content encrypted at rest.
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// Above this many viewers a room gets `viewers:count` instead of per-user events.
    #[arg(long, env = "PRESENCE_BROADCAST_LIMIT")]
    pub presence_broadcast_limit: Option<String>,
    /// Comma-separated proxy addresses or CIDRs whose `X-Forwarded-For` is believed.
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Rooms one socket may be in, automatic rooms included.
    #[arg(long, env = "MAX_ROOMS_PER_SOCKET")]
    pub max_rooms_per_socket: Option<String>,
    /// Most events one replay sends before telling the client to refetch instead.
    #[arg(long, env = "REPLAY_LIMIT")]
    pub replay_limit: Option<String>,
    /// This node's name in /health and the cluster (default: host name and a random suffix).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// `on` (default) or `off`: with `off` nothing is written to the database and
    /// nothing can be replayed. Meant for benchmarks that measure the log's cost.
    #[arg(long, env = "EVENT_LOG")]
    pub event_log: Option<String>,
    /// Name of the cluster: prefixes every Redis key and channel, so that several
    /// clusters (staging, production) can share one Redis.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Allow `REDIS_URL` with an SQLite database (each node then has its own log).
    #[arg(long, env = "ALLOW_SQLITE_CLUSTER")]
    pub allow_sqlite_cluster: Option<String>,
    /// Directory of the built demo page (default `web-demo/dist` in dev mode).
    #[arg(long, env = "DEMO_DIR")]
    pub demo_dir: Option<String>,
    /// Socket.IO Admin UI login name (with ADMIN_PASSWORD_HASH).
    #[arg(long, env = "ADMIN_USERNAME")]
    pub admin_username: Option<String>,
    /// Socket.IO Admin UI password, as a bcrypt hash (`$2b$…`).
    #[arg(long, env = "ADMIN_PASSWORD_HASH", hide_env_values = true)]
    pub admin_password_hash: Option<String>,
    /// Directory of the Admin UI's built files (default `web-demo/dist/admin` when built).
    #[arg(long, env = "ADMIN_UI_DIR")]
    pub admin_ui_dir: Option<String>,
    /// Development mode: generated secret and API key, demo page, loud warnings.
    #[arg(long, env = "LIVEHUB_DEV", num_args = 0..=1, default_missing_value = "true")]
    pub dev: Option<String>,
}

/// A setting that could not be used, with the variable that holds it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var} (--{flag}): {message}")]
pub struct ConfigError {
    /// The environment variable, e.g. `PORT`.
    pub var: &'static str,
    /// The mirrored flag, e.g. `port`.
    pub flag: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Where the event log and chat live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// Embedded SQLite file (or `sqlite::memory:`).
    Sqlite(String),
    /// PostgreSQL server.
    Postgres(String),
}

impl DatabaseUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(u) | DatabaseUrl::Postgres(u) => u,
        }
    }
}

/// Which origins may call the HTTP API and the polling transport from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No cross-origin access (same origin only).
    None,
    /// `*`: any origin, without credentials.
    Any,
    /// These origins, echoed with `Access-Control-Allow-Credentials: true`.
    List(Vec<String>),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// How user tokens are verified.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// HS256 secret.
    pub secret: Option<String>,
    /// PEM public key contents and the file it came from.
    pub public_key_pem: Option<(PathBuf, Vec<u8>)>,
    /// JWKS endpoint.
    pub jwks_url: Option<String>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Required audience.
    pub audience: Option<String>,
}

impl JwtConfig {
    /// Whether any way of verifying tokens is configured.
    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || self.public_key_pem.is_some() || self.jwks_url.is_some()
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bind address.
    pub host: IpAddr,
    /// Port (0: pick a free one).
    pub port: u16,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Controller API keys.
    pub api_keys: Vec<String>,
    /// Event log and chat database.
    pub database_url: DatabaseUrl,
    /// Cluster Redis.
    pub redis_url: Option<String>,
    /// A CA certificate (PEM) trusted for `rediss://` (`REDIS_CA_FILE`).
    pub redis_ca_pem: Option<Vec<u8>>,
    /// This node's URL for the other nodes (`ADVERTISE_URL`); without it, the
    /// listening address when that is a specific one.
    pub advertise_url: Option<String>,
    /// Cross-origin policy.
    pub cors_origins: CorsOrigins,
    /// Largest accepted message.
    pub max_payload_bytes: usize,
    /// Open TCP connections, of every kind (0 = off).
    pub max_connections: u32,
    /// Connections per client address (0 = off).
    pub max_connections_per_ip: u32,
    /// Client events per socket per minute (0 = off).
    pub rate_limit_per_minute: u32,
    /// Replay window.
    pub event_retention: Duration,
    /// How often plain WebSocket connections are pinged.
    pub ws_ping_interval: Duration,
    /// Silence after which a plain WebSocket connection is closed (4408).
    pub ws_idle_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Colour codes in pretty logs: never in files and pipes unless asked for.
    pub log_color: bool,
    /// Log filter directive.
    pub log_level: String,
    /// Chat encryption key.
    pub encryption_key: Option<[u8; 32]>,
    /// Viewer count above which per-user presence events stop.
    pub presence_broadcast_limit: usize,
    /// Proxies whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Rooms per socket.
    pub max_rooms_per_socket: usize,
    /// Events per replay before the client is told to refetch.
    pub replay_limit: usize,
    /// This node's name.
    pub node_id: String,
    /// Whether events are written to the database.
    pub event_log: bool,
    /// `REDIS_URL` with SQLite allowed.
    pub allow_sqlite_cluster: bool,
    /// Prefix of Redis keys and channels.
    pub cluster_name: String,
    /// Built demo page, served at `/` and `/demo/` in dev mode.
    pub demo_dir: Option<PathBuf>,
    /// Who may open the Socket.IO Admin UI's `/admin` namespace.
    pub admin: AdminAccess,
    /// The Admin UI's built files, served at `/admin/` when the namespace is open to someone.
    pub admin_ui_dir: Option<PathBuf>,
    /// Development mode.
    pub dev: bool,
}

/// Who may connect to the `/admin` namespace (the Socket.IO Admin UI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAccess {
    /// Nobody: no credentials are configured.
    Closed,
    /// Anyone: `--dev` without credentials.
    Open,
    /// `ADMIN_USERNAME` with the password whose bcrypt hash is `password_hash`.
    Password {
        /// The login name.
        username: String,
        /// A bcrypt hash.
        password_hash: String,
    },
}

impl AdminAccess {
    /// Whether anyone may connect (the UI's files are served only then).
    pub fn is_open(&self) -> bool {
        !matches!(self, AdminAccess::Closed)
    }
}

/// The default `MAX_CONNECTIONS`: at roughly 30 KiB each, about 1.5 GiB of
/// connection state; past it a node answers 503 instead of running out of
/// memory or file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 50_000;

/// The default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://livehub.db";

fn err(var: &'static str, flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        flag,
        message: message.into(),
    }
}

/// A present, non-blank value.
/// Whether an http URL's host is this machine (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `ADMIN_USERNAME` and `ADMIN_PASSWORD_HASH`: both or neither; the hash
/// must be bcrypt's. Without them the namespace is closed, except in dev mode.
fn admin_access(
    username: &Option<String>,
    hash: &Option<String>,
    dev: bool,
) -> Result<AdminAccess, ConfigError> {
    match (given(username), given(hash)) {
        (None, None) if dev => Ok(AdminAccess::Open),
        (None, None) => Ok(AdminAccess::Closed),
        (Some(username), Some(hash)) => {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(err(
                    "ADMIN_PASSWORD_HASH",
                    "admin-password-hash",
                    "expected a bcrypt hash like $2b$12$… (e.g. from `htpasswd -bnBC 12 \"\" password`)",
                ));
            }
            Ok(AdminAccess::Password {
                username: username.to_string(),
                password_hash: hash.to_string(),
            })
        }
        (Some(_), None) => Err(err(
            "ADMIN_PASSWORD_HASH",
            "admin-password-hash",
            "ADMIN_USERNAME is set: set its bcrypt password hash too",
        )),
        (None, Some(_)) => Err(err(
            "ADMIN_USERNAME",
            "admin-username",
            "ADMIN_PASSWORD_HASH is set: set the login name too",
        )),
    }
}

/// A duration like `24h`, `90m` or `25s`, at least `min`.
fn duration(
    v: &Option<String>,
    (var, flag): (&'static str, &'static str),
    default: Duration,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let d = match given(v) {
        None => default,
        Some(s) => humantime::parse_duration(s).map_err(|_| {
            err(
                var,
                flag,
                format!("expected a duration like 24h or 90m, got {s:?}"),
            )
        })?,
    };
    if d < min {
        return Err(err(
            var,
            flag,
            format!("must be at least {}", humantime::format_duration(min)),
        ));
    }
    Ok(d)
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn number<T: std::str::FromStr>(
    v: &Option<String>,
    var: &'static str,
    flag: &'static str,
    default: T,
    what: &str,
) -> Result<T, ConfigError> {
    match given(v) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| err(var, flag, format!("expected {what}, got {s:?}"))),
    }
}

fn boolean(v: &Option<String>, var: &'static str, flag: &'static str) -> Result<bool, ConfigError> {
    match given(v).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(err(
            var,
            flag,
            format!("expected true or false, got {other:?}"),
        )),
    }
}

fn list(v: &Option<String>) -> Vec<String> {
    given(v)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Config {
    /// Validates raw settings. The first bad one stops start-up.
    pub fn from_args(a: &ServeArgs) -> Result<Config, ConfigError> {
        let dev = boolean(&a.dev, "LIVEHUB_DEV", "dev")?;
        let (log_format, log_color, log_level) = logging(a)?;
        let redis_url = redis_url(a)?;
        let (ws_ping_interval, ws_idle_timeout) = websocket_timers(a)?;
        Config {
            host: host(a)?,
            port: number(&a.port, "PORT", "port", 3000u16, "a port number 0-65535")?,
            jwt: jwt_config(a)?,
            api_keys: list(&a.api_keys),
            database_url: database_url(a)?,
            redis_ca_pem: redis_ca(a.redis_ca_file.as_deref(), redis_url.as_deref())?,
            redis_url,
            advertise_url: advertise_url(a)?,
            cors_origins: cors_origins(a)?,
            max_payload_bytes: max_payload_bytes(a)?,
            max_connections: number(
                &a.max_connections,
                "MAX_CONNECTIONS",
                "max-connections",
                DEFAULT_MAX_CONNECTIONS,
                "a whole number (0 = no cap)",
            )?,
            max_connections_per_ip: number(
                &a.max_connections_per_ip,
                "MAX_CONNECTIONS_PER_IP",
                "max-connections-per-ip",
                0u32,
                "a whole number (0 = no cap)",
            )?,
            rate_limit_per_minute: number(
                &a.rate_limit_per_minute,
                "RATE_LIMIT_PER_MINUTE",
                "rate-limit-per-minute",
                120u32,
                "a whole number (0 = no limit)",
            )?,
            event_retention: duration(
                &a.event_retention,
                ("EVENT_RETENTION", "event-retention"),
                Duration::from_secs(24 * 3600),
                Duration::from_secs(1),
            )?,
            ws_ping_interval,
            ws_idle_timeout,
            log_format,
            log_color,
            log_level,
            encryption_key: encryption_key(a)?,
            presence_broadcast_limit: number(
                &a.presence_broadcast_limit,
                "PRESENCE_BROADCAST_LIMIT",
                "presence-broadcast-limit",
                200usize,
                "a whole number",
            )?,
            trusted_proxies: trusted_proxies(a)?,
            max_rooms_per_socket: max_rooms_per_socket(a)?,
            replay_limit: replay_limit(a)?,
            node_id: node_id(a)?,
            event_log: event_log(a)?,
            allow_sqlite_cluster: boolean(
                &a.allow_sqlite_cluster,
                "ALLOW_SQLITE_CLUSTER",
                "allow-sqlite-cluster",
            )?,
            cluster_name: cluster_name(a)?,
            demo_dir: demo_dir(a, dev)?,
            admin: admin_access(&a.admin_username, &a.admin_password_hash, dev)?,
            admin_ui_dir: admin_ui_dir(a)?,
            dev,
        }
        .checked()
    }

    /// Refuses settings that are each valid but cannot work together.
    fn checked(self) -> Result<Config, ConfigError> {
        if self.redis_url.is_some()
            && matches!(self.database_url, DatabaseUrl::Sqlite(_))
            && !self.allow_sqlite_cluster
        {
            return Err(err(
                "REDIS_URL",
                "redis-url",
                "a cluster needs a shared PostgreSQL event log: set DATABASE_URL=postgres://… \
                 (or ALLOW_SQLITE_CLUSTER=true to give each node its own log, without cross-node replay)",
            ));
        }
        if !self.jwt.is_configured() && !self.dev {
            return Err(err(
                "JWT_SECRET",
                "jwt-secret",
                "no way to verify user tokens: set JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWKS_URL (or run with --dev)",
            ));
        }
        Ok(self)
    }

    /// A configuration for tests and embedding: HS256 `secret`, one API key,
    /// the given database, defaults elsewhere.
    pub fn for_tests(secret: &str, api_key: &str, database_url: DatabaseUrl) -> Config {
        let args = ServeArgs {
            port: Some("0".into()),
            jwt_secret: Some(secret.into()),
            api_keys: Some(api_key.into()),
            ..Default::default()
        };
        let mut config = Config::from_args(&args).expect("test configuration is valid");
        config.database_url = database_url;
        config
    }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{:04x}", rand::random::<u16>())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `HOST`: an IP address (`localhost` is 127.0.0.1).
fn host(a: &ServeArgs) -> Result<IpAddr, ConfigError> {
    Ok(match given(&a.host) {
        None | Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => h
            .parse()
            .map_err(|_| err("HOST", "host", format!("expected an IP address, got {h:?}")))?,
    })
}

/// How user tokens are verified.
fn jwt_config(a: &ServeArgs) -> Result<JwtConfig, ConfigError> {
    let public_key_pem = match given(&a.jwt_public_key_file) {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                err(
                    "JWT_PUBLIC_KEY_FILE",
                    "jwt-public-key-file",
                    format!("{path}: {e}"),
                )
            })?;
            if crate::auth::decoding_key_from_pem(&bytes).is_none() {
                return Err(err(
                    "JWT_PUBLIC_KEY_FILE",
                    "jwt-public-key-file",
                    format!("{path} is not an RSA or EC public key in PEM form"),
                ));
            }
            Some((PathBuf::from(path), bytes))
        }
    };
    let jwks_url = given(&a.jwks_url)
        .map(|u| {
            if u.starts_with("https://") || (u.starts_with("http://") && is_loopback_url(u)) {
                Ok(u.to_string())
            } else {
                Err(err(
                    "JWKS_URL",
                    "jwks-url",
                    format!("expected an https URL (plain http only on loopback), got {u:?}"),
                ))
            }
        })
        .transpose()?;
    if let Some(secret) = given(&a.jwt_secret)
        && secret.len() < 16
    {
        return Err(err(
            "JWT_SECRET",
            "jwt-secret",
            "must be at least 16 characters (32 or more random bytes recommended)",
        ));
    }
    Ok(JwtConfig {
        secret: given(&a.jwt_secret).map(String::from),
        public_key_pem,
        jwks_url,
        issuer: given(&a.jwt_issuer).map(String::from),
        audience: given(&a.jwt_audience).map(String::from),
    })
}

/// `DATABASE_URL`: SQLite (the default) or PostgreSQL.
fn database_url(a: &ServeArgs) -> Result<DatabaseUrl, ConfigError> {
    Ok(match given(&a.database_url) {
        None => DatabaseUrl::Sqlite(DEFAULT_DATABASE_URL.into()),
        Some(u) if u.starts_with("sqlite:") => {
            let setting = u
                .split(['?', '&'])
                .find_map(|p| p.strip_prefix("synchronous="));
            if setting
                .is_some_and(|v| !["full", "normal"].contains(&v.to_ascii_lowercase().as_str()))
            {
                return Err(err(
                    "DATABASE_URL",
                    "database-url",
                    "`synchronous=` must be full (the default: a 202 is on disk) or normal",
                ));
            }
            DatabaseUrl::Sqlite(u.into())
        }
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            DatabaseUrl::Postgres(u.into())
        }
        Some(u) => {
            return Err(err(
                "DATABASE_URL",
                "database-url",
                format!(
                    "expected sqlite://… or postgres://…, got {:?}",
                    redact_url(u)
                ),
            ));
        }
    })
}

/// `REDIS_URL`: `redis://` or `rediss://` (TLS).
fn redis_url(a: &ServeArgs) -> Result<Option<String>, ConfigError> {
    given(&a.redis_url)
        .map(|u| {
            if u.starts_with("redis://") || u.starts_with("rediss://") {
                Ok(u.to_string())
            } else {
                Err(err(
                    "REDIS_URL",
                    "redis-url",
                    "expected redis://… or rediss://…",
                ))
            }
        })
        .transpose()
}

/// `ADVERTISE_URL`: how the other nodes reach this one.
fn advertise_url(a: &ServeArgs) -> Result<Option<String>, ConfigError> {
    given(&a.advertise_url)
        .map(|u| match u.strip_prefix("http://") {
            Some(rest) if !rest.is_empty() && !rest.contains(['/', '?', '#']) => Ok(u.to_string()),
            _ => Err(err(
                "ADVERTISE_URL",
                "advertise-url",
                "expected http://host:port, as the other nodes reach this one",
            )),
        })
        .transpose()
}

/// `CORS_ORIGINS`: none, any (`*`), or a list of origins.
fn cors_origins(a: &ServeArgs) -> Result<CorsOrigins, ConfigError> {
    Ok(match list(&a.cors_origins).as_slice() {
        [] => CorsOrigins::None,
        [star] if star == "*" => CorsOrigins::Any,
        origins => {
            for o in origins {
                let valid = (o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && http::HeaderValue::from_str(o).is_ok();
                if !valid {
                    return Err(err(
                        "CORS_ORIGINS",
                        "cors-origins",
                        format!(
                            "{o:?} is not an origin like https://app.example.com (`*` must stand alone)"
                        ),
                    ));
                }
            }
            CorsOrigins::List(origins.to_vec())
        }
    })
}

/// `MAX_PAYLOAD_BYTES`: 1 KiB to 64 MiB.
fn max_payload_bytes(a: &ServeArgs) -> Result<usize, ConfigError> {
    let max_payload_bytes = number(
        &a.max_payload_bytes,
        "MAX_PAYLOAD_BYTES",
        "max-payload-bytes",
        131_072usize,
        "a byte count",
    )?;
    if !(1024..=64 << 20).contains(&max_payload_bytes) {
        return Err(err(
            "MAX_PAYLOAD_BYTES",
            "max-payload-bytes",
            "must be between 1024 and 67108864",
        ));
    }
    Ok(max_payload_bytes)
}

/// The plain WebSocket front's ping interval and idle timeout (at least one interval).
fn websocket_timers(a: &ServeArgs) -> Result<(Duration, Duration), ConfigError> {
    let ws_ping_interval = duration(
        &a.ws_ping_interval,
        ("WS_PING_INTERVAL", "ws-ping-interval"),
        Duration::from_secs(25),
        Duration::from_millis(100),
    )?;
    let ws_idle_timeout = duration(
        &a.ws_idle_timeout,
        ("WS_IDLE_TIMEOUT", "ws-idle-timeout"),
        Duration::from_secs(60),
        ws_ping_interval,
    )?;
    Ok((ws_ping_interval, ws_idle_timeout))
}

/// `LOG_FORMAT`, `LOG_COLOR` (and `NO_COLOR`), `LOG_LEVEL`.
fn logging(a: &ServeArgs) -> Result<(LogFormat, bool, String), ConfigError> {
    let log_format = match given(&a.log_format) {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(err(
                "LOG_FORMAT",
                "log-format",
                format!("expected pretty or json, got {other:?}"),
            ));
        }
    };
    let log_color = match given(&a.log_color) {
        None | Some("auto") => {
            use std::io::IsTerminal;
            std::io::stderr().is_terminal() && given(&a.no_color).is_none()
        }
        Some("always") => true,
        Some("never") => false,
        Some(other) => {
            return Err(err(
                "LOG_COLOR",
                "log-color",
                format!("expected auto, always or never, got {other:?}"),
            ));
        }
    };
    let log_level = given(&a.log_level).unwrap_or("info").to_string();
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(err(
            "LOG_LEVEL",
            "log-level",
            format!("{log_level:?} is not a log filter like info or livehub=debug"),
        ));
    }
    Ok((log_format, log_color, log_level))
}

/// `ENCRYPTION_KEY`: 32 bytes in hex.
fn encryption_key(a: &ServeArgs) -> Result<Option<[u8; 32]>, ConfigError> {
    given(&a.encryption_key)
        .map(|hex_key| {
            let mut key = [0u8; 32];
            hex::decode_to_slice(hex_key, &mut key)
                .map(|_| key)
                .map_err(|_| {
                    err(
                        "ENCRYPTION_KEY",
                        "encryption-key",
                        "expected 64 hex characters",
                    )
                })
        })
        .transpose()
}

/// `TRUSTED_PROXIES`: addresses and CIDRs.
fn trusted_proxies(a: &ServeArgs) -> Result<Vec<IpNet>, ConfigError> {
    list(&a.trusted_proxies)
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    err(
                        "TRUSTED_PROXIES",
                        "trusted-proxies",
                        format!("{p:?} is not an IP address or CIDR"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
}

/// `MAX_ROOMS_PER_SOCKET`: at least 8.
fn max_rooms_per_socket(a: &ServeArgs) -> Result<usize, ConfigError> {
    let max_rooms_per_socket = number(
        &a.max_rooms_per_socket,
        "MAX_ROOMS_PER_SOCKET",
        "max-rooms-per-socket",
        100usize,
        "a whole number",
    )?;
    if max_rooms_per_socket < 8 {
        return Err(err(
            "MAX_ROOMS_PER_SOCKET",
            "max-rooms-per-socket",
            "must be at least 8 (the automatic rooms need room)",
        ));
    }
    Ok(max_rooms_per_socket)
}

/// `REPLAY_LIMIT`: at least 1.
fn replay_limit(a: &ServeArgs) -> Result<usize, ConfigError> {
    let replay_limit = number(
        &a.replay_limit,
        "REPLAY_LIMIT",
        "replay-limit",
        50_000usize,
        "a whole number",
    )?;
    if replay_limit == 0 {
        return Err(err("REPLAY_LIMIT", "replay-limit", "must be at least 1"));
    }
    Ok(replay_limit)
}

/// `NODE_ID`: printable ASCII, or made up.
fn node_id(a: &ServeArgs) -> Result<String, ConfigError> {
    Ok(match given(&a.node_id) {
        Some(id) if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_string(),
        Some(_) => {
            return Err(err(
                "NODE_ID",
                "node-id",
                "must be 1-64 printable ASCII characters",
            ));
        }
        None => default_node_id(),
    })
}

/// `EVENT_LOG`: on or off.
fn event_log(a: &ServeArgs) -> Result<bool, ConfigError> {
    Ok(match given(&a.event_log) {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(err(
                "EVENT_LOG",
                "event-log",
                format!("expected on or off, got {other:?}"),
            ));
        }
    })
}

/// `CLUSTER_NAME`: the prefix of the cluster's Redis keys and channels.
fn cluster_name(a: &ServeArgs) -> Result<String, ConfigError> {
    Ok(match given(&a.cluster_name) {
        None => "livehub".to_string(),
        Some(n)
            if n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            n.to_string()
        }
        Some(n) => {
            return Err(err(
                "CLUSTER_NAME",
                "cluster-name",
                format!("{n:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."),
            ));
        }
    })
}

/// `DEMO_DIR`, or in dev mode the built demo when there is one.
fn demo_dir(a: &ServeArgs, dev: bool) -> Result<Option<PathBuf>, ConfigError> {
    Ok(match given(&a.demo_dir) {
        Some(d) => {
            let path = PathBuf::from(d);
            if !path.join("index.html").is_file() {
                return Err(err(
                    "DEMO_DIR",
                    "demo-dir",
                    format!("{d} has no index.html (build it with `npm run build` in web-demo/)"),
                ));
            }
            Some(path)
        }
        None if dev => {
            Some(PathBuf::from("web-demo/dist")).filter(|p| p.join("index.html").is_file())
        }
        None => None,
    })
}

/// `ADMIN_UI_DIR`, or the built Admin UI when there is one.
fn admin_ui_dir(a: &ServeArgs) -> Result<Option<PathBuf>, ConfigError> {
    Ok(match given(&a.admin_ui_dir) {
        Some(d) => {
            let path = PathBuf::from(d);
            if !path.join("index.html").is_file() {
                return Err(err(
                    "ADMIN_UI_DIR",
                    "admin-ui-dir",
                    format!("{d} has no index.html (build web-demo/: `npm ci && npm run build`)"),
                ));
            }
            Some(path)
        }
        None => {
            Some(PathBuf::from("web-demo/dist/admin")).filter(|p| p.join("index.html").is_file())
        }
    })
}

/// The CA certificate of `REDIS_CA_FILE`: only with a `rediss://` URL, and
/// only a PEM certificate (a typo'd path fails here, not at the first connect).
fn redis_ca(file: Option<&str>, url: Option<&str>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = file.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let problem = |why: String| err("REDIS_CA_FILE", "redis-ca-file", why);
    if !url.is_some_and(|u| u.starts_with("rediss://")) {
        return Err(problem("needs REDIS_URL=rediss://… (TLS)".into()));
    }
    let pem = std::fs::read(path).map_err(|e| problem(format!("{path}: {e}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(problem(format!("{path} is not a PEM certificate")));
    }
    Ok(Some(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ServeArgs {
        ServeArgs {
            jwt_secret: Some("a-long-enough-test-secret".into()),
            ..Default::default()
        }
    }

    fn fails(a: ServeArgs) -> ConfigError {
        Config::from_args(&a).expect_err("should be refused")
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_args(&base()).unwrap();
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.port, 3000);
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite("sqlite://livehub.db".into())
        );
        assert_eq!(c.max_payload_bytes, 131_072);
        assert_eq!(c.max_connections_per_ip, 0);
        assert_eq!(c.rate_limit_per_minute, 120);
        assert_eq!(c.event_retention, Duration::from_secs(86_400));
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.presence_broadcast_limit, 200);
        assert_eq!(c.cors_origins, CorsOrigins::None);
        assert!(c.event_log);
        assert!(!c.dev);
    }

    #[test]
    fn each_malformed_value_names_its_variable() {
        type Mutation = fn(&mut ServeArgs);
        let cases: Vec<(Mutation, &str)> = vec![
            (|a| a.port = Some("http".into()), "PORT"),
            (|a| a.port = Some("70000".into()), "PORT"),
            (|a| a.host = Some("not an ip".into()), "HOST"),
            (
                |a| a.database_url = Some("mysql://x".into()),
                "DATABASE_URL",
            ),
            (|a| a.redis_url = Some("http://x".into()), "REDIS_URL"),
            (
                |a| a.advertise_url = Some("https://x:1".into()),
                "ADVERTISE_URL",
            ),
            (
                |a| a.advertise_url = Some("http://x:1/path".into()),
                "ADVERTISE_URL",
            ),
            (
                |a| {
                    a.redis_url = Some("redis://127.0.0.1:6379".into());
                    a.redis_ca_file = Some("/etc/hostname".into());
                },
                "REDIS_CA_FILE",
            ),
            (
                |a| {
                    a.redis_url = Some("rediss://127.0.0.1:6379".into());
                    a.redis_ca_file = Some("/etc/hostname".into());
                },
                "REDIS_CA_FILE",
            ),
            (
                |a| {
                    a.redis_url = Some("rediss://127.0.0.1:6379".into());
                    a.redis_ca_file = Some("/nonexistent.pem".into());
                },
                "REDIS_CA_FILE",
            ),
            (
                |a| a.max_payload_bytes = Some("big".into()),
                "MAX_PAYLOAD_BYTES",
            ),
            (
                |a| a.max_payload_bytes = Some("10".into()),
                "MAX_PAYLOAD_BYTES",
            ),
            (
                |a| a.max_connections_per_ip = Some("-1".into()),
                "MAX_CONNECTIONS_PER_IP",
            ),
            (
                |a| a.rate_limit_per_minute = Some("fast".into()),
                "RATE_LIMIT_PER_MINUTE",
            ),
            (
                |a| a.event_retention = Some("forever".into()),
                "EVENT_RETENTION",
            ),
            (|a| a.log_format = Some("xml".into()), "LOG_FORMAT"),
            (|a| a.log_color = Some("sometimes".into()), "LOG_COLOR"),
            (|a| a.max_connections = Some("-1".into()), "MAX_CONNECTIONS"),
            (
                |a| a.admin_username = Some("ops".into()),
                "ADMIN_PASSWORD_HASH",
            ),
            (
                |a| {
                    a.admin_username = Some("ops".into());
                    a.admin_password_hash = Some("plaintext".into());
                },
                "ADMIN_PASSWORD_HASH",
            ),
            (
                |a| a.admin_ui_dir = Some("/nonexistent".into()),
                "ADMIN_UI_DIR",
            ),
            (|a| a.log_level = Some("[[[".into()), "LOG_LEVEL"),
            (|a| a.encryption_key = Some("abcd".into()), "ENCRYPTION_KEY"),
            (
                |a| a.cors_origins = Some("example.com".into()),
                "CORS_ORIGINS",
            ),
            (
                |a| a.cors_origins = Some("*,https://a.example".into()),
                "CORS_ORIGINS",
            ),
            (
                |a| a.trusted_proxies = Some("10.0.0.0/99".into()),
                "TRUSTED_PROXIES",
            ),
            (|a| a.jwks_url = Some("ftp://keys".into()), "JWKS_URL"),
            (
                |a| a.jwt_public_key_file = Some("/nonexistent.pem".into()),
                "JWT_PUBLIC_KEY_FILE",
            ),
            (|a| a.jwt_secret = Some("short".into()), "JWT_SECRET"),
            (|a| a.event_log = Some("maybe".into()), "EVENT_LOG"),
            (|a| a.dev = Some("perhaps".into()), "LIVEHUB_DEV"),
            (
                |a| a.max_rooms_per_socket = Some("2".into()),
                "MAX_ROOMS_PER_SOCKET",
            ),
        ];
        for (mutate, var) in cases {
            let mut a = base();
            mutate(&mut a);
            let e = fails(a);
            assert_eq!(e.var, var, "{e}");
            let line = e.to_string();
            assert!(!line.contains('\n'), "one line: {line}");
            assert!(line.contains(var), "{line}");
        }
    }

    #[test]
    fn refuses_to_start_without_token_verification_unless_dev() {
        let e = fails(ServeArgs::default());
        assert_eq!(e.var, "JWT_SECRET");
        let dev = ServeArgs {
            dev: Some("true".into()),
            ..Default::default()
        };
        assert!(Config::from_args(&dev).unwrap().dev);
    }

    #[test]
    fn cluster_on_sqlite_is_refused_unless_allowed() {
        let mut a = base();
        a.redis_url = Some("redis://127.0.0.1:6379".into());
        assert_eq!(fails(a.clone()).var, "REDIS_URL");
        a.allow_sqlite_cluster = Some("true".into());
        assert!(Config::from_args(&a).is_ok());
        a.allow_sqlite_cluster = None;
        a.database_url = Some("postgres://localhost/test".into());
        assert!(Config::from_args(&a).is_ok());
    }

    #[test]
    fn lists_and_durations_parse() {
        let mut a = base();
        a.api_keys = Some(" k1, ,k2 ".into());
        a.cors_origins = Some("https://a.example, http://localhost:5173".into());
        a.event_retention = Some("90m".into());
        a.trusted_proxies = Some("10.0.0.0/8, 127.0.0.1".into());
        a.encryption_key = Some("00".repeat(32));
        let c = Config::from_args(&a).unwrap();
        assert_eq!(c.api_keys, vec!["k1", "k2"]);
        assert_eq!(
            c.cors_origins,
            CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:5173".into()
            ])
        );
        assert_eq!(c.event_retention, Duration::from_secs(5400));
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.encryption_key, Some([0u8; 32]));
    }

    #[test]
    fn urls_are_redacted_in_messages() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/live"),
            "postgres://app:***@db:5432/live"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}

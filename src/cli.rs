//! The command line: `livehub [serve]`, `livehub token`, `livehub migrate`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat, ServeArgs};

/// livehub — a Socket.IO-compatible real-time server with a durable event log.
#[derive(Debug, Parser)]
#[command(name = "livehub", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve(ServeArgs),
    /// Print a signed development token (HS256, with JWT_SECRET).
    Token(TokenArgs),
    /// Run the database migrations and exit.
    Migrate(ServeArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// User id (`sub`).
    #[arg(long)]
    sub: String,
    /// Branch (`branchId`).
    #[arg(long)]
    branch: Option<String>,
    /// Role.
    #[arg(long)]
    role: Option<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. `1h`, `30m`.
    #[arg(long, default_value = "12h")]
    ttl: String,
    /// The HS256 secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: String,
}

/// Parses the command line and runs it. Returns the process exit code.
pub fn main() -> i32 {
    crate::memory::no_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(t)) => token(t),
        Some(Command::Migrate(args)) => with_config(&args, |config| async move {
            let store = crate::store::Store::connect(&config.database_url).await?;
            store.close().await;
            let database = crate::config::redact_url(config.database_url.as_str());
            say(
                config.log_format,
                &format!("migrations applied to {database}"),
                serde_json::Map::new(),
            );
            Ok(())
        }),
        Some(Command::Serve(args)) => with_config(&args, crate::app::run),
        None => with_config(&cli.serve, crate::app::run),
    }
}

fn token(t: TokenArgs) -> i32 {
    let ttl: Duration = match humantime::parse_duration(&t.ttl) {
        Ok(d) => d,
        Err(_) => {
            eprintln!(
                "livehub: invalid --ttl: expected a duration like 1h, got {:?}",
                t.ttl
            );
            return 2;
        }
    };
    let token = crate::auth::mint_dev_token(
        &t.secret,
        &t.sub,
        t.branch.as_deref(),
        t.role.as_deref(),
        t.name.as_deref(),
        ttl.as_secs(),
    );
    println!("{token}");
    0
}

fn with_config<F, Fut>(args: &ServeArgs, run: F) -> i32
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let json = args.log_format.as_deref() == Some("json");
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            fatal(json, &e.to_string());
            return 2;
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::memory::worker_parked)
        .event_interval(TASKS_BETWEEN_IO_POLLS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            fatal(json, &format!("cannot start the async runtime: {e}"));
            return 1;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => 0,
        Err(e) => {
            // One line, like configuration errors, with the causes chained.
            fatal(json, &format!("{e:#}"));
            1
        }
    }
}

/// Tasks a busy runtime worker runs between two polls of the I/O driver
/// (tokio's default is 61). The log writer's hand-offs (`hub/handoff.rs`) and
/// the sockets' reads come in through that poll. Under a fan-out the workers
/// are always busy, so polling more often answers emits and starts deliveries
/// sooner: at 5,000 sockets × 50 emits/s the p50 was about 2 ms lower in five
/// interleaved rounds out of five, with the same CPU per delivery
/// (`docs/fanout-profile.md`).
const TASKS_BETWEEN_IO_POLLS: u32 = 15;

/// Why livehub cannot run, on stderr: one line, JSON with `LOG_FORMAT=json`.
fn fatal(json: bool, message: &str) {
    if json {
        eprintln!("{}", json_line("ERROR", message, serde_json::Map::new()));
    } else {
        eprintln!("livehub: {message}");
    }
}

/// A line on stdout: as given, or a JSON object with `LOG_FORMAT=json`.
pub(crate) fn say(
    format: LogFormat,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) {
    match format {
        LogFormat::Json => println!("{}", json_line("INFO", message, fields)),
        LogFormat::Pretty => println!("{message}"),
    }
}

/// A log line shaped like the JSON log's own (`timestamp`, `level`,
/// `message`, `target`, then `fields`), for what livehub prints itself.
pub(crate) fn json_line(
    level: &str,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut line = serde_json::Map::new();
    line.insert(
        "timestamp".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    line.insert("level".into(), level.into());
    line.insert("message".into(), message.into());
    line.insert("target".into(), "livehub".into());
    line.extend(fields);
    serde_json::Value::Object(line).to_string()
}

/// Crates whose debug output dumps whole packets — handshake `auth` tokens and
/// `auth:refresh` tokens included. They log at `info` at most, whatever
/// `LOG_LEVEL` says: no token is ever written to the logs.
const PACKET_DUMPERS: &[&str] = &["socketioxide", "engineioxide", "socketioxide_redis"];

/// `LOG_LEVEL` with the packet dumpers capped at `info`: a directive naming
/// one of them is lowered to `info`, and a default level above `info` gets a
/// cap per crate. The caps only ever lower a level. (Added under `warn`, they
/// would raise these crates to `info`, whose spans — one per connect and per
/// disconnect, with formatted fields — were about 3 % of a connect storm's
/// instructions.)
pub fn log_filter(level: &str) -> String {
    let mut directives = Vec::new();
    let mut verbose_default = false;
    let mut named: Vec<&str> = Vec::new();
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let target = d.split(['=', '[']).next().unwrap_or(d);
        let crate_name = target.split("::").next().unwrap_or(target);
        if PACKET_DUMPERS.contains(&crate_name) {
            if target == crate_name {
                named.push(crate_name);
            }
            directives.push(capped(d));
        } else {
            verbose_default |= matches!(d, "debug" | "trace");
            directives.push(d.to_string());
        }
    }
    if verbose_default {
        let caps = PACKET_DUMPERS.iter().filter(|c| !named.contains(c));
        directives.extend(caps.map(|c| format!("{c}=info")));
    }
    directives.join(",")
}

/// A directive for a packet dumper, at `info` at most (a bare target means
/// every level).
fn capped(directive: &str) -> String {
    let (target, level) = directive.rsplit_once('=').unwrap_or((directive, "trace"));
    match level {
        "off" | "error" | "warn" | "info" => directive.to_string(),
        _ => format!("{target}=info"),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(log_filter(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(config.log_color);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn packet_dumpers_never_log_below_info() {
        assert_eq!(
            log_filter("debug"),
            "debug,socketioxide=info,engineioxide=info,socketioxide_redis=info"
        );
        let f = log_filter("livehub=trace, socketioxide=trace,engineioxide::transport=debug");
        assert_eq!(
            f, "livehub=trace,socketioxide=info,engineioxide::transport=info",
            "each directive naming a dumper is lowered to info"
        );
        assert_eq!(log_filter("info,socketioxide"), "info,socketioxide=info");
    }

    #[test]
    fn caps_never_raise_a_level() {
        assert_eq!(
            log_filter("warn"),
            "warn",
            "no socketioxide info under warn"
        );
        assert_eq!(log_filter("error,livehub=debug"), "error,livehub=debug");
        assert_eq!(
            log_filter("warn,engineioxide=error"),
            "warn,engineioxide=error",
            "a quieter level asked for a dumper stays"
        );
        assert_eq!(
            log_filter("trace,socketioxide=warn"),
            "trace,socketioxide=warn,engineioxide=info,socketioxide_redis=info"
        );
        assert_eq!(
            log_filter("debug,engineioxide::transport=warn,socketioxide_redis=off"),
            "debug,engineioxide::transport=warn,socketioxide_redis=off,socketioxide=info,engineioxide=info",
            "a module's directive leaves its crate capped"
        );
    }
}

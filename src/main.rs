//! The `rollstore` command: runs the server and the tools that work on a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rollstore::app::{Config, Register};
use rollstore::domain::Policy;
use tracing_subscriber::EnvFilter;

/// rollstore — the event store of the poverty-alleviation household register (建档立卡) and its
/// dynamic adjustment (动态调整).
///
/// Government systems append immutable events (identify, adjust, exit, relapse) over gRPC;
/// every write is durable on disk before it is acknowledged, and the log is a SHA-256 hash
/// chain that anyone can verify.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server on a data directory.
    ///
    /// Serves rollstore.v1 Registry, Rolls and AuditLog, plus grpc.health.v1.Health and server
    /// reflection. Stops gracefully on SIGINT or SIGTERM: it stops accepting, finishes the
    /// calls in flight, makes the last commit durable, and exits 0.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The data directory (created if missing). Only one server may use it at a time.
    #[arg(long, default_value = "./rollstore-data", env = "ROLLSTORE_DATA")]
    data: PathBuf,
    /// The address to listen on. Use port 0 to let the system choose.
    #[arg(long, default_value = "127.0.0.1:50051", env = "ROLLSTORE_LISTEN")]
    listen: SocketAddr,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Args)]
struct PolicyArgs {
    /// Override or add a year's poverty line, as YEAR=YUAN (repeatable). The built-in lines
    /// are 2014=2800 2015=2855 2016=2952 2017=2952 2018=2995 2019=3218 2020=4000; a year with
    /// no line of its own uses the latest year before it.
    #[arg(long = "poverty-line", value_name = "YEAR=YUAN", value_parser = parse_line)]
    poverty_lines: Vec<(i32, i64)>,
    /// Allow a household to be lifted out in the year it was identified (Shaanxi's rule
    /// 当年识别当年不退出 forbids it, and so does rollstore by default).
    #[arg(long)]
    allow_same_year_exit: bool,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        let mut policy = Policy::default();
        policy
            .poverty_lines
            .extend(self.poverty_lines.iter().copied());
        policy.forbid_same_year_exit = !self.allow_same_year_exit;
        policy
    }
}

fn parse_line(text: &str) -> Result<(i32, i64), String> {
    let (year, yuan) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not YEAR=YUAN, e.g. 2020=4000"))?;
    let year = year
        .trim()
        .parse()
        .map_err(|_| format!("'{year}' is not a year"))?;
    let yuan: i64 = yuan
        .trim()
        .parse()
        .map_err(|_| format!("'{yuan}' is not a whole number of yuan"))?;
    if yuan <= 0 {
        return Err(format!("a poverty line must be positive, not {yuan}"));
    }
    Ok((year, yuan))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config {
        policy: args.policy.policy(),
        ..Config::default()
    };
    let started = std::time::Instant::now();
    let register = Register::open(&args.data, config)
        .map_err(|e| format!("cannot open the store in {}: {e}", args.data.display()))?;
    let head = register.head();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    tracing::info!(
        data = %args.data.display(),
        %address,
        head_seq = head.seq,
        opened_in_ms = started.elapsed().as_millis() as u64,
        "rollstore is serving"
    );
    rollstore::api::serve(listener, register, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("rollstore stopped; every acknowledged write is on disk");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

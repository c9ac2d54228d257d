//! The `rollstore` command: runs the server and the tools that work on a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rollstore::app::{Config, Register};
use rollstore::domain::Policy;
use tracing_subscriber::EnvFilter;

/// mimalloc, not glibc's malloc: the writer thread allocates what the gRPC threads free, and
/// glibc's per-arena locks showed up as futex wake-ups and `malloc_consolidate` in the profile
/// of a batch load (~15% of the writer's time). See `rollstore::heap`.
#[global_allocator]
static ALLOCATOR: rollstore::heap::Allocator = rollstore::heap::Allocator;

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
    /// The Baota District demo: serve a local directory, load it with the district's 2014–2019
    /// register (generated, deterministic) through the API, and answer the seed's questions.
    ///
    /// The directory is reused if it already holds the data set. After the report the server
    /// keeps running, so that you can query it (grpcurl, any gRPC client); Ctrl-C stops it.
    Demo(DemoArgs),
    /// Check a stopped store: the hash chain, the stream index and every projection against a
    /// replay of the log. Exits 0 only if all agree.
    Verify(DataArgs),
    /// Write every event, with its exact body and hash, one JSON object per line.
    ///
    /// This is the backup and migration path: sled's on-disk format is not stable across
    /// versions, an export is. Run it on a stopped store.
    Export {
        #[command(flatten)]
        data: DataArgs,
        /// The file to write (JSON lines).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load an export into a new, empty data directory, re-verifying the chain line by line.
    /// A broken file is refused with its line number, and nothing is kept.
    Import {
        #[command(flatten)]
        data: DataArgs,
        /// The export to read.
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Drop the projections of a stopped store and rebuild them from the log.
    Rebuild(DataArgs),
    /// Manage the principals file: add a principal (printing its new token once), remove one.
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// Load a running server with valid commands from many concurrent clients, and report
    /// events/s, requests/s and latency percentiles (HDR histogram).
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum PrincipalCommand {
    /// Add a principal (or replace one of the same name) with a new random token, printed once.
    /// Only the token's SHA-256 is stored. Send SIGHUP to a running server to take it in.
    Add {
        /// The principal's name, recorded as the actor of its writes.
        name: String,
        /// admin: everything; auditor: reads everything, writes nothing; clerk: reads and writes
        /// within its scopes; statistician: GetStats and GetFlows only.
        #[arg(long, value_enum)]
        role: rollstore::api::auth::Role,
        /// A region prefix the principal is limited to (repeatable; clerks need one).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Mask ID numbers and names in everything this principal reads.
        #[arg(long)]
        no_pii: bool,
        /// The principals file (created if missing).
        #[arg(long, default_value = "./principals.json")]
        file: PathBuf,
    },
    /// Remove a principal: its token stops working at the server's next SIGHUP.
    Remove {
        name: String,
        #[arg(long, default_value = "./principals.json")]
        file: PathBuf,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// The server to load.
    #[arg(long, default_value = "127.0.0.1:50051")]
    address: String,
    /// Concurrent clients, each on its own connection unless --connections says otherwise.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Share this many HTTP/2 connections among the clients, as the concurrent calls of one
    /// process on one gRPC channel do (from 1 to --concurrency; by default one per client).
    /// Several calls then travel per read and write, so each costs less CPU on both ends.
    #[arg(long)]
    connections: Option<usize>,
    /// Events per request: 1 sends Identify/Adjust/Exit/Relapse, more sends AppendBatch (not
    /// with --mix head).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many requests in all (if it comes before --seconds).
    #[arg(long)]
    requests: Option<u64>,
    /// Which commands to send.
    #[arg(long, value_enum, default_value_t = rollstore::loadgen::Mix::Identify)]
    mix: rollstore::loadgen::Mix,
    /// With --mix mixed: stop identifying once this many households exist, and keep changing
    /// them (to build a store of a given shape: N households, many events each).
    #[arg(long)]
    households: Option<u64>,
    /// Give every command a request_id, as a system that retries safely does (the server then
    /// keeps one request index entry per event).
    #[arg(long)]
    request_ids: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The random seed of the command mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct DataArgs {
    /// The data directory.
    #[arg(long, default_value = "./rollstore-data", env = "ROLLSTORE_DATA")]
    data: PathBuf,
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress(what: &str, total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>8} [{bar:40}] {pos}/{len} events ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn verify(args: DataArgs) -> Result<(), String> {
    let bars: std::cell::RefCell<Option<(String, indicatif::ProgressBar)>> = Default::default();
    let report = rollstore::app::audit::verify_store(&args.data, &|stage, seq, total| {
        let mut bars = bars.borrow_mut();
        if bars.as_ref().is_none_or(|(s, _)| s != stage) {
            if let Some((_, bar)) = bars.take() {
                bar.finish();
            }
            *bars = Some((stage.to_owned(), progress(stage, total)));
        }
        if let Some((_, bar)) = bars.as_ref() {
            bar.set_position(seq);
        }
    })
    .map_err(|e| format!("cannot verify {}: {e}", args.data.display()))?;
    if let Some((_, bar)) = bars.borrow_mut().take() {
        bar.finish();
    }
    let chain = &report.chain;
    match &chain.broken {
        None => println!(
            "chain: ok, {} events, head {} {}",
            chain.checked,
            chain.verified.seq,
            hex::encode(chain.verified.hash)
        ),
        Some((seq, why)) => println!(
            "chain: BROKEN at seq {seq}: {why} (verified up to seq {})",
            chain.verified.seq
        ),
    }
    if chain.broken.is_none() {
        match &report.projection_mismatch {
            None => println!(
                "projections: ok ({}), equal to a replay of the log",
                report.loaded
            ),
            Some(why) => println!("projections: MISMATCH: {why}; run `rollstore rebuild`"),
        }
    }
    if report.ok() {
        Ok(())
    } else {
        Err("the store does not verify; restore it from an export (rollstore import) or investigate the seq named above".into())
    }
}

fn export(args: DataArgs, out: PathBuf) -> Result<(), String> {
    let file =
        std::fs::File::create(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let bar = progress("export", 0);
    let head = rollstore::app::audit::export(&args.data, &mut writer, &|seq, total| {
        bar.set_length(total);
        bar.set_position(seq);
    })
    .map_err(|e| format!("cannot export {}: {e}", args.data.display()))?;
    writer
        .into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", out.display()))?;
    bar.finish();
    println!(
        "exported {} events to {}; head hash {}",
        head.seq,
        out.display(),
        hex::encode(head.hash)
    );
    Ok(())
}

fn import(args: DataArgs, input: PathBuf) -> Result<(), String> {
    let file =
        std::fs::File::open(&input).map_err(|e| format!("cannot open {}: {e}", input.display()))?;
    let total = std::io::BufRead::lines(std::io::BufReader::new(
        std::fs::File::open(&input).map_err(|e| e.to_string())?,
    ))
    .count() as u64;
    let bar = progress("import", total);
    let mut reader = std::io::BufReader::new(file);
    let head =
        rollstore::app::audit::import(&args.data, &mut reader, &|line| bar.set_position(line))
            .map_err(|e| format!("refused {}: {e}", input.display()))?;
    bar.finish();
    println!(
        "imported {} events into {}; head hash {}",
        head.seq,
        args.data.display(),
        hex::encode(head.hash)
    );
    Ok(())
}

fn rebuild(args: DataArgs) -> Result<(), String> {
    let bar = progress("rebuild", 0);
    let head = rollstore::app::audit::rebuild_store(&args.data, &|seq, total| {
        bar.set_length(total);
        bar.set_position(seq);
    })
    .map_err(|e| format!("cannot rebuild {}: {e}", args.data.display()))?;
    bar.finish();
    println!(
        "rebuilt the projections of {} from {} events; checkpoint written",
        args.data.display(),
        head.seq
    );
    Ok(())
}

#[derive(Args)]
struct DemoArgs {
    /// The data directory for the demo (created and loaded if missing or empty).
    #[arg(long, default_value = "./rollstore-demo")]
    data: PathBuf,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Stop the server after the report instead of serving on.
    #[arg(long)]
    exit: bool,
    /// The generator's seed (the seed document's figures hold for every seed).
    #[arg(long, default_value_t = rollstore::demo::baota::DEFAULT_SEED)]
    seed: u64,
}

#[derive(Args)]
struct ServeArgs {
    /// The data directory (created if missing). Only one server may use it at a time.
    #[arg(long, default_value = "./rollstore-data", env = "ROLLSTORE_DATA")]
    data: PathBuf,
    /// The address to listen on. Use port 0 to let the system choose.
    #[arg(long, default_value = "127.0.0.1:50051", env = "ROLLSTORE_LISTEN")]
    listen: SocketAddr,
    /// Write a checkpoint of the whole roll (the projections) in the background after this
    /// many events, or after as many events as the roll has households if it has more (see
    /// --fixed-checkpoint-spacing). Each is 1–7 s of background work at 10M events (writes
    /// wait only for one piece of it at a time), and writes made while one runs are noted in
    /// memory until it ends: with 500,000, a bulk load of 10M events with request_ids peaked
    /// at 1,069 MiB and ran at 58,601/s, against 973–1,020 MiB and 66,000–74,000/s with the
    /// default.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Between whole checkpoints, write a delta on the last one after this many events: only
    /// the households and request entries that changed since it (and the smaller indexes
    /// whole), so a restart, after a crash too, replays at most about this many events
    /// (events replayed at a start-up count toward the next). A restart decodes the
    /// checkpoint and the delta (1–3 s at 10M events, beside sled's open, which
    /// --reopen-log-every bounds), then replays the tail at ~3 µs an event. 0: no deltas, and
    /// a restart replays up to --checkpoint-every events. When whole checkpoints are spaced
    /// by the roll's households, deltas are at least a quarter of that apart.
    #[arg(long, default_value_t = 250_000)]
    delta_every: u64,
    /// Keep whole checkpoints and deltas exactly --checkpoint-every and --delta-every events
    /// apart however large the roll. By default a roll of more households than
    /// --checkpoint-every has a whole checkpoint only every as many events as it has
    /// households, and deltas at least a quarter of that apart: a whole checkpoint costs the
    /// whole roll (4–7 s of CPU at 3M households), and every 1M events they would run back to
    /// back on a national roll. The price is a longer replay after a crash on such a roll (up
    /// to ~750,000 events at 3M households).
    #[arg(long)]
    fixed_checkpoint_spacing: bool,
    /// Close and reopen the log's database (sled) after the first background checkpoint once
    /// this many events were written since it last opened; 0: never. sled writes its snapshot
    /// only when it opens, and a start-up after a crash re-reads everything written since
    /// the last one: 2.3–3.8 s after 10M events from an empty store, and more the longer the
    /// server has run; 0.25–0.56 s with the default. Writes wait while it reopens: 0.7–0.9 s
    /// every 4M events (`opened_ms` in the server's log); and for a few seconds after each,
    /// a large load's RSS runs up to ~100 MiB higher, which is what sets the loading peak
    /// (README, *Performance*).
    #[arg(long, default_value_t = 4_000_000)]
    reopen_log_every: u64,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    security: SecurityArgs,
}

/// Who may connect and what they may do. Without --principals the server authenticates no
/// one and therefore binds only loopback addresses.
#[derive(Args)]
struct SecurityArgs {
    /// The principals file (JSON; see `rollstore principal add`): names, token hashes, roles
    /// and region scopes. Re-read on SIGHUP without dropping connections.
    #[arg(long, env = "ROLLSTORE_PRINCIPALS")]
    principals: Option<PathBuf>,
    /// The server's certificate chain (PEM), to serve TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A CA (PEM) whose client certificates are required (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Allow a non-loopback address without authentication, or with tokens in clear text.
    #[arg(long)]
    insecure: bool,
}

impl SecurityArgs {
    fn options(
        &self,
        listen: SocketAddr,
        limits: rollstore::api::Limits,
    ) -> Result<rollstore::api::Options, String> {
        use rollstore::api::auth::{Authentication, Principals};
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
                let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
                if let Some(ca) = &self.tls_client_ca {
                    config =
                        config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
                }
                Some(config)
            }
            _ => None,
        };
        let auth = match &self.principals {
            Some(path) => Authentication::On(Principals::load(path).map_err(|e| e.to_string())?),
            None => Authentication::Off,
        };
        let loopback = listen.ip().is_loopback();
        match (&auth, tls.is_some(), loopback, self.insecure) {
            (Authentication::Off, _, false, false) => {
                return Err(format!(
                    "refusing to serve {listen} without authentication: give --principals FILE (and TLS), bind a loopback address, or pass --insecure"
                ))
            }
            (Authentication::On(_), false, false, false) => {
                return Err(format!(
                    "refusing to serve {listen} without TLS: bearer tokens would cross the network in clear; give --tls-cert/--tls-key, or pass --insecure"
                ))
            }
            (Authentication::Off, _, true, _) => tracing::warn!(
                "authentication is off (no --principals): every caller may do everything; serving loopback only"
            ),
            _ => {}
        }
        Ok(rollstore::api::Options { limits, auth, tls })
    }
}

/// What the server accepts; each refusal names the limit it hit.
#[derive(Args)]
struct LimitArgs {
    /// The largest request message, in bytes (larger: RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    max_request_bytes: usize,
    /// The most commands in one AppendBatch (more: RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 10_000)]
    max_batch: usize,
    /// The most members a household may have (more: INVALID_ARGUMENT).
    #[arg(long, default_value_t = 30)]
    max_members: usize,
    /// The longest free-text field (names, notes, document references), in characters.
    #[arg(long, default_value_t = 500)]
    max_text: usize,
    /// The most server streams (subscriptions, rosters, log reads) open at once.
    #[arg(long, default_value_t = 1024)]
    max_streams: usize,
    /// The most bytes of write requests, as sent, that the server decodes and commits at once.
    /// A decoded write takes many times its size in memory until it is answered; writes beyond
    /// this wait, read but not decoded, in arrival order. One larger than this runs alone.
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    max_write_bytes_in_flight: usize,
}

impl LimitArgs {
    fn api(&self) -> rollstore::api::Limits {
        rollstore::api::Limits {
            max_request_bytes: self.max_request_bytes,
            max_streams: self.max_streams,
            max_write_bytes_in_flight: self.max_write_bytes_in_flight,
        }
    }
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

/// Keeps this process off transparent huge pages. mimalloc asks the kernel for them on its
/// arenas (`MADV_HUGEPAGE`), and then each 2 MiB region it touches counts whole in RSS and is
/// zeroed whole on its first touch, however little of it is used. Without them, at 1M events
/// (`benches/rss-during-load.sh`, the mixed load with request_ids) the loading peak was
/// 234–241 MiB instead of 287–289 and the restarted server 88–103 MiB instead of 143–153,
/// batch throughput the same within noise and its p99 lower; at 10M events with request_ids,
/// 1,021 and 1,025 MiB loading against 1,122 and 1,263 before. mimalloc does the same itself when
/// `MIMALLOC_ALLOW_THP=0` is in its environment at start, which a program cannot arrange for
/// itself; the flag applies to every later fault, in regions advised before it too.
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integers only and sets one flag on this process.
        let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
        if refused {
            // A kernel without it (before 3.15) serves the same, with more memory.
            tracing::debug!("the kernel did not take PR_SET_THP_DISABLE");
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    without_transparent_huge_pages();
    // A panic (a bug, or sled on a damaged file) is logged as one line, not a stack trace;
    // the caller turns what it can into an error that says what to do.
    std::panic::set_hook(Box::new(|info| tracing::error!("internal error: {info}")));
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
        Command::Demo(args) => runtime.block_on(demo(args)),
        Command::Verify(args) => verify(args),
        Command::Export { data, out } => export(data, out),
        Command::Import { data, input } => import(data, input),
        Command::Rebuild(args) => rebuild(args),
        Command::Bench(args) => runtime.block_on(bench(args)),
        Command::Principal(command) => principal(command),
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
    let mut policy = args.policy.policy();
    policy.max_members = args.limits.max_members;
    policy.max_text_chars = args.limits.max_text;
    let config = Config {
        policy,
        max_batch: args.limits.max_batch,
        checkpoint_every: args.checkpoint_every,
        delta_every: args.delta_every,
        checkpoints_spaced_by_roll: !args.fixed_checkpoint_spacing,
        reopen_log_every: args.reopen_log_every,
        ..Config::default()
    };
    let started = std::time::Instant::now();
    let register = Register::open(&args.data, config).map_err(|e| open_failed(&args.data, &e))?;
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
    rollstore::heap::report("once serving");
    let options = args.security.options(args.listen, args.limits.api())?;
    if let (rollstore::api::auth::Authentication::On(principals), Some(path)) =
        (&options.auth, args.security.principals.clone())
    {
        reload_on_hangup(principals.clone(), path);
    }
    rollstore::api::serve_with(listener, register, options, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("rollstore stopped; every acknowledged write is on disk");
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    use rollstore::demo;
    let register =
        Register::open(&args.data, Config::default()).map_err(|e| open_failed(&args.data, &e))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (is a server already running there? try --listen 127.0.0.1:0)", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rollstore::api::serve(listener, register, async move {
        tokio::select! {
            _ = stopped => {}
            () = shutdown_signal() => {}
        }
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to the demo server at {address}: {e}"))?;

    println!(
        "rollstore demo — 宝塔区 Baota District, 2014–2019 (seed {})",
        args.seed
    );
    let started = std::time::Instant::now();
    let data = demo::baota::generate(args.seed);
    println!(
        "generated {} commands for {} villages and communities in {:.1} s",
        data.commands.len(),
        data.district.villages.len(),
        started.elapsed().as_secs_f64()
    );
    let loaded = demo::load(channel.clone(), &data)
        .await
        .map_err(|e| e.to_string())?;
    if loaded.appended == 0 {
        println!(
            "{} already holds the data set ({} events)",
            args.data.display(),
            loaded.head
        );
    } else {
        let seconds = loaded.elapsed.as_secs_f64();
        println!(
            "loaded {} events through AppendBatch into {} in {seconds:.1} s ({:.0} events/s, each durable)",
            loaded.appended,
            args.data.display(),
            loaded.appended as f64 / seconds.max(1e-9)
        );
    }
    let report = demo::report::report(channel, &data)
        .await
        .map_err(|e| format!("a query failed: {e}"))?;
    println!("{report}");
    if args.exit {
        let _ = stop.send(());
    } else {
        println!(
            "serving rollstore.v1 at {address} (data in {}); Ctrl-C to stop",
            args.data.display()
        );
        println!("  try: grpcurl -plaintext -d '{{\"region_prefix\":\"610602\",\"at\":{{\"as_of\":\"2018-12-31\"}}}}' {address} rollstore.v1.Rolls/GetStats");
    }
    server
        .await
        .map_err(|e| format!("the server task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn principal(command: PrincipalCommand) -> Result<(), String> {
    use rollstore::api::auth::PrincipalsFile;
    let load = |file: &PathBuf| -> Result<PrincipalsFile, String> {
        if file.exists() {
            PrincipalsFile::read(file).map_err(|e| e.to_string())
        } else {
            Ok(PrincipalsFile::default())
        }
    };
    match command {
        PrincipalCommand::Add {
            name,
            role,
            scopes,
            no_pii,
            file,
        } => {
            if role == rollstore::api::auth::Role::Clerk && scopes.is_empty() {
                return Err("a clerk needs at least one --scope (a region prefix)".into());
            }
            let mut principals = load(&file)?;
            let token = principals
                .add(&name, role, scopes, !no_pii)
                .map_err(|e| e.to_string())?;
            principals.write(&file).map_err(|e| e.to_string())?;
            println!("{token}");
            eprintln!(
                "added {name} to {}; the token above is shown once and not stored",
                file.display()
            );
        }
        PrincipalCommand::Remove { name, file } => {
            let mut principals = load(&file)?;
            let before = principals.principals.len();
            principals.principals.retain(|p| p.name != name);
            if principals.principals.len() == before {
                return Err(format!("{name} is not in {}", file.display()));
            }
            principals.write(&file).map_err(|e| e.to_string())?;
            eprintln!("removed {name} from {}", file.display());
        }
    }
    Ok(())
}

async fn bench(args: BenchArgs) -> Result<(), String> {
    if args.concurrency == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err("--concurrency and --seconds must be positive".into());
    }
    let duration = std::time::Duration::try_from_secs_f64(args.seconds)
        .map_err(|_| format!("--seconds {} is too long", args.seconds))?;
    // Each run's households are its own, even against a server loaded by an earlier run.
    let run: u32 = rand::RngExt::random(&mut rand::rng());
    let report = rollstore::loadgen::run(rollstore::loadgen::Options {
        address: args.address,
        concurrency: args.concurrency,
        connections: args.connections,
        batch: args.batch.max(1),
        duration,
        requests: args.requests,
        mix: args.mix,
        run,
        households: args.households,
        request_ids: args.request_ids,
        seed: args.seed,
    })
    .await?;
    println!("{}", report.table());
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if report.errors > 0 {
        return Err(format!("{} requests failed", report.errors));
    }
    Ok(())
}

/// Re-reads the principals file on every SIGHUP; a bad file keeps the principals in force.
fn reload_on_hangup(principals: rollstore::api::auth::Principals, path: PathBuf) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; the principals file is read only at start");
            return;
        };
        while hangups.recv().await.is_some() {
            match principals.reload(&path) {
                Ok(count) => tracing::info!(count, file = %path.display(), "principals reloaded"),
                Err(error) => {
                    tracing::error!(%error, "principals not reloaded; the previous ones stay in force")
                }
            }
        }
    });
}

/// What to say when a store does not open: what is wrong, and what to do.
fn open_failed(dir: &std::path::Path, error: &rollstore::Error) -> String {
    let advice = match error {
        rollstore::Error::Corrupt(_) => format!(
            "\n  The stored data is damaged. Run `rollstore verify --data {0}` to find the first bad event;\n  restore from an export with `rollstore import --data NEWDIR --in FILE.jsonl`, or ask for help\n  with the verify output. Nothing was changed.",
            dir.display()
        ),
        rollstore::Error::Io(_) => "\n  Check that the directory exists, is writable, has free space, and that no other\n  rollstore is using it.".to_string(),
        _ => String::new(),
    };
    format!(
        "cannot open the store in {}: {error}{advice}",
        dir.display()
    )
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

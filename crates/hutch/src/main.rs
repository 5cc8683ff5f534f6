//! `hutch`: the command-line entry point. Thin: it parses arguments and calls the library
//! crates.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hutch_runtime::{Limits, NetConfig};
use hutch_server::ServeConfig;

mod admin;
mod client;
mod dockerfile;
mod run;
mod template;

/// Default listening address (also the default the hutch Python SDK connects to).
const DEFAULT_LISTEN: &str = "127.0.0.1:49982";
/// The hidden subcommand that runs a default-template build step in the build jail.
const TEMPLATE_JAIL: &str = "__template-jail";

#[derive(Parser)]
#[command(
    name = "hutch",
    version,
    about = "Self-hosted, E2B-compatible code-interpreter sandboxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: E2B's control plane and all sandbox traffic on one address.
    Serve(ServeArgs),
    /// Manage API keys (works whether or not the server runs).
    Keys {
        #[command(subcommand)]
        action: admin::KeysAction,
        #[command(flatten)]
        db: admin::DataDir,
    },
    /// Manage teams: the owners of sandboxes and templates, each with its own keys and
    /// limits (works whether or not the server runs).
    Teams {
        #[command(subcommand)]
        action: admin::TeamsAction,
        #[command(flatten)]
        db: admin::DataDir,
    },
    /// Run code in a sandbox's code interpreter, streaming its output (images are saved).
    Run(run::RunArgs),
    /// Build, list and delete templates on a server (`e2b template build` for hutch).
    Template {
        #[command(subcommand)]
        action: template::TemplateAction,
        #[command(flatten)]
        server: template::ServerArgs,
    },
    /// Kill every sandbox of a data directory and remove all they left (server stopped).
    Cleanup(ServeArgs),
    /// Internal: the sandbox spawn helper run by `hutch serve`.
    #[command(name = "__spawn", hide = true)]
    Spawn,
    /// Internal: runs one default-template build step confined (`<tree> <command...>`).
    #[command(name = "__template-jail", hide = true)]
    TemplateJail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 2..)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HUTCH_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Where the database and per-sandbox state live.
    #[arg(long, env = "HUTCH_DATA_DIR", default_value = "/var/lib/hutch")]
    data_dir: PathBuf,
    /// Where built templates are cached (keyed by their recipe).
    #[arg(long, env = "HUTCH_CACHE_DIR", default_value = "/var/cache/hutch")]
    cache_dir: PathBuf,
    /// An API key to accept (otherwise the first start creates one and prints it once).
    #[arg(long, env = "HUTCH_API_KEY")]
    api_key: Option<String>,
    /// The agent binary put into every sandbox (default: `hutch-agent` next to this binary).
    #[arg(long, env = "HUTCH_AGENT_BIN")]
    agent_bin: Option<PathBuf>,
    /// Memory of each sandbox, MiB.
    #[arg(long, default_value_t = 1024)]
    sandbox_memory_mb: u64,
    /// CPUs of each sandbox.
    #[arg(long, default_value_t = 2)]
    sandbox_cpus: u32,
    /// Disk (writable layer) of each sandbox, MiB.
    #[arg(long, default_value_t = 4096)]
    sandbox_disk_mb: u64,
    /// Size of each volume (`Volume.create`), MiB: writes beyond it fail with 507.
    #[arg(long, default_value_t = 2048)]
    volume_size_mb: u64,
    /// Refuse a create (503) when what every sandbox's disk may still take, plus the new
    /// disk, exceeds RATIO times the data disk's free space (1 = no overcommit). Off by
    /// default: disks are sparse, and each create only checks that its own disk fits.
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    disk_overcommit: Option<f64>,
    /// The most CPUs a template may give its sandboxes (`cpuCount`); 0 = this host's CPUs.
    /// Teams can have lower limits (`hutch teams create --max-cpu`).
    #[arg(long, default_value_t = 0)]
    max_template_cpus: u32,
    /// The most memory (MiB) a template may give its sandboxes (`memoryMB`); 0 = this
    /// host's memory. Teams can have lower limits (`hutch teams create --max-memory-mb`).
    #[arg(long, default_value_t = 0)]
    max_template_memory_mb: u64,
    /// Most bytes per second each sandbox may read from its disk, MB/s (0 = no limit).
    #[arg(long, default_value_t = 0)]
    sandbox_disk_read_mbps: u64,
    /// Most bytes per second each sandbox may write to its disk, MB/s (0 = no limit).
    #[arg(long, default_value_t = 0)]
    sandbox_disk_write_mbps: u64,
    /// Most read and (each) write operations per second on each sandbox's disk (0 = no limit).
    #[arg(long, default_value_t = 0)]
    sandbox_disk_iops: u64,
    /// Maximum processes and threads in each sandbox.
    #[arg(long, default_value_t = 1024)]
    sandbox_pids: u64,
    /// Address range sandboxes are numbered from (a /16 gives 16384 sandboxes).
    #[arg(long, default_value = "10.201.0.0/16")]
    sandbox_cidr: String,
    /// A destination range no sandbox may reach (repeatable), on top of the private,
    /// link-local, metadata and reserved ranges hutch always blocks: the operator's own
    /// networks with public addresses, for instance.
    #[arg(long = "deny-cidr", value_name = "CIDR")]
    deny_cidrs: Vec<String>,
    /// A hosts(5) file the egress proxy resolves domain names from before this host's
    /// resolver (read again when it changes): for names of an egress policy's `allowOut`
    /// and `rules` that this host's DNS does not know.
    #[arg(long, value_name = "FILE")]
    egress_hosts: Option<PathBuf>,
    /// PEM certificates the egress proxy trusts besides this host's, when it checks the
    /// certificate of a destination whose HTTPS requests get a rule's headers.
    #[arg(long, value_name = "FILE")]
    egress_ca_file: Option<PathBuf>,
    /// Keep each sandbox agent's output in <data-dir>/sandboxes/<id>/agent.log (through a
    /// pipe; at most 64 MiB per sandbox).
    #[arg(long)]
    agent_log: bool,
    /// Domain whose `{port}-{sandbox id}.{domain}` names point at this server (wildcard DNS
    /// and, for the SDKs' https URLs, TLS in front); returned to clients as `domain`.
    #[arg(long, env = "HUTCH_DOMAIN")]
    domain: Option<String>,
    /// A warm pool: TEMPLATE=MIN[:MAX] keeps MIN sandboxes of TEMPLATE started and ready to
    /// be claimed, and up to MAX while creates in the last minute ask for them (repeatable;
    /// TEMPLATE=0 turns a pool off). Sizes set with `PUT /pools/{template}` win.
    #[arg(long = "pool", value_name = "TEMPLATE=MIN[:MAX]", value_parser = parse_pool,
          default_values = ["code-interpreter-v1=1:4", "base=0:4"])]
    pools: Vec<(String, hutch_server::service::pool::PoolSize)>,
    /// Fork each sandbox's default Python kernel from a per-template zygote that has the
    /// kernel's modules imported already (`off`: every sandbox boots its own interpreter).
    #[arg(long, env = "HUTCH_ZYGOTES", default_value = "on", value_parser = ["on", "off"])]
    zygotes: String,
    /// What sandboxes run on: `native` (namespaces, cgroups and seccomp on the host's
    /// kernel) or `gvisor` (the agent and everything it starts on gVisor's kernel, `runsc`;
    /// docs/security.md).
    #[arg(long, env = "HUTCH_RUNTIME", default_value = "native", value_parser = ["native", "gvisor"])]
    runtime: String,
    /// The `runsc` binary for `--runtime gvisor` (default: `runsc` on PATH).
    #[arg(long, env = "HUTCH_RUNSC")]
    runsc: Option<PathBuf>,
    /// gVisor's platform for `--runtime gvisor`: systrap (needs no KVM), ptrace or kvm.
    #[arg(long, default_value = "systrap", value_parser = ["systrap", "ptrace", "kvm"])]
    gvisor_platform: String,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn parse_pool(s: &str) -> Result<(String, hutch_server::service::pool::PoolSize), String> {
    hutch_server::service::pool::parse_flag(s)
}

/// The last confinement of a default template's build step (in the build jail): the
/// seccomp filter every sandbox process runs under.
fn confine_template_step() -> std::result::Result<(), String> {
    let programs = hutch_runtime::seccomp::programs().map_err(|e| e.to_string())?;
    hutch_runtime::seccomp::install(&programs).map_err(|e| format!("seccomp: {e}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Spawn => std::process::exit(hutch_runtime::spawn::helper_main()),
        Command::TemplateJail { args } => std::process::exit(hutch_template::jail::helper_main(
            args,
            confine_template_step,
        )),
        Command::Keys { action, db } => admin::keys(action, &db.data_dir),
        Command::Teams { action, db } => admin::teams(action, &db.data_dir),
        Command::Run(args) => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let code = rt.block_on(run::run(args))?;
            std::process::exit(code)
        }
        Command::Template { action, server } => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let code = rt.block_on(template::run(server, action))?;
            std::process::exit(code);
        }
        Command::Cleanup(args) => {
            init_logging();
            let cfg = serve_config(args)?;
            let n = hutch_server::cleanup(&cfg)?;
            eprintln!("cleanup: killed {n} sandbox(es); nothing of hutch's is left on this host");
            Ok(())
        }
        Command::Serve(args) => {
            init_logging();
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(serve(args))
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HUTCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if std::env::var("HUTCH_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn parse_cidr(s: &str) -> Result<NetConfig> {
    let (ip, prefix) = s
        .split_once('/')
        .context("--sandbox-cidr must look like 10.201.0.0/16")?;
    let base: std::net::Ipv4Addr = ip.parse().context("--sandbox-cidr: bad address")?;
    let prefix: u8 = prefix
        .parse()
        .context("--sandbox-cidr: bad prefix length")?;
    if !(8..=28).contains(&prefix) {
        bail!("--sandbox-cidr: prefix length must be between 8 and 28");
    }
    Ok(NetConfig { base, prefix })
}

/// A `--deny-cidr` range: an IPv4 network in CIDR notation, its host bits clear.
fn parse_deny_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8)> {
    let (ip, prefix) = s
        .split_once('/')
        .with_context(|| format!("--deny-cidr {s}: must look like 203.0.113.0/24"))?;
    let ip: std::net::Ipv4Addr = ip
        .parse()
        .with_context(|| format!("--deny-cidr {s}: bad address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .with_context(|| format!("--deny-cidr {s}: the prefix length must be 0 to 32"))?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    if u32::from(ip) & !mask != 0 {
        bail!("--deny-cidr {s}: the address has bits set past the prefix");
    }
    Ok((ip, prefix))
}

fn serve_config(a: ServeArgs) -> Result<ServeConfig> {
    if !hutch_sys::creds::is_root() {
        bail!("hutch must run as root (it creates namespaces, cgroups, mounts and network interfaces)");
    }
    let exe = std::env::current_exe().context("finding the hutch binary")?;
    let agent_bin = match a.agent_bin {
        Some(p) => p,
        None => exe.with_file_name("hutch-agent"),
    };
    if !agent_bin.is_file() {
        bail!("the sandbox agent {} does not exist; build it (cargo build --release -p hutch-agent) or pass --agent-bin", agent_bin.display());
    }
    let cfg = ServeConfig {
        listen: a.listen,
        data_dir: a.data_dir,
        cache_dir: a.cache_dir,
        api_key: a.api_key,
        agent_bin,
        template_jail: hutch_template::JailHelper {
            program: exe.clone(),
            args: vec![TEMPLATE_JAIL.into()],
        },
        helper: (exe, vec!["__spawn".into()]),
        limits: Limits {
            memory_mb: a.sandbox_memory_mb,
            cpus: a.sandbox_cpus,
            pids: a.sandbox_pids,
            disk_mb: a.sandbox_disk_mb,
        },
        max_cpus: match a.max_template_cpus {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        },
        max_memory_mb: match a.max_template_memory_mb {
            0 => host_memory_mb(),
            n => n,
        },
        disk_overcommit: a.disk_overcommit,
        net: parse_cidr(&a.sandbox_cidr)?,
        deny: a
            .deny_cidrs
            .iter()
            .map(|c| parse_deny_cidr(c))
            .collect::<Result<_>>()?,
        agent_log: a.agent_log,
        disk_io: hutch_runtime::runtime::DiskIo {
            read_bps: a.sandbox_disk_read_mbps * 1_000_000,
            write_bps: a.sandbox_disk_write_mbps * 1_000_000,
            iops: a.sandbox_disk_iops,
        },
        domain: a.domain,
        pools: a.pools.into_iter().collect(),
        zygotes: a.zygotes == "on",
        volume_size_mb: a.volume_size_mb,
        egress_hosts: a.egress_hosts,
        egress_ca_file: a.egress_ca_file,
        gvisor: match a.runtime.as_str() {
            "gvisor" => Some(hutch_runtime::gvisor::GvisorConfig {
                runsc: find_runsc(a.runsc)?,
                platform: a.gvisor_platform,
            }),
            _ => None,
        },
    };
    Ok(cfg)
}

/// The `runsc` to run gVisor sandboxes with: the one given, or the first on PATH.
fn find_runsc(given: Option<PathBuf>) -> Result<PathBuf> {
    let found = match given {
        Some(p) => Some(p),
        None => hutch_template::find_tool("runsc", "runsc").ok(),
    };
    match found {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => bail!("--runsc {}: no such file", p.display()),
        None => bail!("--runtime gvisor needs runsc: install gVisor (scripts/runsc.sh fetches Debian's) or pass --runsc"),
    }
}

async fn serve(a: ServeArgs) -> Result<()> {
    let cfg = serve_config(a)?;
    let given_key = cfg.api_key.clone();
    hutch_server::serve(cfg, |s| {
        let url = format!("http://{}", s.addr);
        let key = match (&s.new_key, &given_key) {
            (Some(k), _) => {
                eprintln!("Created an API key (shown only now; `hutch keys create` makes more):");
                k.clone()
            }
            (None, Some(k)) => k.clone(),
            (None, None) => "<your key: `hutch keys create` prints a new one>".into(),
        };
        println!("hutch is listening on {url}. Point the E2B SDKs at it with:\n");
        println!("export E2B_API_URL={url}");
        println!("export E2B_SANDBOX_URL={url}");
        println!("export E2B_VOLUME_API_URL={url}");
        println!("export E2B_API_KEY={key}");
        println!();
    })
    .await?;
    Ok(())
}

/// This host's memory in MiB (`MemTotal`), or 1 GiB when it cannot be read.
fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(1024, |kib| kib / 1024)
}

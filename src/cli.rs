//! clap definitions: turns arguments into option structs, nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The longest `--timeout` (and `--watch`, `--max-lag`) accepted: a year. Deadlines are
/// computed as now + timeout (+ margins); an unbounded value would overflow them.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

fn secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_SECS)
}

#[derive(Debug, Parser)]
#[command(
    name = "repltool",
    version,
    about = "Build and run MySQL/MariaDB replication from one YAML file",
    long_about = "Build and run MySQL/MariaDB replication (master-slave, master-master, chains) \
                  from one YAML topology file, over SSH.\n\n\
                  Exit codes: 0 done/healthy, 1 ran but found a problem, 2 bad input or could not run.",
    after_help = "Examples:\n  repltool init topology.yaml\n  repltool status\n  repltool promote db2\n  repltool lab up --nodes 3"
)]
pub struct Cli {
    /// The topology file.
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build or converge the topology end to end; a converged cluster is left untouched.
    #[command(
        after_help = "Examples:\n  repltool init topology.yaml\n  repltool init topology.yaml --dry-run"
    )]
    Init(InitArgs),
    /// Every server's slave threads, state, lag and errors, at a glance.
    #[command(
        after_help = "Examples:\n  repltool status\n  repltool status -f shop.yaml --format json\n  repltool status --watch 2"
    )]
    Status(StatusArgs),
    /// Make HOST the master: switchover if the master is alive, failover if it is dead.
    #[command(
        after_help = "Examples:\n  repltool promote db2 --dry-run\n  repltool promote db2 --yes"
    )]
    Promote(PromoteArgs),
    /// Pre-flight checks, without changing anything.
    #[command(after_help = "Examples:\n  repltool check -f topology.yaml")]
    Check(CheckArgs),
    /// Restart the members of a Galera cluster one at a time (a config change, an upgrade).
    #[command(
        after_help = "Examples:\n  repltool restart --rolling --dry-run\n  repltool restart --rolling -f shop.yaml"
    )]
    Restart(RestartArgs),
    /// Compare every replica's data with its master's, chunk by chunk, at one consistent point.
    #[command(
        long_about = "Compare every replica's data with its master's, table by table in chunks of \
                      the primary key, at one consistent point on both sides (each replica \
                      stopped exactly at the master's snapshot, then replicating again at once), \
                      without writing to the master.\n\n\
                      Exit codes: 0 every replica matches, 1 something differs, 2 could not \
                      compare.",
        after_help = "Examples:\n  repltool verify\n  repltool verify -f shop.yaml --format json\n  repltool verify --chunk-time 0.2"
    )]
    Verify(VerifyArgs),
    /// Automatic failover: observe every host, detect a dead master holistically, recover it
    /// under an etcd lock (needs `watch:` in the file).
    #[command(
        after_help = "Examples:\n  repltool watch -f shop.yaml\n  repltool watch --once --format json\n  repltool watch --metrics 127.0.0.1:9104\n  repltool watch --ack    # allow the next automatic recovery (anti-flap)"
    )]
    Watch(WatchArgs),
    /// A local sandbox of real servers on 127.0.0.1, with a ready topology file.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(
        after_help = "Examples:\n  repltool completions bash > /etc/bash_completion.d/repltool\n  repltool completions zsh > \"${fpath[1]}/_repltool\"\n  repltool completions fish > ~/.config/fish/completions/repltool.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout.
    #[command(
        after_help = "Examples:\n  repltool man | man -l -\n  repltool man > /usr/local/share/man/man1/repltool.1"
    )]
    Man,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The topology file (same as -f).
    // Its own id: sharing the global `file` id would hide `-f` after `init`.
    #[arg(id = "init_file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print every step (file writes, restarts, SQL with secrets masked) and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewire replication that runs differently from the file.
    #[arg(long)]
    pub force: bool,
    /// Bound, in seconds, on every wait (restart, catch-up, canary).
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = secs())]
    pub timeout: u64,
    /// Lag, in seconds, above which a slave is taken out of the proxies' reader endpoints.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub max_lag: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Refresh every SECS seconds (default 2) until Ctrl-C.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = secs()
    )]
    pub watch: Option<u64>,
    /// Lag, in seconds, above which a slave counts as unhealthy.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = secs())]
    pub max_lag: u64,
    /// Per-host connect/query timeout in seconds.
    #[arg(long, default_value_t = 3, value_name = "SECS", value_parser = secs())]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The host to make master.
    pub host: String,
    /// Print the plan and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Answer the confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Override refusals about data safety (after printing what would be lost).
    #[arg(long)]
    pub force: bool,
    /// Bound, in seconds, on every wait.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = secs())]
    pub timeout: u64,
    /// Lag, in seconds, above which a slave is left out of the proxies' reader endpoints.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub max_lag: u64,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The topology file (same as -f).
    #[arg(id = "watch_file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// One round (its confirmation included, and a recovery if the master is dead), then
    /// exit: 0 healthy, 1 anything else.
    #[arg(long)]
    pub once: bool,
    /// Events as text lines on stderr (table) or JSON lines on stdout (json).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Serve Prometheus metrics on ADDR (host:port).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Acknowledge the last automatic recovery (lifts the anti-flap block) and exit.
    #[arg(long)]
    pub ack: bool,
    /// This watcher's name in etcd records [default: <machine>:<pid>].
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Bound, in seconds, on every wait of a recovery.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// Lag, in seconds, above which a slave is left out of the proxies' reader endpoints.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub max_lag: u64,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Per-host connect timeout in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = secs())]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// One member at a time, each back to Synced before the next, never below quorum
    /// (required: the only kind of restart repltool does).
    #[arg(long, required = true)]
    pub rolling: bool,
    /// Print the order and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Bound, in seconds, on each member's restart until it is Synced again.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The topology file (same as -f).
    #[arg(id = "verify_file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Target duration, in seconds, of one checksum query on a master: the bound on the load
    /// verify puts there (one query at a time).
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    pub chunk_time: f64,
    /// Bound, in seconds, on every wait (logins, a replica reaching the snapshot point).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start N local server instances and write DIR/topology.yaml for them.
    #[command(
        after_help = "Examples:\n  repltool lab up --nodes 3\n  repltool lab up --nodes 4 --dir /tmp/lab\n  repltool lab up --nodes 2 --shape master-master\n  repltool init -f repltool-lab/topology.yaml"
    )]
    Up(LabUpArgs),
    /// List the lab's instances.
    #[command(after_help = "Examples:\n  repltool lab status --dir /tmp/lab")]
    Status(LabDirArgs),
    /// Stop exactly the processes the lab started and remove its directory.
    #[command(after_help = "Examples:\n  repltool lab down --dir /tmp/lab")]
    Down(LabDirArgs),
}

#[derive(Debug, Args)]
pub struct LabUpArgs {
    /// How many server instances.
    #[arg(long, short = 'n', default_value_t = 3)]
    pub nodes: u32,
    #[command(flatten)]
    pub dir: LabDirArgs,
    /// First port to try (the next free ones are used).
    #[arg(long, default_value_t = 23306)]
    pub base_port: u16,
    /// The replication shape written into DIR/topology.yaml [default: master-slave].
    #[arg(long, value_enum)]
    pub shape: Option<LabShape>,
    /// Bound, in seconds, on each server's start.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = secs())]
    pub timeout: u64,
}

/// The `master:` lines of the lab's topology file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabShape {
    /// node1 is the master, every other node a slave of node1.
    MasterSlave,
    /// node1 and node2 replicate from each other (exactly 2 nodes).
    MasterMaster,
    /// node1 <- node2 <- node3 ...: each node replicates from the one before.
    Chain,
}

impl LabShape {
    pub fn as_str(self) -> &'static str {
        match self {
            LabShape::MasterSlave => "master-slave",
            LabShape::MasterMaster => "master-master",
            LabShape::Chain => "chain",
        }
    }
}

#[derive(Debug, Args)]
pub struct LabDirArgs {
    /// The lab's directory.
    #[arg(long, default_value = "repltool-lab", value_name = "DIR")]
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_are_refused_not_overflowed() {
        let huge = u64::MAX.to_string();
        for args in [
            vec!["init", "--timeout", &huge],
            vec!["status", "--timeout", &huge],
            vec!["status", "--watch", &huge],
            vec!["status", "--max-lag", &huge],
            vec!["promote", "db2", "--timeout", &huge],
            vec!["check", "--timeout", &huge],
            vec!["lab", "up", "--timeout", &huge],
        ] {
            let all: Vec<&str> = std::iter::once("repltool")
                .chain(args.iter().copied())
                .collect();
            let e = Cli::try_parse_from(&all).expect_err(&format!("{args:?} accepted"));
            assert!(e.to_string().contains("0..=31536000"), "{args:?}: {e}");
        }
        let year = MAX_SECS.to_string();
        let cli = Cli::try_parse_from(["repltool", "init", "--timeout", &year]).unwrap();
        match cli.command {
            Command::Init(a) => assert_eq!(a.timeout, MAX_SECS),
            other => panic!("{other:?}"),
        }
    }
}

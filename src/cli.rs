//! clap definitions: turns arguments into option structs, nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// A local sandbox of real servers on 127.0.0.1, with a ready topology file.
    #[command(subcommand)]
    Lab(LabCommand),
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
    #[arg(long, default_value_t = 60, value_name = "SECS")]
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
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
    /// Lag, in seconds, above which a slave counts as unhealthy.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub max_lag: u64,
    /// Per-host connect/query timeout in seconds.
    #[arg(long, default_value_t = 3, value_name = "SECS")]
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
    #[arg(long, default_value_t = 5, value_name = "SECS")]
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
    #[arg(long, default_value_t = 60, value_name = "SECS")]
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

//! The binary: parse arguments, call the library, map the error to an exit code.

use clap::Parser;

fn main() {
    // Ctrl-C or a kill must not leave credentials on the hosts.
    repltool::transport::cleanup::install_signal_cleanup();
    let cli = repltool::cli::Cli::parse();
    let code = match repltool::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // Errors quote servers and remote commands: never let their text drive the terminal.
            eprintln!("error: {}", repltool::error::shown(&err));
            repltool::error::exit_code(&err)
        }
    };
    std::process::exit(code);
}

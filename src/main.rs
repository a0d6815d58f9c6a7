//! The binary: parse arguments, call the library, map the error to an exit code.

use clap::Parser;

fn main() {
    let cli = repltool::cli::Cli::parse();
    let code = match repltool::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            repltool::error::exit_code(&err)
        }
    };
    std::process::exit(code);
}

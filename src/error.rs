//! Error kinds that decide the exit code: 0 done/healthy, 1 ran but found a problem,
//! 2 bad input or could not run.

/// An error whose exit code the caller must see. Anything else (a plain `anyhow::Error`) is
/// "could not run" and exits 2.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad input: a broken file, a bad argument. Exit 2.
    #[error("{0}")]
    Input(String),
    /// The command ran and found a problem: unhealthy status, failed check, refused promote. Exit 1.
    #[error("{0}")]
    Problem(String),
}

pub fn exit_code(err: &anyhow::Error) -> i32 {
    match err.downcast_ref::<Failure>() {
        Some(Failure::Problem(_)) => 1,
        Some(Failure::Input(_)) => 2,
        None => 2,
    }
}

/// Shorthand for a bad-input error.
pub fn input(msg: impl Into<String>) -> anyhow::Error {
    Failure::Input(msg.into()).into()
}

/// Shorthand for a "ran, found a problem" error.
pub fn problem(msg: impl Into<String>) -> anyhow::Error {
    Failure::Problem(msg.into()).into()
}

/// The error as the binary prints it: the whole chain, with control characters from servers
/// and remote commands shown escaped (see `report::clean`).
pub fn shown(err: &anyhow::Error) -> String {
    crate::report::clean(&format!("{err:#}")).into_owned()
}

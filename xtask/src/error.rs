//! The error type of every xtask operation: a message for a human.

use std::fmt;

/// A failed xtask step, described for the person running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

/// Result of an xtask step.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error carrying `msg`.
    pub fn msg(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<object::read::Error> for Error {
    fn from(e: object::read::Error) -> Self {
        Self(format!("ELF: {e}"))
    }
}

/// Adds context to an error: `what` failed because of the original error.
pub trait Context<T> {
    /// Prefixes the error message with `what`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

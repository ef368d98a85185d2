//! One error type for the whole binary. Its kind says whose problem it is, and so how it is
//! worded and which exit code it gets: the user's input or the host's set-up (exit 2, fix it and
//! run again), a failure while running (exit 1), or a bug of ours (exit 1, please report it).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bad flags, addresses, files: the message names the fix.
    Usage,
    /// The host cannot do what is asked (not root, no BTF, a hook that cannot attach).
    Environment,
    /// Something failed mid-run (reading a map, writing the output): not the user's input.
    Runtime,
    /// A broken invariant: a bug to report.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Usage,
            msg: msg.into(),
        }
    }
    pub fn env(msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Environment,
            msg: msg.into(),
        }
    }
    pub fn runtime(msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Runtime,
            msg: msg.into(),
        }
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Internal,
            msg: msg.into(),
        }
    }

    /// The process exit code: 2 for what the user fixes before running again, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Usage | Kind::Environment => 2,
            Kind::Runtime | Kind::Internal => 1,
        }
    }
}

/// The one line printed after `tracer: `.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Usage | Kind::Environment => f.write_str(&self.msg),
            Kind::Runtime => write!(f, "stopped: {}", self.msg),
            Kind::Internal => write!(f, "internal error: {} (please report it)", self.msg),
        }
    }
}

impl std::error::Error for Error {}

/// Map a module's plain string error to a kind at the boundary where the kind is known.
pub trait Context<T> {
    fn usage(self) -> Result<T>;
    fn env(self) -> Result<T>;
}

impl<T, E: Into<String>> Context<T> for std::result::Result<T, E> {
    fn usage(self) -> Result<T> {
        self.map_err(|e| Error::usage(e))
    }
    fn env(self) -> Result<T> {
        self.map_err(|e| Error::env(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_exit_codes_and_wording() {
        assert_eq!(Error::usage("bad --old").exit_code(), 2);
        assert_eq!(Error::env("no BTF").exit_code(), 2);
        let r = Error::runtime("cannot read map DEST: EIO");
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.to_string(), "stopped: cannot read map DEST: EIO");
        assert!(Error::internal("x").to_string().contains("please report"));
    }
}

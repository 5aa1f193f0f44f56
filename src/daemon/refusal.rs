//! [`Refusal`]: a failed sockopt, with the errno the kernel would return. Shared by the
//! request handlers (`sockopt`) and the per-namespace state (`state`), which both refuse
//! requests; it depends on neither.

use ipt_abi::AbiError;

/// A failed sockopt: the errno the kernel would return, and why (for the daemon log).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Positive errno.
    pub errno: i32,
    /// Why, for the log line.
    pub reason: String,
}

impl Refusal {
    /// A refusal with a positive errno and a reason for the log.
    pub fn new(errno: i32, reason: impl Into<String>) -> Self {
        Self {
            errno,
            reason: reason.into(),
        }
    }
}

impl From<AbiError> for Refusal {
    fn from(err: AbiError) -> Self {
        Self {
            errno: err.errno(),
            reason: err.to_string(),
        }
    }
}

//! The crate's one error type, named by cause.
//!
//! Every layer returns [`Error`]; only `api` turns it into a gRPC status (and decides which
//! code each cause gets). A cause is chosen so that the caller knows what to do next:
//!
//! ```text
//!   InvalidInput   fix the request (each field named)          INVALID_ARGUMENT
//!   Rule           the register forbids it now (rule named)    FAILED_PRECONDITION
//!   VersionConflict  someone wrote first: re-read, retry       ABORTED
//!   RequestReused  the request_id names another request        ALREADY_EXISTS
//!   NotFound       nothing by that name                        NOT_FOUND
//!   Unauthenticated  no valid credentials                      UNAUTHENTICATED
//!   PermissionDenied the caller's role or scope forbids it     PERMISSION_DENIED
//!   TooLarge       a limit was passed (limit named)            RESOURCE_EXHAUSTED
//!   Unavailable    shutting down, or the disk refused a write  UNAVAILABLE
//!   Corrupt        stored data does not decode or verify       DATA_LOSS
//!   Io             the disk failed                             INTERNAL
//! ```

use std::fmt;

/// One malformed field of a request, with a path such as `commands[3].members[0].id_number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// The register's rules, each with a stable name that error messages carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The status machine: which event is allowed from which status.
    StatusTransition,
    /// A household always has at least one member, and its head is one of them.
    Members,
    /// A person is an active member of at most one non-removed household.
    PersonActiveElsewhere,
    /// Lifting out needs every item of 两不愁三保障.
    ExitChecklist,
    /// Lifting out needs income above the year's poverty line.
    PovertyLine,
    /// 当年识别当年不退出.
    SameYearExit,
    /// 六步三公示: procedure dates in order, notices at least 7 days.
    Procedure,
    /// Effective dates never go backwards within a household.
    EffectiveDateOrder,
    /// No effective date after the day the event is recorded.
    FutureDate,
    /// A relocation must move the household somewhere else.
    Relocation,
    /// A correction targets an event of its own household that is not itself a correction.
    CorrectionTarget,
    /// A correction must leave a stream that still obeys every rule.
    CorrectionBreaksStream,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::StatusTransition => "status_transition",
            Rule::Members => "members",
            Rule::PersonActiveElsewhere => "person_active_elsewhere",
            Rule::ExitChecklist => "exit_checklist",
            Rule::PovertyLine => "poverty_line",
            Rule::SameYearExit => "same_year_exit",
            Rule::Procedure => "procedure",
            Rule::EffectiveDateOrder => "effective_date_order",
            Rule::FutureDate => "future_date",
            Rule::Relocation => "relocation",
            Rule::CorrectionTarget => "correction_target",
            Rule::CorrectionBreaksStream => "correction_breaks_stream",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", describe(.0))]
    InvalidInput(Vec<FieldViolation>),
    #[error("rule {}: {message}", .rule.name())]
    Rule { rule: Rule, message: String },
    #[error("household {household_id} is at version {actual}, not the expected {expected}")]
    VersionConflict {
        household_id: String,
        expected: u64,
        actual: u64,
    },
    #[error("request_id '{request_id}' was already used for different content (seq {seq})")]
    RequestReused { request_id: String, seq: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage failure: {0}")]
    Io(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A single malformed field.
    pub fn invalid(field: impl Into<String>, description: impl fmt::Display) -> Self {
        Error::InvalidInput(vec![FieldViolation {
            field: field.into(),
            description: description.to_string(),
        }])
    }

    pub fn rule(rule: Rule, message: impl Into<String>) -> Self {
        Error::Rule {
            rule,
            message: message.into(),
        }
    }

    /// Places the error inside a larger request: field paths gain `prefix.`, and rule messages
    /// say which command broke the rule.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Error::InvalidInput(violations) => Error::InvalidInput(
                violations
                    .into_iter()
                    .map(|v| FieldViolation {
                        field: format!("{prefix}.{}", v.field),
                        description: v.description,
                    })
                    .collect(),
            ),
            Error::Rule { rule, message } => Error::Rule {
                rule,
                message: format!("{prefix}: {message}"),
            },
            other => other,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Io(error.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! [`Error`] → gRPC status: the one place where causes become codes.
//!
//! Malformed input carries `google.rpc.BadRequest` with every field violation; a broken rule
//! carries `google.rpc.PreconditionFailure` whose type is the rule's name, so that a client can
//! branch on the rule without parsing the message. `INTERNAL` is kept for the store's own
//! failures, never for what a client sent.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use crate::error::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidInput(violations) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                ),
            ),
            Error::Rule {
                rule,
                message: description,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                    rule.name(),
                    "household",
                    description,
                )]),
            ),
            Error::VersionConflict { .. } => Status::aborted(message),
            Error::RequestReused { .. } => Status::already_exists(message),
            Error::NotFound(_) => Status::not_found(message),
            Error::Unauthenticated(_) => Status::unauthenticated(message),
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::TooLarge(_) => Status::resource_exhausted(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Corrupt(_) => Status::data_loss(message),
            Error::Io(_) => Status::internal(message),
        }
    }
}

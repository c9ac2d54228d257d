//! The register's meaning: its vocabulary, its events, the state they fold into, and the rules
//! that decide which events may be appended.
//!
//! ```text
//!   values   identifiers that check themselves (IdNumber, RegionCode, …) and the vocabulary
//!   change   Command (asked for) and Event (recorded): the same Change, before and after
//!   state    HouseholdState and apply(): the fold of a household's events
//!   rules    decide(): may this command become an event, given the household and the register?
//!   history  a stream at a point in time: corrections applied, then the fold (DESIGN.md §2)
//! ```
//!
//! Everything here is pure: no I/O, no clock, no async, no randomness, no storage keys and no
//! protobuf. The day of recording, the policy and the rest of the register are passed in, so
//! every rule is testable without a disk.

pub mod change;
pub mod history;
pub mod rules;
pub mod state;
pub mod values;

pub use change::{
    Adjustment, Assessment, Causes, Change, Command, Correction, CorrectionAction, Criterion,
    Event, ExitChecklist, ExitRecord, Helper, Identification, Measure, Member, MemberAdded,
    MemberRemoved, Procedure, RelapseRecord,
};
pub use history::{decide_correction, effective_events, state_at, Effective, PointInTime};
pub use rules::{decide, Context, PersonDirectory, Policy};
pub use state::{apply, HelperAssignment, HouseholdState};
pub use values::{
    date_form, date_string, parse_date, Attribute, Cause, Date, ExitReason, Health, HouseholdId,
    IdNumber, InvalidValue, Labor, MeasureKind, MemberAddedReason, MemberRemovedReason, Monitoring,
    RegionCode, RegionPrefix, Relation, Schooling, Status,
};

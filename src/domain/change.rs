//! Commands and events: what a caller asks for, and what the log keeps.
//!
//! A [`Command`] is a request to change one household. Once the rules accept it, it becomes an
//! [`Event`]: the same [`Change`] with its place in the log (`seq`, `version`) and the clock and
//! actor of the moment it was recorded. The event's serde_json encoding is its stored `body`,
//! so field order and names here are part of the on-disk format.
//!
//! ```text
//!   Command { household_id, effective_date, document_ref, expected_version, request_id, change }
//!      │ rules::decide (accepts or refuses)
//!      ▼
//!   Event { seq, household_id, version, effective_date, recorded_at, actor, document_ref,
//!           request_id, change }
//! ```
//!
//! Pure data: no I/O, no clock (`recorded_at` is passed in), no storage keys.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::values::{
    date_text, instant_text, Attribute, Cause, Date, ExitReason, Health, HouseholdId, IdNumber,
    Labor, MeasureKind, MemberAddedReason, MemberRemovedReason, Monitoring, RegionCode, Relation,
    Schooling,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id_number: IdNumber,
    pub name: String,
    pub relation: Relation,
    pub health: Health,
    pub labor: Labor,
    pub schooling: Schooling,
}

/// 帮扶责任人.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Helper {
    pub name: String,
    pub unit: String,
}

/// 帮扶措施 received in a year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measure {
    pub year: i32,
    pub kind: MeasureKind,
    // Never skipped: a household's state holds measures, and checkpoints encode that state
    // in a format that does not describe itself (a skipped field would not decode).
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criterion {
    pub met: bool,
    // Never skipped, like `Measure::note`.
    #[serde(default)]
    pub note: String,
}

/// 一主五辅: the identification assessment, kept as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub income: Criterion,
    pub health: Criterion,
    pub education: Criterion,
    pub housing: Criterion,
    pub potential: Criterion,
    pub industry: Criterion,
}

/// 六步三公示, as dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Procedure {
    #[serde(with = "date_text")]
    pub applied_on: Date,
    #[serde(with = "date_text")]
    pub village_review_on: Date,
    #[serde(with = "date_text")]
    pub village_notice_on: Date,
    #[serde(with = "date_text")]
    pub township_notice_on: Date,
    #[serde(with = "date_text")]
    pub county_notice_on: Date,
}

/// 两不愁三保障.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitChecklist {
    pub food_and_clothing: bool,
    pub compulsory_education: bool,
    pub basic_medical_care: bool,
    pub safe_housing: bool,
    pub safe_drinking_water: bool,
}

impl ExitChecklist {
    /// Every item met.
    pub const ALL_MET: ExitChecklist = ExitChecklist {
        food_and_clothing: true,
        compulsory_education: true,
        basic_medical_care: true,
        safe_housing: true,
        safe_drinking_water: true,
    };

    /// The items that are not met, by their Chinese and English names.
    pub fn unmet(&self) -> Vec<&'static str> {
        [
            (self.food_and_clothing, "不愁吃穿 food and clothing"),
            (self.compulsory_education, "义务教育 compulsory education"),
            (self.basic_medical_care, "基本医疗 basic medical care"),
            (self.safe_housing, "住房安全 safe housing"),
            (self.safe_drinking_water, "饮水安全 safe drinking water"),
        ]
        .into_iter()
        .filter(|(met, _)| !met)
        .map(|(_, name)| name)
        .collect()
    }
}

/// 识别纳入: everything the register records about a household when it enters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identification {
    pub region_code: RegionCode,
    pub members: Vec<Member>,
    pub head_id: IdNumber,
    pub attribute: Attribute,
    pub primary_cause: Cause,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_causes: Vec<Cause>,
    pub income_per_capita: i64,
    pub safety_net: bool,
    pub monitoring: Monitoring,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<Helper>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<Measure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment: Option<Assessment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<Procedure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAdded {
    pub member: Member,
    pub reason: MemberAddedReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoved {
    pub id_number: IdNumber,
    pub reason: MemberRemovedReason,
}

/// A replacement of the causes of poverty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Causes {
    pub primary: Cause,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<Cause>,
}

/// 动态调整: only what is set changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members_added: Vec<MemberAdded>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members_removed: Vec<MemberRemoved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_id: Option<IdNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relocate_to: Option<RegionCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<Attribute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causes: Option<Causes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub income_per_capita: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_net: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<Helper>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<Measure>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Adjustment {
    /// Whether the adjustment changes anything at all (a note alone does not).
    pub fn is_empty(&self) -> bool {
        self.members_added.is_empty()
            && self.members_removed.is_empty()
            && self.head_id.is_none()
            && self.relocate_to.is_none()
            && self.attribute.is_none()
            && self.causes.is_none()
            && self.income_per_capita.is_none()
            && self.safety_net.is_none()
            && self.monitoring.is_none()
            && self.helper.is_none()
            && self.measures.is_empty()
    }
}

/// 退出.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub reason: ExitReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checklist: Option<ExitChecklist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub income_per_capita: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<Procedure>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// 返贫.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelapseRecord {
    pub primary_cause: Cause,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub income_per_capita: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// What a rectification (整改) does to its target event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionAction {
    /// The target no longer counts, for any point known at or after the correction.
    Annul,
    /// The target counts with this payload (of its own kind) and, if given, this date.
    Amend {
        change: Box<Change>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effective_date: Option<Date>,
    },
}

/// 整改: annul or amend an earlier event of the same household. The original stays in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    pub target_seq: u64,
    pub action: CorrectionAction,
    pub reason: String,
}

/// What an event does to its household.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Identify(Identification),
    Adjust(Adjustment),
    Exit(ExitRecord),
    Relapse(RelapseRecord),
    Correct(Correction),
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Identify(_) => "identify",
            Change::Adjust(_) => "adjust",
            Change::Exit(_) => "exit",
            Change::Relapse(_) => "relapse",
            Change::Correct(_) => "correct",
        }
    }
}

/// A request to change one household.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub household_id: HouseholdId,
    pub effective_date: Date,
    pub document_ref: String,
    /// `Some(0)`: the household must not exist yet. `None`: no check.
    pub expected_version: Option<u64>,
    pub request_id: Option<String>,
    pub change: Change,
}

impl Command {
    /// The event that records this command at `seq`, as version `version` of its household.
    /// It takes the command: a decided command is done with, and its members, names and notes
    /// move into the event instead of being copied (a copy was ~3% of a batch's CPU).
    pub fn recorded(
        self,
        seq: u64,
        version: u64,
        recorded_at: DateTime<Utc>,
        actor: &str,
    ) -> Event {
        Event {
            seq,
            household_id: self.household_id,
            version,
            effective_date: self.effective_date,
            recorded_at,
            actor: actor.to_owned(),
            document_ref: self.document_ref,
            request_id: self.request_id,
            change: self.change,
        }
    }

    /// Whether `event` records exactly this command: the test for an idempotent retry.
    /// `expected_version` is a precondition, not content, so it is not compared.
    pub fn is_recorded_by(&self, event: &Event) -> bool {
        self.household_id == event.household_id
            && self.effective_date == event.effective_date
            && self.document_ref == event.document_ref
            && self.request_id == event.request_id
            && self.change == event.change
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub household_id: HouseholdId,
    pub version: u64,
    #[serde(with = "date_text")]
    pub effective_date: Date,
    #[serde(with = "instant_text")]
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub document_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub change: Change,
}

impl Event {
    /// Reads an event from its stored body. The one place bodies are decoded, so that every
    /// reader (a replay, a history, a subscriber) accepts exactly the same bytes. A body that
    /// does not decode is an `Err` with the reason, never a panic.
    pub fn from_body(body: &[u8]) -> Result<Self, String> {
        // The body is checked as UTF-8 once, whole, and read as text: reading it as bytes made
        // serde_json check each string on its own, ~5% of a replay's samples.
        let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

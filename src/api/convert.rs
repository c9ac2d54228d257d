//! Protobuf ⇄ domain.
//!
//! Inbound, every message is parsed into checked domain values, and every malformed field is
//! collected (not just the first) into one `InvalidInput` error whose violations carry the
//! field's path, e.g. `members[2].id_number`. Nothing here panics on what a client sends: enum
//! numbers, strings and missing messages are all checked.
//!
//! Outbound, domain values become messages. Enum mappings are declared once, both ways.

use crate::app::{At, HistoryEntry, HouseholdView, KnownAt, Receipt, Recorded};
use crate::domain::{
    self, parse_date, Adjustment, Change, Command, Correction, CorrectionAction, Date, ExitRecord,
    HouseholdId, IdNumber, Identification, InvalidValue, RegionCode, RelapseRecord,
};
use crate::error::{Error, FieldViolation};
use crate::pb;
use crate::projection::{ChangeReason, Flows, RosterChange, Snapshot, Stats, StatsRow, Tally};

/// Collects the violations of one message while it is parsed.
#[derive(Default)]
pub struct Fields {
    violations: Vec<FieldViolation>,
}

impl Fields {
    /// Keeps `result`'s value, or records why `field` is invalid.
    pub fn check<T>(&mut self, field: &str, result: Result<T, InvalidValue>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(InvalidValue(description)) => {
                self.violations.push(FieldViolation {
                    field: field.to_owned(),
                    description,
                });
                None
            }
        }
    }

    /// Takes in the violations of a nested message, under `prefix`. The prefix is written out
    /// only for a violation: formatting it for every element of a batch's repeated fields
    /// was ~2% of a batch's instructions.
    pub fn nested<T>(
        &mut self,
        prefix: impl std::fmt::Display,
        result: Result<T, Error>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Error::InvalidInput(violations)) => {
                self.violations
                    .extend(violations.into_iter().map(|v| FieldViolation {
                        field: format!("{prefix}.{}", v.field),
                        description: v.description,
                    }));
                None
            }
            Err(other) => {
                self.violations.push(FieldViolation {
                    field: prefix.to_string(),
                    description: other.to_string(),
                });
                None
            }
        }
    }

    /// A required message.
    pub fn required<'m, T>(&mut self, field: &str, message: Option<&'m T>) -> Option<&'m T> {
        if message.is_none() {
            self.violations.push(FieldViolation {
                field: field.to_owned(),
                description: "is required".into(),
            });
        }
        message
    }

    /// Ends the parse: the value if every field was valid, or every violation found.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Error> {
        if self.violations.is_empty() {
            if let Some(value) = build() {
                return Ok(value);
            }
        }
        if self.violations.is_empty() {
            // Every checked field recorded its violation; reaching here is a bug, not input.
            return Err(Error::invalid("request", "is malformed"));
        }
        Err(Error::InvalidInput(self.violations))
    }
}

/// Parses a proto enum number into a domain value.
pub trait FromProto: Sized {
    fn from_proto(raw: i32) -> Result<Self, InvalidValue>;
}

/// Declares a domain vocabulary ⇄ proto enum mapping, once for both directions.
macro_rules! vocabulary_map {
    ($domain:ident <=> $pb:ident { $($d:ident <=> $p:ident),+ $(,)? }) => {
        impl From<domain::$domain> for pb::$pb {
            fn from(value: domain::$domain) -> Self {
                match value { $(domain::$domain::$d => pb::$pb::$p),+ }
            }
        }

        impl FromProto for domain::$domain {
            fn from_proto(raw: i32) -> Result<Self, InvalidValue> {
                match pb::$pb::try_from(raw) {
                    $(Ok(pb::$pb::$p) => Ok(domain::$domain::$d),)+
                    _ => {
                        let given = pb::$pb::try_from(raw)
                            .map(|v| v.as_str_name().to_owned())
                            .unwrap_or_else(|_| raw.to_string());
                        let allowed: Vec<&str> =
                            vec![$(pb::$pb::$p.as_str_name()),+];
                        Err(InvalidValue(format!(
                            "{given} is not a valid {}; use one of {}",
                            stringify!($pb),
                            allowed.join(", ")
                        )))
                    }
                }
            }
        }
    };
}

vocabulary_map!(Status <=> Status { OnRoll <=> OnRoll, Exited <=> Exited, Removed <=> Removed });
vocabulary_map!(Attribute <=> Attribute {
    General <=> General, LowIncome <=> LowIncome, DestituteSupport <=> DestituteSupport
});
vocabulary_map!(Cause <=> Cause {
    Illness <=> Illness, Disability <=> Disability, Schooling <=> Schooling,
    Disaster <=> Disaster, LackOfLand <=> LackOfLand, LackOfWater <=> LackOfWater,
    LackOfSkills <=> LackOfSkills, LackOfLabor <=> LackOfLabor, LackOfFunds <=> LackOfFunds,
    PoorTransport <=> PoorTransport, LackOfDrive <=> LackOfDrive, Other <=> Other,
});
vocabulary_map!(Monitoring <=> Monitoring {
    NotMonitored <=> None, UnstableExited <=> UnstableExited, Edge <=> Edge,
    SuddenHardship <=> SuddenHardship,
});
vocabulary_map!(Relation <=> Relation {
    Head <=> Head, Spouse <=> Spouse, Child <=> Child, ChildInLaw <=> ChildInLaw,
    Grandchild <=> Grandchild, Parent <=> Parent, Grandparent <=> Grandparent,
    Sibling <=> Sibling, Other <=> Other,
});
vocabulary_map!(Health <=> Health {
    Healthy <=> Healthy, ChronicIllness <=> ChronicIllness, SeriousIllness <=> SeriousIllness,
    Disabled <=> Disabled,
});
vocabulary_map!(Labor <=> Labor {
    Skilled <=> Skilled, Ordinary <=> Ordinary, Weak <=> Weak, Lost <=> Lost, NoLabor <=> None,
});
vocabulary_map!(Schooling <=> Schooling {
    Preschool <=> Preschool, InSchool <=> InSchool, Illiterate <=> Illiterate,
    Primary <=> Primary, Junior <=> Junior, Senior <=> Senior, College <=> College,
});
vocabulary_map!(MeasureKind <=> MeasureKind {
    Industry <=> Industry, Employment <=> Employment, Relocation <=> Relocation,
    Housing <=> Housing, Education <=> Education, Health <=> Health,
    Microcredit <=> Microcredit, Ecology <=> Ecology, Guarantee <=> Guarantee, Other <=> Other,
});
vocabulary_map!(ExitReason <=> ExitReason {
    LiftedOut <=> LiftedOut, Removed <=> Removed, Dissolved <=> Dissolved
});
vocabulary_map!(MemberAddedReason <=> MemberAddedReason {
    Birth <=> Birth, MarriageIn <=> MarriageIn, TransferIn <=> TransferIn, Other <=> Other
});
vocabulary_map!(MemberRemovedReason <=> MemberRemovedReason {
    Death <=> Death, MarriageOut <=> MarriageOut, Emigration <=> Emigration,
    Imprisonment <=> Imprisonment, TransferOut <=> TransferOut, Other <=> Other,
});

fn vocab<T: FromProto>(fields: &mut Fields, field: &str, raw: i32) -> Option<T> {
    fields.check(field, T::from_proto(raw))
}

fn vocab_list<T: FromProto>(fields: &mut Fields, field: &str, raw: &[i32]) -> Option<Vec<T>> {
    let parsed: Vec<Option<T>> = raw
        .iter()
        .enumerate()
        .map(|(i, r)| vocab(fields, &format!("{field}[{i}]"), *r))
        .collect();
    parsed.into_iter().collect()
}

/// Parses each element of a repeated field with `parse`, nesting its violations.
fn each<M, T>(
    fields: &mut Fields,
    field: &str,
    items: &[M],
    parse: impl Fn(&M) -> Result<T, Error>,
) -> Option<Vec<T>> {
    let parsed: Vec<Option<T>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| fields.nested(format_args!("{field}[{i}]"), parse(item)))
        .collect();
    parsed.into_iter().collect()
}

fn income(value: i64) -> Result<i64, InvalidValue> {
    if value < 0 {
        Err(InvalidValue(format!("{value} is negative")))
    } else {
        Ok(value)
    }
}

pub fn member(m: &pb::Member) -> Result<domain::Member, Error> {
    let mut f = Fields::default();
    let id_number = f.check("id_number", IdNumber::parse(&m.id_number));
    let relation = vocab(&mut f, "relation", m.relation);
    let health = vocab(&mut f, "health", m.health);
    let labor = vocab(&mut f, "labor", m.labor);
    let schooling = vocab(&mut f, "schooling", m.schooling);
    f.finish(|| {
        Some(domain::Member {
            id_number: id_number?,
            name: m.name.clone(),
            relation: relation?,
            health: health?,
            labor: labor?,
            schooling: schooling?,
        })
    })
}

fn helper(h: &pb::Helper) -> domain::Helper {
    domain::Helper {
        name: h.name.clone(),
        unit: h.unit.clone(),
    }
}

fn measure(m: &pb::Measure) -> Result<domain::Measure, Error> {
    let mut f = Fields::default();
    let kind = vocab(&mut f, "kind", m.kind);
    f.finish(|| {
        Some(domain::Measure {
            year: m.year,
            kind: kind?,
            note: m.note.clone(),
        })
    })
}

fn criterion(c: Option<&pb::Criterion>) -> domain::Criterion {
    c.map(|c| domain::Criterion {
        met: c.met,
        note: c.note.clone(),
    })
    .unwrap_or_default()
}

fn assessment(a: &pb::Assessment) -> domain::Assessment {
    domain::Assessment {
        income: criterion(a.income.as_ref()),
        health: criterion(a.health.as_ref()),
        education: criterion(a.education.as_ref()),
        housing: criterion(a.housing.as_ref()),
        potential: criterion(a.potential.as_ref()),
        industry: criterion(a.industry.as_ref()),
    }
}

fn procedure(p: &pb::Procedure) -> Result<domain::Procedure, Error> {
    let mut f = Fields::default();
    let applied_on = f.check("applied_on", parse_date(&p.applied_on));
    let village_review_on = f.check("village_review_on", parse_date(&p.village_review_on));
    let village_notice_on = f.check("village_notice_on", parse_date(&p.village_notice_on));
    let township_notice_on = f.check("township_notice_on", parse_date(&p.township_notice_on));
    let county_notice_on = f.check("county_notice_on", parse_date(&p.county_notice_on));
    f.finish(|| {
        Some(domain::Procedure {
            applied_on: applied_on?,
            village_review_on: village_review_on?,
            village_notice_on: village_notice_on?,
            township_notice_on: township_notice_on?,
            county_notice_on: county_notice_on?,
        })
    })
}

fn optional<M, T>(
    fields: &mut Fields,
    field: &str,
    message: Option<&M>,
    parse: impl Fn(&M) -> Result<T, Error>,
) -> Option<Option<T>> {
    match message {
        None => Some(None),
        Some(m) => fields.nested(field, parse(m)).map(Some),
    }
}

/// The fields every write carries.
pub struct Header<'a> {
    pub household_id: &'a str,
    pub effective_date: &'a str,
    pub document_ref: &'a str,
    pub expected_version: Option<u64>,
    pub request_id: &'a str,
}

/// A write request: its header and its change.
pub trait WriteRequest {
    fn header(&self) -> Header<'_>;
    fn change(&self, fields: &mut Fields) -> Option<Change>;
}

macro_rules! header {
    ($request:ty) => {
        fn header(&self) -> Header<'_> {
            Header {
                household_id: &self.household_id,
                effective_date: &self.effective_date,
                document_ref: &self.document_ref,
                expected_version: self.expected_version,
                request_id: &self.request_id,
            }
        }
    };
}

impl WriteRequest for pb::IdentifyRequest {
    header!(pb::IdentifyRequest);

    fn change(&self, f: &mut Fields) -> Option<Change> {
        let region_code = f.check("region_code", RegionCode::parse(&self.region_code));
        let members = each(f, "members", &self.members, member);
        let head_id = f.check("head_id", IdNumber::parse(&self.head_id));
        let attribute = vocab(f, "attribute", self.attribute);
        let primary_cause = vocab(f, "primary_cause", self.primary_cause);
        let other_causes = vocab_list(f, "other_causes", &self.other_causes);
        let income_per_capita = f.check("income_per_capita", income(self.income_per_capita));
        let monitoring = if self.monitoring == pb::Monitoring::Unspecified as i32 {
            Some(domain::Monitoring::NotMonitored)
        } else {
            vocab(f, "monitoring", self.monitoring)
        };
        let measures = each(f, "measures", &self.measures, measure);
        let procedure = optional(f, "procedure", self.procedure.as_ref(), procedure);
        Some(Change::Identify(Identification {
            region_code: region_code?,
            members: members?,
            head_id: head_id?,
            attribute: attribute?,
            primary_cause: primary_cause?,
            other_causes: other_causes?,
            income_per_capita: income_per_capita?,
            safety_net: self.safety_net,
            monitoring: monitoring?,
            helper: self.helper.as_ref().map(helper),
            measures: measures?,
            assessment: self.assessment.as_ref().map(assessment),
            procedure: procedure?,
        }))
    }
}

impl WriteRequest for pb::AdjustRequest {
    header!(pb::AdjustRequest);

    fn change(&self, f: &mut Fields) -> Option<Change> {
        let members_added = each(f, "members_added", &self.members_added, |a| {
            let mut g = Fields::default();
            let m = g.required("member", a.member.as_ref());
            let parsed = m.and_then(|m| g.nested("member", member(m)));
            let reason = vocab(&mut g, "reason", a.reason);
            g.finish(|| {
                Some(domain::MemberAdded {
                    member: parsed?,
                    reason: reason?,
                })
            })
        });
        let members_removed = each(f, "members_removed", &self.members_removed, |r| {
            let mut g = Fields::default();
            let id_number = g.check("id_number", IdNumber::parse(&r.id_number));
            let reason = vocab(&mut g, "reason", r.reason);
            g.finish(|| {
                Some(domain::MemberRemoved {
                    id_number: id_number?,
                    reason: reason?,
                })
            })
        });
        let head_id = match &self.head_id {
            None => Some(None),
            Some(id) => f.check("head_id", IdNumber::parse(id)).map(Some),
        };
        let relocate_to = match &self.relocate_to {
            None => Some(None),
            Some(code) => f.check("relocate_to", RegionCode::parse(code)).map(Some),
        };
        let attribute = match self.attribute {
            None => Some(None),
            Some(raw) => vocab(f, "attribute", raw).map(Some),
        };
        let causes = optional(f, "causes", self.causes.as_ref(), |c| {
            let mut g = Fields::default();
            let primary = vocab(&mut g, "primary_cause", c.primary_cause);
            let others = vocab_list(&mut g, "other_causes", &c.other_causes);
            g.finish(|| {
                Some(domain::Causes {
                    primary: primary?,
                    others: others?,
                })
            })
        });
        let income_per_capita = match self.income_per_capita {
            None => Some(None),
            Some(value) => f.check("income_per_capita", income(value)).map(Some),
        };
        let monitoring = match self.monitoring {
            None => Some(None),
            Some(raw) => vocab(f, "monitoring", raw).map(Some),
        };
        let measures = each(f, "measures", &self.measures, measure);
        Some(Change::Adjust(Adjustment {
            members_added: members_added?,
            members_removed: members_removed?,
            head_id: head_id?,
            relocate_to: relocate_to?,
            attribute: attribute?,
            causes: causes?,
            income_per_capita: income_per_capita?,
            safety_net: self.safety_net,
            monitoring: monitoring?,
            helper: self.helper.as_ref().map(helper),
            measures: measures?,
            note: self.note.clone(),
        }))
    }
}

impl WriteRequest for pb::ExitRequest {
    header!(pb::ExitRequest);

    fn change(&self, f: &mut Fields) -> Option<Change> {
        let reason = vocab(f, "reason", self.reason);
        let income_per_capita = match self.income_per_capita {
            None => Some(None),
            Some(value) => f.check("income_per_capita", income(value)).map(Some),
        };
        let procedure = optional(f, "procedure", self.procedure.as_ref(), procedure);
        Some(Change::Exit(ExitRecord {
            reason: reason?,
            checklist: self.checklist.as_ref().map(|c| domain::ExitChecklist {
                food_and_clothing: c.food_and_clothing,
                compulsory_education: c.compulsory_education,
                basic_medical_care: c.basic_medical_care,
                safe_housing: c.safe_housing,
                safe_drinking_water: c.safe_drinking_water,
            }),
            income_per_capita: income_per_capita?,
            procedure: procedure?,
            note: self.note.clone(),
        }))
    }
}

impl WriteRequest for pb::RelapseRequest {
    header!(pb::RelapseRequest);

    fn change(&self, f: &mut Fields) -> Option<Change> {
        let primary_cause = vocab(f, "primary_cause", self.primary_cause);
        let income_per_capita = match self.income_per_capita {
            None => Some(None),
            Some(value) => f.check("income_per_capita", income(value)).map(Some),
        };
        Some(Change::Relapse(RelapseRecord {
            primary_cause: primary_cause?,
            income_per_capita: income_per_capita?,
            note: self.note.clone(),
        }))
    }
}

impl WriteRequest for pb::CorrectRequest {
    header!(pb::CorrectRequest);

    fn change(&self, f: &mut Fields) -> Option<Change> {
        use pb::correct_request::Amendment;
        if self.target_seq == 0 {
            f.check::<()>(
                "target_seq",
                Err(InvalidValue(
                    "the seq of the event to correct is required".into(),
                )),
            );
        }
        let action = match pb::CorrectionAction::try_from(self.action) {
            Ok(pb::CorrectionAction::Annul) => {
                if self.amendment.is_some() || !self.amended_effective_date.is_empty() {
                    f.check::<()>(
                        "amendment",
                        Err(InvalidValue("an annulment carries no amendment".into())),
                    );
                }
                Some(CorrectionAction::Annul)
            }
            Ok(pb::CorrectionAction::Amend) => {
                let amended = |request: &dyn WriteRequest, f: &mut Fields, field: &str| {
                    let mut inner = Fields::default();
                    let change = request.change(&mut inner);
                    f.nested(field, inner.finish(|| change))
                };
                let change = match &self.amendment {
                    Some(Amendment::Identify(r)) => amended(r, f, "identify"),
                    Some(Amendment::Adjust(r)) => amended(r, f, "adjust"),
                    Some(Amendment::Exit(r)) => amended(r, f, "exit"),
                    Some(Amendment::Relapse(r)) => amended(r, f, "relapse"),
                    None => f.check(
                        "amendment",
                        Err(InvalidValue(
                            "an amendment carries the replacement payload (identify, adjust, exit or relapse)".into(),
                        )),
                    ),
                };
                let effective_date = if self.amended_effective_date.is_empty() {
                    Some(None)
                } else {
                    f.check(
                        "amended_effective_date",
                        parse_date(&self.amended_effective_date),
                    )
                    .map(Some)
                };
                Some(CorrectionAction::Amend {
                    change: Box::new(change?),
                    effective_date: effective_date?,
                })
            }
            _ => f.check(
                "action",
                Err(InvalidValue(
                    "use CORRECTION_ACTION_ANNUL or CORRECTION_ACTION_AMEND".into(),
                )),
            ),
        };
        Some(Change::Correct(Correction {
            target_seq: self.target_seq,
            action: action?,
            reason: self.reason.clone(),
        }))
    }
}

/// Parses a write request into a command, reporting every malformed field.
pub fn command(request: &dyn WriteRequest) -> Result<Command, Error> {
    let mut f = Fields::default();
    let header = request.header();
    let household_id = f.check("household_id", HouseholdId::parse(header.household_id));
    let effective_date = f.check("effective_date", parse_date(header.effective_date));
    let change = request.change(&mut f);
    f.finish(|| {
        Some(Command {
            household_id: household_id?,
            effective_date: effective_date?,
            document_ref: header.document_ref.to_owned(),
            expected_version: header.expected_version,
            request_id: (!header.request_id.is_empty()).then(|| header.request_id.to_owned()),
            change: change?,
        })
    })
}

/// Parses one command of a batch.
pub fn batch_command(command_message: &pb::Command) -> Result<Command, Error> {
    use pb::command::Command as Kind;
    match &command_message.command {
        Some(Kind::Identify(r)) => command(&**r),
        Some(Kind::Adjust(r)) => command(&**r),
        Some(Kind::Exit(r)) => command(&**r),
        Some(Kind::Relapse(r)) => command(&**r),
        Some(Kind::Correct(r)) => command(&**r),
        None => Err(Error::invalid(
            "command",
            "is empty; set one of identify, adjust, exit, relapse, correct",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------------------------

pub fn date(d: Date) -> String {
    domain::date_string(d)
}

fn member_out(m: &domain::Member) -> pb::Member {
    pb::Member {
        id_number: m.id_number.as_str().to_owned(),
        name: m.name.clone(),
        relation: pb::Relation::from(m.relation) as i32,
        health: pb::Health::from(m.health) as i32,
        labor: pb::Labor::from(m.labor) as i32,
        schooling: pb::Schooling::from(m.schooling) as i32,
    }
}

fn helper_out(h: &domain::Helper) -> pb::Helper {
    pb::Helper {
        name: h.name.clone(),
        unit: h.unit.clone(),
    }
}

fn measure_out(m: &domain::Measure) -> pb::Measure {
    pb::Measure {
        year: m.year,
        kind: pb::MeasureKind::from(m.kind) as i32,
        note: m.note.clone(),
    }
}

fn criterion_out(c: &domain::Criterion) -> Option<pb::Criterion> {
    Some(pb::Criterion {
        met: c.met,
        note: c.note.clone(),
    })
}

fn assessment_out(a: &domain::Assessment) -> pb::Assessment {
    pb::Assessment {
        income: criterion_out(&a.income),
        health: criterion_out(&a.health),
        education: criterion_out(&a.education),
        housing: criterion_out(&a.housing),
        potential: criterion_out(&a.potential),
        industry: criterion_out(&a.industry),
    }
}

fn procedure_out(p: &domain::Procedure) -> pb::Procedure {
    pb::Procedure {
        applied_on: date(p.applied_on),
        village_review_on: date(p.village_review_on),
        village_notice_on: date(p.village_notice_on),
        township_notice_on: date(p.township_notice_on),
        county_notice_on: date(p.county_notice_on),
    }
}

fn causes_out(causes: &[domain::Cause]) -> Vec<i32> {
    causes.iter().map(|c| pb::Cause::from(*c) as i32).collect()
}

pub fn household(id: &HouseholdId, view: &HouseholdView) -> pb::Household {
    let s = &view.state;
    pb::Household {
        household_id: id.as_str().to_owned(),
        version: view.version,
        status: pb::Status::from(s.status) as i32,
        region_code: s.region_code.into(),
        members: s.members.iter().map(member_out).collect(),
        head_id: s.head_id.as_str().to_owned(),
        attribute: pb::Attribute::from(s.attribute) as i32,
        primary_cause: pb::Cause::from(s.primary_cause) as i32,
        other_causes: causes_out(&s.other_causes),
        income_per_capita: s.income_per_capita,
        safety_net: s.safety_net,
        monitoring: pb::Monitoring::from(s.monitoring) as i32,
        measures: s.measures.iter().map(measure_out).collect(),
        helpers: s
            .helpers
            .iter()
            .map(|h| pb::HelperAssignment {
                helper: Some(helper_out(&h.helper)),
                since: date(h.since),
            })
            .collect(),
        assessment: s.assessment.as_ref().map(assessment_out),
        identified_on: date(s.identified_on),
        exited_on: s.exited_on.map(date).unwrap_or_default(),
        last_effective_date: date(s.last_effective_date),
        last_seq: view.last_seq,
    }
}

pub fn receipt(r: &Receipt) -> pb::Receipt {
    receipt_at(r, timestamp(r.recorded_at))
}

fn receipt_at(r: &Receipt, recorded_at: String) -> pb::Receipt {
    pb::Receipt {
        seq: r.seq,
        version: r.version,
        hash: r.hash.to_vec(),
        recorded_at,
        replayed: r.replayed,
    }
}

/// The receipts of a batch. Its events were recorded at one instant (a commit's), so each
/// distinct time is written out once, not per event (~2% of a batch's instructions).
pub fn receipts(receipts: &[Receipt]) -> Vec<pb::Receipt> {
    let mut last: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
    receipts
        .iter()
        .map(|r| {
            let text = match &last {
                Some((at, text)) if *at == r.recorded_at => text.clone(),
                _ => last
                    .insert((r.recorded_at, timestamp(r.recorded_at)))
                    .1
                    .clone(),
            };
            receipt_at(r, text)
        })
        .collect()
}

pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A command as the message a client sends in a batch: the inverse of [`batch_command`].
/// Clients written in Rust (the demo's loader, the tests) build domain commands and send these.
pub fn command_message(command: &Command) -> pb::Command {
    use pb::command::Command as Kind;
    let household_id = command.household_id.as_str().to_owned();
    let effective_date = date(command.effective_date);
    let document_ref = command.document_ref.clone();
    let expected_version = command.expected_version;
    let request_id = command.request_id.clone().unwrap_or_default();
    let kind = match &command.change {
        Change::Identify(id) => Kind::Identify(Box::new(pb::IdentifyRequest {
            household_id,
            effective_date,
            document_ref,
            expected_version,
            request_id,
            region_code: id.region_code.into(),
            members: id.members.iter().map(member_out).collect(),
            head_id: id.head_id.as_str().to_owned(),
            attribute: pb::Attribute::from(id.attribute) as i32,
            primary_cause: pb::Cause::from(id.primary_cause) as i32,
            other_causes: causes_out(&id.other_causes),
            income_per_capita: id.income_per_capita,
            safety_net: id.safety_net,
            monitoring: pb::Monitoring::from(id.monitoring) as i32,
            helper: id.helper.as_ref().map(helper_out),
            measures: id.measures.iter().map(measure_out).collect(),
            assessment: id.assessment.as_ref().map(assessment_out),
            procedure: id.procedure.as_ref().map(procedure_out),
        })),
        Change::Adjust(a) => Kind::Adjust(Box::new(pb::AdjustRequest {
            household_id,
            effective_date,
            document_ref,
            expected_version,
            request_id,
            members_added: a
                .members_added
                .iter()
                .map(|m| pb::MemberAdded {
                    member: Some(member_out(&m.member)),
                    reason: pb::MemberAddedReason::from(m.reason) as i32,
                })
                .collect(),
            members_removed: a
                .members_removed
                .iter()
                .map(|m| pb::MemberRemoved {
                    id_number: m.id_number.as_str().to_owned(),
                    reason: pb::MemberRemovedReason::from(m.reason) as i32,
                })
                .collect(),
            head_id: a.head_id.as_ref().map(ToString::to_string),
            relocate_to: a.relocate_to.map(String::from),
            attribute: a.attribute.map(|v| pb::Attribute::from(v) as i32),
            causes: a.causes.as_ref().map(|c| pb::Causes {
                primary_cause: pb::Cause::from(c.primary) as i32,
                other_causes: causes_out(&c.others),
            }),
            income_per_capita: a.income_per_capita,
            safety_net: a.safety_net,
            monitoring: a.monitoring.map(|v| pb::Monitoring::from(v) as i32),
            helper: a.helper.as_ref().map(helper_out),
            measures: a.measures.iter().map(measure_out).collect(),
            note: a.note.clone(),
        })),
        Change::Exit(x) => Kind::Exit(Box::new(pb::ExitRequest {
            household_id,
            effective_date,
            document_ref,
            expected_version,
            request_id,
            reason: pb::ExitReason::from(x.reason) as i32,
            checklist: x.checklist.as_ref().map(|c| pb::ExitChecklist {
                food_and_clothing: c.food_and_clothing,
                compulsory_education: c.compulsory_education,
                basic_medical_care: c.basic_medical_care,
                safe_housing: c.safe_housing,
                safe_drinking_water: c.safe_drinking_water,
            }),
            income_per_capita: x.income_per_capita,
            procedure: x.procedure.as_ref().map(procedure_out),
            note: x.note.clone(),
        })),
        Change::Relapse(r) => Kind::Relapse(Box::new(pb::RelapseRequest {
            household_id,
            effective_date,
            document_ref,
            expected_version,
            request_id,
            primary_cause: pb::Cause::from(r.primary_cause) as i32,
            income_per_capita: r.income_per_capita,
            note: r.note.clone(),
        })),
        Change::Correct(c) => {
            use pb::correct_request::Amendment;
            let (action, amendment, amended_effective_date) = match &c.action {
                CorrectionAction::Annul => (pb::CorrectionAction::Annul, None, String::new()),
                CorrectionAction::Amend {
                    change,
                    effective_date: amended,
                } => {
                    let inner = Command {
                        change: (**change).clone(),
                        expected_version: None,
                        request_id: None,
                        ..command.clone()
                    };
                    let amendment = match command_message(&inner).command {
                        Some(Kind::Identify(r)) => Some(Amendment::Identify(*r)),
                        Some(Kind::Adjust(r)) => Some(Amendment::Adjust(*r)),
                        Some(Kind::Exit(r)) => Some(Amendment::Exit(*r)),
                        Some(Kind::Relapse(r)) => Some(Amendment::Relapse(*r)),
                        // The rules refuse an amendment that carries a correction.
                        Some(Kind::Correct(_)) | None => None,
                    };
                    (
                        pb::CorrectionAction::Amend,
                        amendment,
                        amended.map(date).unwrap_or_default(),
                    )
                }
            };
            Kind::Correct(Box::new(pb::CorrectRequest {
                household_id,
                effective_date,
                document_ref,
                expected_version,
                request_id,
                target_seq: c.target_seq,
                action: action as i32,
                reason: c.reason.clone(),
                amendment,
                amended_effective_date,
            }))
        }
    };
    pb::Command {
        command: Some(kind),
    }
}

pub fn event(recorded: &Recorded) -> pb::Event {
    use pb::command::Command as Kind;
    use pb::event::Payload;
    let e = &recorded.event;
    // The payload is the command the event records, as a client would have sent it.
    let as_command = Command {
        household_id: e.household_id.clone(),
        effective_date: e.effective_date,
        document_ref: e.document_ref.clone(),
        expected_version: None,
        request_id: e.request_id.clone(),
        change: e.change.clone(),
    };
    let (kind, payload) = match command_message(&as_command).command {
        Some(Kind::Identify(r)) => (pb::EventKind::Identify, Some(Payload::Identify(*r))),
        Some(Kind::Adjust(r)) => (pb::EventKind::Adjust, Some(Payload::Adjust(*r))),
        Some(Kind::Exit(r)) => (pb::EventKind::Exit, Some(Payload::Exit(*r))),
        Some(Kind::Relapse(r)) => (pb::EventKind::Relapse, Some(Payload::Relapse(*r))),
        Some(Kind::Correct(r)) => (pb::EventKind::Correct, Some(Payload::Correct(*r))),
        None => (pb::EventKind::Unspecified, None),
    };
    pb::Event {
        seq: e.seq,
        household_id: e.household_id.as_str().to_owned(),
        version: e.version,
        kind: kind as i32,
        effective_date: date(e.effective_date),
        recorded_at: timestamp(e.recorded_at),
        actor: e.actor.clone(),
        document_ref: e.document_ref.clone(),
        request_id: e.request_id.clone().unwrap_or_default(),
        payload,
        body: recorded.body.clone(),
        hash: recorded.hash.to_vec(),
        corrected_by: Vec::new(),
        body_withheld: false,
    }
}

pub fn history_entry(entry: &HistoryEntry) -> pb::Event {
    pb::Event {
        corrected_by: entry.corrected_by.clone(),
        ..event(&entry.recorded)
    }
}

/// Parses a log position; unset is the head.
pub fn known_at(field: &str, known: Option<&pb::KnownAt>) -> Result<KnownAt, Error> {
    use pb::known_at::Position;
    match known.and_then(|k| k.position.as_ref()) {
        None => Ok(KnownAt::Head),
        Some(Position::Seq(seq)) => Ok(KnownAt::Seq(*seq)),
        Some(Position::Time(text)) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| KnownAt::Time(t.with_timezone(&chrono::Utc)))
            .map_err(|e| {
                Error::invalid(
                    format!("{field}.time"),
                    format!("'{text}' is not an RFC 3339 timestamp: {e}"),
                )
            }),
    }
}

/// Parses a point in time; unset is now.
pub fn point_in_time(field: &str, at: Option<&pb::PointInTime>) -> Result<At, Error> {
    let Some(at) = at else { return Ok(At::NOW) };
    let as_of = if at.as_of.is_empty() {
        None
    } else {
        Some(parse_date(&at.as_of).map_err(|e| Error::invalid(format!("{field}.as_of"), e))?)
    };
    Ok(At {
        as_of,
        known_at: known_at(&format!("{field}.known_at"), at.known_at.as_ref())?,
    })
}

pub fn roster_entry(id: &HouseholdId, s: &Snapshot) -> pb::RosterEntry {
    pb::RosterEntry {
        household_id: id.as_str().to_owned(),
        region_code: s.region_code.into(),
        status: pb::Status::from(s.status) as i32,
        people: s.people,
        attribute: pb::Attribute::from(s.attribute) as i32,
        primary_cause: pb::Cause::from(s.primary_cause) as i32,
        safety_net: s.safety_net,
    }
}

pub fn roster_change(c: &RosterChange) -> pb::RosterChange {
    let reason = match c.reason {
        ChangeReason::Identified => pb::RosterChangeReason::Identified,
        ChangeReason::Exited => pb::RosterChangeReason::Exited,
        ChangeReason::Relapsed => pb::RosterChangeReason::Relapsed,
        ChangeReason::Removed => pb::RosterChangeReason::Removed,
        ChangeReason::RelocatedIn => pb::RosterChangeReason::RelocatedIn,
        ChangeReason::RelocatedOut => pb::RosterChangeReason::RelocatedOut,
        ChangeReason::Corrected => pb::RosterChangeReason::Corrected,
    };
    pb::RosterChange {
        household_id: c.household_id.as_str().to_owned(),
        entered: c.entered,
        reason: reason as i32,
        from: c.from.as_ref().map(|s| roster_entry(&c.household_id, s)),
        to: c.to.as_ref().map(|s| roster_entry(&c.household_id, s)),
    }
}

pub fn flows(f: &Flows, known_at_seq: u64) -> pb::GetFlowsResponse {
    pb::GetFlowsResponse {
        identified: tally(f.identified),
        exited: tally(f.exited),
        relapsed: tally(f.relapsed),
        removed: tally(f.removed),
        dissolved: tally(f.dissolved),
        corrected: tally(f.corrected),
        relocated_in: tally(f.relocated_in),
        relocated_out: tally(f.relocated_out),
        born: tally(f.born),
        died: tally(f.died),
        married_in: tally(f.married_in),
        married_out: tally(f.married_out),
        known_at_seq,
        relocated: tally(f.relocated),
        measures: f
            .measures
            .iter()
            .map(|(kind, count)| pb::MeasureFlow {
                kind: pb::MeasureKind::from(*kind) as i32,
                count: tally(*count),
            })
            .collect(),
    }
}

fn tally(t: Tally) -> Option<pb::Tally> {
    Some(pb::Tally {
        households: t.households,
        people: t.people,
    })
}

fn stats_row(r: &StatsRow) -> Option<pb::StatsRow> {
    Some(pb::StatsRow {
        on_roll: tally(r.on_roll),
        exited: tally(r.exited),
    })
}

pub fn stats(prefix: domain::RegionPrefix, s: &Stats, known_at_seq: u64) -> pb::GetStatsResponse {
    pb::GetStatsResponse {
        region_prefix: prefix.to_string(),
        known_at_seq,
        total: stats_row(&s.total),
        safety_net: stats_row(&s.safety_net),
        by_region: s
            .by_region
            .iter()
            .map(|(region, row)| pb::RegionStats {
                region_prefix: region.to_string(),
                counts: stats_row(row),
            })
            .collect(),
        by_attribute: s
            .by_attribute
            .iter()
            .map(|(attribute, row)| pb::AttributeStats {
                attribute: pb::Attribute::from(*attribute) as i32,
                counts: stats_row(row),
            })
            .collect(),
        by_cause: s
            .by_cause
            .iter()
            .map(|(cause, row)| pb::CauseStats {
                primary_cause: pb::Cause::from(*cause) as i32,
                counts: stats_row(row),
            })
            .collect(),
    }
}

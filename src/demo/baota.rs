//! A deterministic register history of Baota District (宝塔区, 610602), 2014 to 2019, built to
//! reproduce the figures of the seed document (the 2019-10-15 press conference).
//!
//! The history is planned by cohort — when a household was identified and what became of it —
//! so that the seed's counts hold by construction, then sized so that its people counts hold
//! exactly, then written out as the commands a county system would send:
//!
//! ```text
//!   cohort (identified in)       what becomes of it                       households
//!   2014  建档立卡               lifted out 2015 (40 relapse 2017, out 2018)      900
//!                                lifted out 2016 / 2017 / 2018               3193
//!                                out 2016, relapse 2018, out 2019-11             7
//!                                safety net (兜底), stays on the roll          200
//!                                out 2016, dissolved 2018 (自然销户)            12 (not counted)
//!   2015                         out 2016 (30 relapse 2017, out 2018) / 2017 / 2018   1713
//!                                safety net                                     80
//!   2016                         out 2017 / 2018                              942
//!                                out 2018-12-20, a wrong exit annulled 2019-06-01,
//!                                out again 2019-12                               8
//!                                safety net                                     50
//!                                wrongly identified, removed 2017 (错评剔除)    20 (not counted)
//!   2017                         out 2018 / safety net                    425 / 35
//!   2018                         out 2019-12 / safety net                   12 / 80
//! ```
//!
//! Then: ever registered and not removed at 2019-10-15 = 7645; on the roll at 2015-12-31 =
//! 3400 + 12 + 1793 = 5205; on the roll at 2018-12-31 and 2019-10-15 = 445 safety-net + 27
//! (7 relapsed, 8 wrongly exited, 12 identified in 2018) = 472, and the 27 leave by 2019-12-31.
//!
//! People are sized per household (a core that stays, plus members who are born, die or marry
//! in or out, each a dated event), and the 2015 count is tuned by adding births and deaths after
//! 2015, which move it without moving the 2019 count. 776 households are relocated (易地扶贫搬迁)
//! and 3154 have their houses rebuilt (危房改造); 1762 households with 3572 people are low-income
//! or destitute-supported (低保 / 五保).
//!
//! Pure: seeded ChaCha8, no clock, no I/O. The same seed gives the same commands.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, Days, NaiveDate};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::domain::{
    Adjustment, Assessment, Attribute, Cause, Change, Command, Correction, CorrectionAction,
    Criterion, Date, ExitChecklist, ExitReason, ExitRecord, Health, Helper, HouseholdId, IdNumber,
    Identification, Labor, Measure, MeasureKind, Member, MemberAdded, MemberAddedReason,
    MemberRemoved, MemberRemovedReason, Monitoring, Policy, Procedure, RegionCode, RelapseRecord,
    Relation, Schooling,
};

/// The seed the demo uses.
pub const DEFAULT_SEED: u64 = 20191015;

/// The district's code.
pub const DISTRICT: &str = "610602";

/// The figures the seed gives, which the data set reproduces.
pub mod targets {
    /// 建档立卡 (on the roll or exited) at 2019-10-15.
    pub const REGISTERED: (u64, u64) = (7645, 17511);
    /// On the roll at 2015-12-31.
    pub const ON_ROLL_2015: (u64, u64) = (5205, 11174);
    /// On the roll at 2018-12-31, and still at 2019-10-15.
    pub const ON_ROLL_2018: (u64, u64) = (472, 697);
    /// Of those, kept by the safety net (兜底).
    pub const SAFETY_NET: (u64, u64) = (445, 627);
    /// Of those, lifted out by 2019-12-31.
    pub const EXIT_2019: (u64, u64) = (27, 70);
    /// Relocated (易地扶贫搬迁).
    pub const RELOCATED: u64 = 776;
    /// Houses rebuilt (危房改造).
    pub const HOUSING: u64 = 3154;
    /// Low-income or destitute-supported (低保五保), registered at 2019-10-15.
    pub const LOW_INCOME: (u64, u64) = (1762, 3572);
    /// Administrative villages and communities.
    pub const VILLAGES: usize = 320;
    pub const COMMUNITIES: usize = 50;
    /// Poor villages (贫困村).
    pub const POOR_VILLAGES: usize = 104;
}

/// The seed's dates.
pub mod dates {
    /// The press conference's "now".
    pub const NOW: &str = "2019-10-15";
    /// The day the inspection read the register.
    pub const INSPECTION: &str = "2019-03-01";
    /// The day the rectification annulled the wrong exits.
    pub const RECTIFICATION: &str = "2019-06-01";
}

/// What kind of unit a township-level division is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TownshipKind {
    Town,
    Township,
    Street,
}

impl TownshipKind {
    pub fn label(self) -> &'static str {
        match self {
            TownshipKind::Town => "镇 town",
            TownshipKind::Township => "乡 township",
            TownshipKind::Street => "街道 street office",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Township {
    /// Nine digits.
    pub code: String,
    pub name: String,
    pub kind: TownshipKind,
}

#[derive(Debug, Clone)]
pub struct Village {
    pub code: RegionCode,
    pub name: String,
    pub township: usize,
    pub poor: bool,
    pub community: bool,
}

/// The division tree under Baota District.
#[derive(Debug, Clone)]
pub struct District {
    pub townships: Vec<Township>,
    pub villages: Vec<Village>,
}

impl District {
    /// The name of a 9- or 12-digit code, if it is one of the district's.
    pub fn name_of(&self, code: &str) -> Option<&str> {
        match code.len() {
            6 if code == DISTRICT => Some("宝塔区"),
            9 => self
                .townships
                .iter()
                .find(|t| t.code == code)
                .map(|t| t.name.as_str()),
            12 => self
                .villages
                .iter()
                .find(|v| v.code.to_string() == code)
                .map(|v| v.name.as_str()),
            _ => None,
        }
    }
}

/// The data set: the district, the commands in the order they are sent, and the inspection.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub district: District,
    pub commands: Vec<Command>,
    /// How many commands precede the first one recorded after the inspection day: the log
    /// position "as the register showed on 2019-03-01".
    pub known_at_inspection: u64,
    /// The households whose wrong exits were annulled.
    pub corrected: Vec<HouseholdId>,
}

const TOWNS: [&str; 9] = [
    "河庄坪镇",
    "李渠镇",
    "姚店镇",
    "青化砭镇",
    "蟠龙镇",
    "甘谷驿镇",
    "临镇镇",
    "南泥湾镇",
    "柳林镇",
];
const TOWNSHIPS: [&str; 4] = ["川口乡", "冯庄乡", "麻洞川乡", "万花乡"];
const STREETS: [&str; 5] = [
    "宝塔山街道",
    "南市街道",
    "凤凰山街道",
    "枣园街道",
    "桥沟街道",
];

const PLACE_FIRST: [&str; 24] = [
    "枣", "杨", "高", "李", "马", "白", "刘", "张", "贺", "柳", "石", "黄", "麻", "庙", "桃", "杏",
    "川", "东", "西", "南", "北", "阳", "寺", "吴",
];
const PLACE_SECOND: [&str; 16] = [
    "家", "园", "庄", "坪", "山", "湾", "沟", "峁", "塬", "河", "渠", "岔", "圪", "坡", "畔", "台",
];
const PLACE_END: [&str; 4] = ["村", "沟村", "湾村", "坪村"];

/// The division tree: 9 towns, 4 townships and 5 street offices; 320 villages (104 of them
/// poor) and 50 communities. The seed's places (川口乡 枣元村, 甘谷驿镇 代家沟村, 万花乡) are in it.
pub fn district(rng: &mut ChaCha8Rng) -> District {
    let mut townships = Vec::new();
    for (i, name) in STREETS.iter().enumerate() {
        townships.push(Township {
            code: format!("{DISTRICT}{:03}", i + 1),
            name: (*name).into(),
            kind: TownshipKind::Street,
        });
    }
    for (i, name) in TOWNS.iter().enumerate() {
        townships.push(Township {
            code: format!("{DISTRICT}{:03}", 100 + i),
            name: (*name).into(),
            kind: TownshipKind::Town,
        });
    }
    for (i, name) in TOWNSHIPS.iter().enumerate() {
        townships.push(Township {
            code: format!("{DISTRICT}{:03}", 200 + i),
            name: (*name).into(),
            kind: TownshipKind::Township,
        });
    }
    // Communities: 8 in each street office, 10 in the seats of the first five towns.
    let mut villages = Vec::new();
    let mut used_names = std::collections::HashSet::new();
    let mut place = |rng: &mut ChaCha8Rng, end: &str| loop {
        let name = format!(
            "{}{}{}",
            PLACE_FIRST.choose(rng).expect("not empty"),
            PLACE_SECOND.choose(rng).expect("not empty"),
            end
        );
        if used_names.insert(name.clone()) {
            return name;
        }
    };
    let add =
        |villages: &mut Vec<Village>, township: usize, n: usize, name: String, community: bool| {
            let code = format!(
                "{}{:03}",
                townships[township].code,
                if community { n } else { 200 + n }
            );
            villages.push(Village {
                code: RegionCode::parse(&code).expect("generated codes have 12 digits"),
                name,
                township,
                poor: false,
                community,
            });
        };
    for street in 0..5 {
        for n in 1..=8 {
            let name = place(rng, "社区");
            add(&mut villages, street, n, name, true);
        }
    }
    for town in 5..10 {
        for n in 1..=2 {
            let name = place(rng, "社区");
            add(&mut villages, town, n, name, true);
        }
    }
    // 320 villages over the 13 towns and townships: 25 each, and 20 in the last three.
    let rural: Vec<usize> = (5..18).collect();
    for (k, &township) in rural.iter().enumerate() {
        let count = if k < 10 { 26 } else { 20 };
        for n in 1..=count {
            let name = match (townships[township].name.as_str(), n) {
                ("川口乡", 1) => "枣元村".to_string(),
                ("甘谷驿镇", 1) => "代家沟村".to_string(),
                _ => {
                    let end = *PLACE_END.choose(rng).expect("not empty");
                    place(rng, end)
                }
            };
            add(&mut villages, township, n, name, false);
        }
    }
    // 104 poor villages, the seed's named ones among them.
    let mut rural_indexes: Vec<usize> = (0..villages.len())
        .filter(|&i| !villages[i].community)
        .collect();
    rural_indexes.shuffle(rng);
    rural_indexes
        .sort_by_key(|&i| !(villages[i].name == "枣元村" || villages[i].name == "代家沟村"));
    for &i in rural_indexes.iter().take(targets::POOR_VILLAGES) {
        villages[i].poor = true;
    }
    District {
        townships,
        villages,
    }
}

/// What becomes of a household after it is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Lifted out in this year; `relapse` gives (year relapsed, year lifted out again).
    Out {
        year: i32,
        relapse: Option<(i32, i32)>,
    },
    /// Kept by the safety net; stays on the roll.
    SafetyNet,
    /// Lifted out 2016, relapsed 2018, lifted out 2019-11.
    RelapsedStays,
    /// Lifted out 2018-12-20 (wrongly), annulled 2019-06-01, lifted out 2019-12.
    WrongExit,
    /// Identified in 2018, lifted out 2019-12.
    Late,
    /// Wrongly identified; removed the next spring.
    Removed,
    /// A person living alone: lifted out 2016, dies 2018 (自然销户).
    Dissolved,
}

impl Fate {
    /// Whether the household is counted as registered at 2019-10-15.
    fn registered(self) -> bool {
        !matches!(self, Fate::Removed | Fate::Dissolved)
    }

    fn in_472(self) -> bool {
        matches!(
            self,
            Fate::SafetyNet | Fate::RelapsedStays | Fate::WrongExit | Fate::Late
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberChange {
    Birth,
    Death,
    MarriageIn,
    MarriageOut,
}

/// One household before it is written out.
#[derive(Debug, Clone)]
struct Plan {
    id: String,
    village: usize,
    identified: Date,
    fate: Fate,
    /// People who stay from identification to 2019-10-15.
    core: u32,
    /// Dated member changes (each adds or removes one person).
    changes: Vec<(Date, MemberChange)>,
    low_income: bool,
    relocated: Option<(Date, usize)>,
    housing: Option<Date>,
}

impl Plan {
    /// People at identification.
    fn initial(&self) -> u32 {
        self.core
            + self
                .changes
                .iter()
                .filter(|(_, c)| matches!(c, MemberChange::Death | MemberChange::MarriageOut))
                .count() as u32
    }

    /// People at 2019-10-15 (no changes are planned after it).
    fn people(&self) -> u32 {
        self.core
            + self
                .changes
                .iter()
                .filter(|(_, c)| matches!(c, MemberChange::Birth | MemberChange::MarriageIn))
                .count() as u32
    }

    /// People at `day`.
    fn people_at(&self, day: Date) -> u32 {
        let mut n = self.initial() as i64;
        for (date, change) in &self.changes {
            if *date <= day {
                n += match change {
                    MemberChange::Birth | MemberChange::MarriageIn => 1,
                    MemberChange::Death | MemberChange::MarriageOut => -1,
                };
            }
        }
        n as u32
    }

    /// The last day the household is on the roll or exited with members changing: changes go
    /// between identification + 60 days and this.
    fn quiet_after(&self) -> Date {
        match self.fate {
            Fate::Removed => self.identified,
            Fate::Dissolved => date(2016, 12, 1),
            // The 472 keep the same people through 2019, as the seed counts them.
            f if f.in_472() => date(2018, 10, 31),
            _ => date(2019, 9, 30),
        }
    }
}

fn date(y: i32, m: u32, d: u32) -> Date {
    NaiveDate::from_ymd_opt(y, m, d).expect("generator dates are valid")
}

fn between(rng: &mut ChaCha8Rng, from: Date, to: Date) -> Date {
    let span = (to - from).num_days().max(0);
    from + Days::new(rng.random_range(0..=span) as u64)
}

/// The annual windows in which identifications take effect.
fn identification_window(year: i32) -> (Date, Date) {
    match year {
        2014 => (date(2014, 10, 8), date(2014, 12, 20)),
        2015 => (date(2015, 6, 1), date(2015, 9, 30)),
        _ => (date(year, 3, 15), date(year, 5, 31)),
    }
}

/// Exits take effect at the year's end, after the county's announcement.
fn exit_window(year: i32) -> (Date, Date) {
    (date(year, 11, 15), date(year, 12, 25))
}

/// The cohorts of the module doc, as (identified in, fate, households).
fn cohorts() -> Vec<(i32, Fate, usize)> {
    let out = |year| Fate::Out {
        year,
        relapse: None,
    };
    let relapsing = |year, back, again| Fate::Out {
        year,
        relapse: Some((back, again)),
    };
    vec![
        (2014, relapsing(2015, 2017, 2018), 40),
        (2014, out(2015), 860),
        (2014, out(2016), 1500),
        (2014, out(2017), 1100),
        (2014, out(2018), 593),
        (2014, Fate::RelapsedStays, 7),
        (2014, Fate::SafetyNet, 200),
        (2014, Fate::Dissolved, 12),
        (2015, relapsing(2016, 2017, 2018), 30),
        (2015, out(2016), 670),
        (2015, out(2017), 600),
        (2015, out(2018), 413),
        (2015, Fate::SafetyNet, 80),
        (2016, out(2017), 500),
        (2016, out(2018), 442),
        (2016, Fate::WrongExit, 8),
        (2016, Fate::SafetyNet, 50),
        (2016, Fate::Removed, 20),
        (2017, out(2018), 425),
        (2017, Fate::SafetyNet, 35),
        (2018, Fate::Late, 12),
        (2018, Fate::SafetyNet, 80),
    ]
}

/// Splits `total` people over `count` households, each between `min` and `max`, around the
/// weights given for sizes min..=max.
fn sizes(
    rng: &mut ChaCha8Rng,
    count: usize,
    total: u32,
    min: u32,
    max: u32,
    weights: &[u32],
) -> Vec<u32> {
    let mut out: Vec<u32> = (0..count)
        .map(|_| {
            let mut pick = rng.random_range(0..weights.iter().sum::<u32>());
            let mut size = min;
            for w in weights {
                if pick < *w {
                    break;
                }
                pick -= w;
                size += 1;
            }
            size.min(max)
        })
        .collect();
    let mut sum: u32 = out.iter().sum();
    while sum != total {
        let i = rng.random_range(0..count);
        if sum < total && out[i] < max {
            out[i] += 1;
            sum += 1;
        } else if sum > total && out[i] > min {
            out[i] -= 1;
            sum -= 1;
        }
    }
    out
}

/// Plans every household: cohort, place, size, member changes, relocation and housing.
fn plan(rng: &mut ChaCha8Rng, district: &District) -> Vec<Plan> {
    let poor: Vec<usize> = (0..district.villages.len())
        .filter(|&i| district.villages[i].poor)
        .collect();
    let other_rural: Vec<usize> = (0..district.villages.len())
        .filter(|&i| !district.villages[i].poor && !district.villages[i].community)
        .collect();
    let communities: Vec<usize> = (0..district.villages.len())
        .filter(|&i| district.villages[i].community)
        .collect();
    let mut plans = Vec::new();
    let mut serial: BTreeMap<usize, u32> = BTreeMap::new();
    for (year, fate, count) in cohorts() {
        let (from, to) = identification_window(year);
        for _ in 0..count {
            // Poor households concentrate in the poor villages.
            let roll = rng.random_range(0..100);
            let village = *if roll < 78 {
                poor.choose(rng)
            } else if roll < 96 {
                other_rural.choose(rng)
            } else {
                communities.choose(rng)
            }
            .expect("the district has villages of every kind");
            let n = serial.entry(village).or_default();
            *n += 1;
            plans.push(Plan {
                id: format!("{}-{:04}", district.villages[village].code, n),
                village,
                identified: between(rng, from, to),
                fate,
                core: 1,
                changes: Vec::new(),
                low_income: false,
                relocated: None,
                housing: None,
            });
        }
    }

    // Sizes: the 472 exactly as the seed counts them; the rest share what is left.
    let registered_people = targets::REGISTERED.1 as u32;
    let (sn, sn_people) = (targets::SAFETY_NET.0 as usize, targets::SAFETY_NET.1 as u32);
    let (late, late_people) = (targets::EXIT_2019.0 as usize, targets::EXIT_2019.1 as u32);
    let sn_sizes = sizes(rng, sn, sn_people, 1, 3, &[60, 35, 5]);
    let late_sizes = sizes(rng, late, late_people, 1, 5, &[5, 25, 35, 25, 10]);
    let rest: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].fate.registered() && !plans[i].fate.in_472())
        .collect();
    let rest_people = registered_people - sn_people - late_people;
    let rest_sizes = sizes(
        rng,
        rest.len(),
        rest_people,
        1,
        7,
        &[14, 26, 22, 20, 12, 5, 1],
    );
    let (mut s, mut l) = (sn_sizes.into_iter(), late_sizes.into_iter());
    let mut r = rest_sizes.into_iter();
    for p in plans.iter_mut() {
        let final_size = match p.fate {
            Fate::SafetyNet => s.next(),
            f if f.in_472() => l.next(),
            Fate::Removed => Some(rng.random_range(2..=4)),
            Fate::Dissolved => Some(1),
            _ => r.next(),
        }
        .expect("sizes were drawn for every household");
        p.core = final_size;
    }

    // Natural change in the households whose people may change: births and marriages in make
    // the core smaller, deaths and marriages out make the start larger.
    let changeable: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].fate.registered() && !plans[i].fate.in_472())
        .collect();
    for &i in &changeable {
        let p = &mut plans[i];
        let start = p.identified + Days::new(60);
        let end = p.quiet_after();
        if start >= end {
            continue;
        }
        let draw = rng.random_range(0..100);
        let change = match draw {
            0..=5 => Some(MemberChange::Birth),
            6..=10 => Some(MemberChange::Death),
            11..=12 => Some(MemberChange::MarriageIn),
            13..=15 => Some(MemberChange::MarriageOut),
            _ => None,
        };
        if let Some(change) = change {
            let adds = matches!(change, MemberChange::Birth | MemberChange::MarriageIn);
            if adds && p.core < 2 {
                continue;
            }
            if adds {
                p.core -= 1;
            }
            p.changes.push((between(rng, start, end), change));
        }
    }

    // Tune the 2015 count: a birth after 2015 lowers it by one, a death after 2015 raises it,
    // and neither moves the 2019 count.
    let end_2015 = date(2015, 12, 31);
    let on_roll_2015 =
        |p: &Plan| p.identified <= end_2015 && !matches!(p.fate, Fate::Out { year: 2015, .. });
    let counted: u32 = plans
        .iter()
        .filter(|p| on_roll_2015(p))
        .map(|p| p.people_at(end_2015))
        .sum();
    let target = targets::ON_ROLL_2015.1 as u32;
    let mut tunable: Vec<usize> = (0..plans.len())
        .filter(|&i| {
            let p = &plans[i];
            on_roll_2015(p) && p.fate.registered() && !p.fate.in_472() && p.changes.is_empty()
        })
        .collect();
    tunable.shuffle(rng);
    let mut gap = i64::from(target) - i64::from(counted);
    let mut candidates = tunable.into_iter();
    while gap != 0 {
        let Some(i) = candidates.next() else { break };
        let p = &mut plans[i];
        let day = between(
            rng,
            date(2016, 3, 1),
            p.quiet_after().min(date(2018, 10, 31)),
        );
        if gap > 0 {
            p.changes.push((day, MemberChange::Death));
            gap -= 1;
        } else if p.core >= 2 {
            p.core -= 1;
            p.changes.push((day, MemberChange::Birth));
            gap += 1;
        }
    }
    assert_eq!(gap, 0, "the 2015 people count could not be tuned");

    // Relocation (易地扶贫搬迁) and housing renovation (危房改造) while on the roll.
    let mut movable: Vec<usize> = (0..plans.len())
        .filter(|&i| {
            let p = &plans[i];
            p.fate.registered()
                && !district.villages[p.village].community
                && p.identified < date(2018, 1, 1)
        })
        .collect();
    movable.shuffle(rng);
    let (relocated, rest) = movable.split_at(targets::RELOCATED as usize);
    for &i in relocated {
        let p = &plans[i];
        let township = district.villages[p.village].township;
        // Resettled in a community of the town's seat, or of the district's first street office.
        let sites: Vec<usize> = communities
            .iter()
            .copied()
            .filter(|&c| district.villages[c].township == township)
            .collect();
        let site = *sites
            .choose(rng)
            .or(communities.first())
            .expect("there are communities");
        let day = between(
            rng,
            p.identified + Days::new(30),
            on_roll_until(p).min(date(2018, 10, 31)),
        );
        plans[i].relocated = Some((day, site));
    }
    for &i in rest.iter().take(targets::HOUSING as usize) {
        let p = &plans[i];
        let day = between(
            rng,
            p.identified + Days::new(30),
            on_roll_until(p).min(date(2018, 10, 31)),
        );
        plans[i].housing = Some(day);
    }

    // 低保 / 五保: every safety-net household, then others until the seed's count holds.
    let (target_households, target_people) = targets::LOW_INCOME;
    let mut households = 0u64;
    let mut people = 0u64;
    for p in plans.iter_mut().filter(|p| p.fate == Fate::SafetyNet) {
        p.low_income = true;
        households += 1;
        people += u64::from(p.people());
    }
    let mut others: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].fate.registered() && plans[i].fate != Fate::SafetyNet)
        .collect();
    others.shuffle(rng);
    let mut chosen = Vec::new();
    for i in others.iter().copied() {
        let remaining = target_households - households;
        if remaining == 0 {
            break;
        }
        let size = u64::from(plans[i].people());
        let left_after = target_people.saturating_sub(people + size);
        // Keep the remaining households able to reach the remaining people (1 to 4 each).
        if people + size <= target_people
            && left_after >= remaining - 1
            && left_after <= (remaining - 1) * 4
        {
            plans[i].low_income = true;
            households += 1;
            people += size;
            chosen.push(i);
        }
    }
    assert_eq!(
        (households, people),
        targets::LOW_INCOME,
        "the 低保五保 counts could not be met"
    );
    plans
}

/// The last day a household is surely on the roll.
fn on_roll_until(p: &Plan) -> Date {
    match p.fate {
        Fate::Out { year, .. } => exit_window(year).0 - Days::new(1),
        Fate::RelapsedStays => date(2016, 11, 1),
        Fate::WrongExit => date(2018, 11, 1),
        Fate::Removed => date(2017, 2, 1),
        Fate::Dissolved => date(2016, 11, 1),
        Fate::SafetyNet | Fate::Late => date(2018, 11, 1),
    }
}

const FAMILY: [&str; 20] = [
    "张", "王", "李", "刘", "高", "杨", "白", "贺", "马", "薛", "郭", "冯", "曹", "霍", "任", "呼",
    "惠", "拓", "艾", "常",
];
const GIVEN_MALE: [&str; 24] = [
    "建军", "建国", "志强", "海军", "文斌", "永红", "国庆", "保平", "振华", "明亮", "延安", "富贵",
    "长生", "小军", "二虎", "满仓", "德胜", "宏伟", "世杰", "浩然", "子轩", "宇航", "博文", "天佑",
];
const GIVEN_FEMALE: [&str; 24] = [
    "秀英", "桂兰", "玉梅", "凤英", "翠花", "兰英", "春梅", "彩霞", "丽娟", "海燕", "小红", "艳萍",
    "金花", "爱琴", "芳芳", "莉莉", "晓燕", "欣怡", "梓涵", "雨桐", "佳怡", "思雨", "一诺", "可馨",
];

/// Hands out ID numbers that are valid and never repeat.
struct People {
    used: HashMap<(Date, bool), u16>,
}

impl People {
    fn id(&mut self, birth: Date, male: bool) -> IdNumber {
        let n = self.used.entry((birth, male)).or_insert(0);
        *n += 1;
        // Sequence: odd for men, even for women (GB 11643).
        let sequence = (*n * 2 - u16::from(male)).min(999);
        IdNumber::from_parts(610602, birth, sequence).expect("generated IDs are valid")
    }

    /// A person of either sex.
    fn anyone(
        &mut self,
        rng: &mut ChaCha8Rng,
        family: &str,
        birth: Date,
        relation: Relation,
        on: Date,
    ) -> Member {
        let male = rng.random_range(0..2) == 0;
        self.person(rng, family, birth, male, relation, on)
    }

    fn person(
        &mut self,
        rng: &mut ChaCha8Rng,
        family: &str,
        birth: Date,
        male: bool,
        relation: Relation,
        on: Date,
    ) -> Member {
        let given = if male {
            GIVEN_MALE.choose(rng)
        } else {
            GIVEN_FEMALE.choose(rng)
        }
        .expect("not empty");
        let age = on.year() - birth.year();
        let (labor, schooling) = match age {
            ..=5 => (Labor::NoLabor, Schooling::Preschool),
            6..=17 => (Labor::NoLabor, Schooling::InSchool),
            18..=59 => (
                *[
                    Labor::Ordinary,
                    Labor::Ordinary,
                    Labor::Skilled,
                    Labor::Weak,
                ]
                .choose(rng)
                .expect("not empty"),
                *[
                    Schooling::Primary,
                    Schooling::Junior,
                    Schooling::Junior,
                    Schooling::Senior,
                ]
                .choose(rng)
                .expect("not empty"),
            ),
            _ => (
                *[Labor::Weak, Labor::Lost, Labor::NoLabor]
                    .choose(rng)
                    .expect("not empty"),
                *[Schooling::Illiterate, Schooling::Primary]
                    .choose(rng)
                    .expect("not empty"),
            ),
        };
        let health = match (age, rng.random_range(0..100)) {
            (60.., 0..=39) => Health::ChronicIllness,
            (_, 0..=7) => Health::SeriousIllness,
            (_, 8..=12) => Health::Disabled,
            (_, 13..=20) => Health::ChronicIllness,
            _ => Health::Healthy,
        };
        Member {
            id_number: self.id(birth, male),
            name: format!("{family}{given}"),
            relation,
            health,
            labor,
            schooling,
        }
    }
}

fn born(rng: &mut ChaCha8Rng, from_year: i32, to_year: i32) -> Date {
    between(rng, date(from_year, 1, 1), date(to_year, 12, 28))
}

fn procedure(effective: Date) -> Procedure {
    Procedure {
        applied_on: effective - Days::new(42),
        village_review_on: effective - Days::new(36),
        village_notice_on: effective - Days::new(33),
        township_notice_on: effective - Days::new(24),
        county_notice_on: effective - Days::new(12),
    }
}

const CHECKLIST: ExitChecklist = ExitChecklist::ALL_MET;

fn document(day: Date, kind: &str, n: usize) -> String {
    format!("宝扶{kind}〔{}〕{}号", day.year(), n % 97 + 1)
}

/// Generates the data set for `seed`.
pub fn generate(seed: u64) -> DataSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let district = district(&mut rng);
    let plans = plan(&mut rng, &district);
    let policy = Policy::default();
    let mut people = People {
        used: HashMap::new(),
    };
    let mut commands: Vec<Command> = Vec::new();
    let mut corrected = Vec::new();
    let line = |year: i32| {
        policy
            .poverty_line(year)
            .expect("the demo's years have lines")
    };

    for (n, p) in plans.iter().enumerate() {
        let id = HouseholdId::parse(&p.id).expect("generated household ids are valid");
        let region = district.villages[p.village].code;
        let family = *FAMILY.choose(&mut rng).expect("not empty");
        let on = p.identified;
        let command = |day: Date, document_ref: String, change: Change| Command {
            household_id: id.clone(),
            effective_date: day,
            document_ref,
            expected_version: None,
            // Given below, once the household's commands are in their final order.
            request_id: None,
            change,
        };
        let mut own: Vec<Command> = Vec::new();

        // The members at identification: the core, then those who will leave.
        let elderly = p.fate == Fate::Dissolved || (p.initial() == 1 && rng.random_range(0..3) > 0);
        let head_birth = if elderly {
            born(&mut rng, 1930, 1950)
        } else {
            born(&mut rng, 1948, 1985)
        };
        let male_head = rng.random_range(0..100) < 82;
        let mut members =
            vec![people.person(&mut rng, family, head_birth, male_head, Relation::Head, on)];
        let leaving: Vec<MemberChange> = p
            .changes
            .iter()
            .map(|(_, c)| *c)
            .filter(|c| matches!(c, MemberChange::Death | MemberChange::MarriageOut))
            .collect();
        let core = p.core as usize;
        for k in 1..core {
            let member = if k == 1 && rng.random_range(0..100) < 85 {
                let birth = born(&mut rng, head_birth.year() - 4, head_birth.year() + 3);
                people.person(&mut rng, family, birth, !male_head, Relation::Spouse, on)
            } else {
                let earliest = (head_birth.year() + 20).min(on.year() - 1);
                let birth = born(&mut rng, earliest, on.year() - 1);
                people.anyone(&mut rng, family, birth, Relation::Child, on)
            };
            members.push(member);
        }
        let mut leavers: Vec<IdNumber> = Vec::new();
        for change in &leaving {
            let member = match change {
                MemberChange::Death => {
                    let birth = born(&mut rng, 1925, 1945);
                    people.anyone(&mut rng, family, birth, Relation::Parent, on)
                }
                _ => {
                    // A younger sister or brother of the head, who later marries out.
                    let birth = born(
                        &mut rng,
                        head_birth.year(),
                        (head_birth.year() + 8).min(on.year() - 18),
                    );
                    people.anyone(&mut rng, family, birth, Relation::Sibling, on)
                }
            };
            leavers.push(member.id_number);
            members.push(member);
        }
        let head_id = members[0].id_number;
        let serious = members.iter().any(|m| m.health != Health::Healthy);
        let primary_cause = if p.fate == Fate::SafetyNet || p.fate == Fate::Dissolved {
            *[Cause::Illness, Cause::Disability, Cause::LackOfLabor]
                .choose(&mut rng)
                .expect("not empty")
        } else if serious {
            *[Cause::Illness, Cause::Disability, Cause::LackOfSkills]
                .choose(&mut rng)
                .expect("not empty")
        } else {
            *[
                Cause::LackOfFunds,
                Cause::LackOfSkills,
                Cause::LackOfLabor,
                Cause::Schooling,
                Cause::PoorTransport,
                Cause::Disaster,
                Cause::LackOfWater,
                Cause::LackOfDrive,
            ]
            .choose(&mut rng)
            .expect("not empty")
        };
        let other = *[
            Cause::LackOfSkills,
            Cause::LackOfFunds,
            Cause::LackOfLand,
            Cause::Other,
        ]
        .choose(&mut rng)
        .expect("not empty");
        let attribute = if !p.low_income {
            Attribute::General
        } else if p.core == 1 && elderly {
            Attribute::DestituteSupport
        } else {
            Attribute::LowIncome
        };
        let income = line(on.year()) - rng.random_range(300..1500);
        let criterion = |met: bool, note: &str| Criterion {
            met,
            note: note.into(),
        };
        own.push(command(
            on,
            document(on, "识", n),
            Change::Identify(Identification {
                region_code: region,
                members,
                head_id,
                attribute,
                primary_cause,
                other_causes: if other == primary_cause {
                    vec![]
                } else {
                    vec![other]
                },
                income_per_capita: income,
                safety_net: p.fate == Fate::SafetyNet,
                monitoring: Monitoring::NotMonitored,
                helper: Some(Helper {
                    name: format!(
                        "{}{}",
                        FAMILY.choose(&mut rng).expect("not empty"),
                        GIVEN_MALE.choose(&mut rng).expect("not empty")
                    ),
                    unit: format!(
                        "{}人民政府",
                        district.townships[district.villages[p.village].township].name
                    ),
                }),
                measures: Vec::new(),
                assessment: Some(Assessment {
                    income: criterion(true, "人均纯收入低于当年标准"),
                    health: criterion(!serious, if serious { "家庭成员患病" } else { "" }),
                    education: criterion(true, ""),
                    housing: criterion(
                        p.housing.is_none(),
                        if p.housing.is_some() { "危房" } else { "" },
                    ),
                    potential: criterion(rng.random_range(0..2) == 0, ""),
                    industry: criterion(rng.random_range(0..3) == 0, ""),
                }),
                procedure: Some(procedure(on)),
            }),
        ));

        // Everything after identification, in date order.
        let mut later: Vec<(Date, Change, String)> = Vec::new();
        let lift = |rng: &mut ChaCha8Rng, year: i32, day: Date, income: Option<i64>| {
            (
                day,
                Change::Exit(ExitRecord {
                    reason: ExitReason::LiftedOut,
                    checklist: Some(CHECKLIST),
                    income_per_capita: Some(
                        income.unwrap_or_else(|| line(year) + rng.random_range(400..4000)),
                    ),
                    procedure: Some(procedure(day)),
                    note: String::new(),
                }),
                document(day, "退", n),
            )
        };
        let exit_day = |rng: &mut ChaCha8Rng, year: i32| {
            let (from, to) = exit_window(year);
            between(rng, from, to)
        };
        let relapse = |rng: &mut ChaCha8Rng, year: i32| {
            let day = between(rng, date(year, 4, 1), date(year, 7, 31));
            (
                day,
                Change::Relapse(RelapseRecord {
                    primary_cause: *[Cause::Illness, Cause::Disaster]
                        .choose(rng)
                        .expect("not empty"),
                    income_per_capita: Some(line(year) - rng.random_range(200..1200)),
                    note: "因病因灾返贫".into(),
                }),
                document(day, "返", n),
            )
        };
        match p.fate {
            Fate::Out {
                year,
                relapse: back,
            } => {
                let day = exit_day(&mut rng, year);
                later.push(lift(&mut rng, year, day, None));
                if let Some((relapsed, again)) = back {
                    later.push(relapse(&mut rng, relapsed));
                    let day = exit_day(&mut rng, again);
                    later.push(lift(&mut rng, again, day, None));
                }
            }
            Fate::SafetyNet => {}
            Fate::RelapsedStays => {
                let day = exit_day(&mut rng, 2016);
                later.push(lift(&mut rng, 2016, day, None));
                later.push(relapse(&mut rng, 2018));
                let day = between(&mut rng, date(2019, 11, 1), date(2019, 11, 30));
                later.push(lift(&mut rng, 2019, day, None));
            }
            Fate::WrongExit => {
                // The wrong exit, its annulment (below) and the true exit.
                later.push(lift(
                    &mut rng,
                    2018,
                    date(2018, 12, 20),
                    Some(line(2018) + 105),
                ));
                let day = between(&mut rng, date(2019, 12, 1), date(2019, 12, 25));
                later.push(lift(&mut rng, 2019, day, None));
            }
            Fate::Late => {
                let day = between(&mut rng, date(2019, 12, 1), date(2019, 12, 25));
                later.push(lift(&mut rng, 2019, day, None));
            }
            Fate::Removed => {
                let day = between(&mut rng, date(2017, 3, 1), date(2017, 4, 30));
                later.push((
                    day,
                    Change::Exit(ExitRecord {
                        reason: ExitReason::Removed,
                        checklist: None,
                        income_per_capita: None,
                        procedure: Some(procedure(day)),
                        note: "家庭有财政供养人员, 错评剔除".into(),
                    }),
                    document(day, "剔", n),
                ));
            }
            Fate::Dissolved => {
                let day = exit_day(&mut rng, 2016);
                later.push(lift(&mut rng, 2016, day, None));
                let day = between(&mut rng, date(2018, 3, 1), date(2018, 8, 31));
                later.push((
                    day,
                    Change::Exit(ExitRecord {
                        reason: ExitReason::Dissolved,
                        checklist: None,
                        income_per_capita: None,
                        procedure: None,
                        note: "户主去世, 自然销户".into(),
                    }),
                    document(day, "销", n),
                ));
            }
        }
        let mut leavers = leavers.into_iter();
        for (day, change) in &p.changes {
            let adjustment = match change {
                MemberChange::Birth => Adjustment {
                    members_added: vec![MemberAdded {
                        member: people.anyone(&mut rng, family, *day, Relation::Grandchild, *day),
                        reason: MemberAddedReason::Birth,
                    }],
                    note: "新生儿".into(),
                    ..Adjustment::default()
                },
                MemberChange::MarriageIn => {
                    let birth = born(&mut rng, day.year() - 30, day.year() - 21);
                    let family = *FAMILY.choose(&mut rng).expect("not empty");
                    Adjustment {
                        members_added: vec![MemberAdded {
                            member: people.anyone(
                                &mut rng,
                                family,
                                birth,
                                Relation::ChildInLaw,
                                *day,
                            ),
                            reason: MemberAddedReason::MarriageIn,
                        }],
                        note: "婚入".into(),
                        ..Adjustment::default()
                    }
                }
                MemberChange::Death | MemberChange::MarriageOut => Adjustment {
                    members_removed: vec![MemberRemoved {
                        id_number: leavers
                            .next()
                            .expect("a leaver was added for each departure"),
                        reason: if *change == MemberChange::Death {
                            MemberRemovedReason::Death
                        } else {
                            MemberRemovedReason::MarriageOut
                        },
                    }],
                    note: if *change == MemberChange::Death {
                        "死亡"
                    } else {
                        "婚出"
                    }
                    .into(),
                    ..Adjustment::default()
                },
            };
            later.push((*day, Change::Adjust(adjustment), document(*day, "调", n)));
        }
        if let Some((day, site)) = p.relocated {
            later.push((
                day,
                Change::Adjust(Adjustment {
                    relocate_to: Some(district.villages[site].code),
                    measures: vec![Measure {
                        year: day.year(),
                        kind: MeasureKind::Relocation,
                        note: format!("集中安置于{}", district.villages[site].name),
                    }],
                    ..Adjustment::default()
                }),
                document(day, "搬", n),
            ));
        }
        if let Some(day) = p.housing {
            later.push((
                day,
                Change::Adjust(Adjustment {
                    measures: vec![Measure {
                        year: day.year(),
                        kind: MeasureKind::Housing,
                        note: "危房改造".into(),
                    }],
                    ..Adjustment::default()
                }),
                document(day, "危", n),
            ));
        }
        later.sort_by_key(|(day, _, _)| *day);
        for (day, change, document_ref) in later {
            own.push(command(day, document_ref, change));
        }
        if p.fate == Fate::WrongExit {
            corrected.push(id.clone());
        }
        commands.extend(own);
    }

    // The whole district's history, in the order it takes effect.
    commands.sort_by_key(|c| c.effective_date);
    // The rectification: every wrong exit annulled on one day, by one document, in the order
    // the log will have them (the targets' seqs are their positions).
    let rectification = date(2019, 6, 1);
    let split = commands.partition_point(|c| c.effective_date < rectification);
    let mut annulments = Vec::new();
    for household in &corrected {
        let target = commands
            .iter()
            .position(|c| {
                &c.household_id == household
                    && c.effective_date == date(2018, 12, 20)
                    && matches!(c.change, Change::Exit(_))
            })
            .expect("each corrected household has its wrong exit");
        annulments.push(Command {
            household_id: household.clone(),
            effective_date: rectification,
            document_ref: "宝脱贫整改〔2019〕12号".into(),
            expected_version: None,
            request_id: None,
            change: Change::Correct(Correction {
                target_seq: target as u64 + 1,
                action: CorrectionAction::Annul,
                reason: "巡视整改: 人均纯收入核算有误, 未达退出标准 (错退)".into(),
            }),
        });
    }
    commands.splice(split..split, annulments);
    // Each command's request_id names its household and its version there, so that a reload
    // after an interruption appends only what is missing.
    let mut versions: HashMap<HouseholdId, u32> = HashMap::new();
    for c in &mut commands {
        let version = versions.entry(c.household_id.clone()).or_default();
        *version += 1;
        c.request_id = Some(format!("baota-{}-{version}", c.household_id));
    }
    let inspection = date(2019, 3, 1);
    let known_at_inspection = commands.partition_point(|c| c.effective_date <= inspection) as u64;
    DataSet {
        district,
        commands,
        known_at_inspection,
        corrected,
    }
}

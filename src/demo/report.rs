//! The demo's report: the seed's questions, asked through the public API, printed as tables
//! with Chinese and English labels.

use std::fmt::Write as _;

use tonic::transport::Channel;
use unicode_width::UnicodeWidthStr;

use super::baota::{self, targets, DataSet};
use crate::pb;
use crate::pb::rolls_client::RollsClient;

/// A seed figure beside what the store answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    pub label: &'static str,
    /// (households, people); people is `None` where the seed gives only households.
    pub seed: (u64, Option<u64>),
    pub store: (u64, Option<u64>),
}

impl Figure {
    pub fn holds(&self) -> bool {
        self.seed == self.store
    }
}

fn point(as_of: &str, known_at: Option<u64>) -> Option<pb::PointInTime> {
    Some(pb::PointInTime {
        as_of: as_of.into(),
        known_at: known_at.map(|seq| pb::KnownAt {
            position: Some(pb::known_at::Position::Seq(seq)),
        }),
    })
}

async fn stats(
    rolls: &mut RollsClient<Channel>,
    prefix: &str,
    as_of: &str,
    known_at: Option<u64>,
) -> Result<pb::GetStatsResponse, tonic::Status> {
    Ok(rolls
        .get_stats(pb::GetStatsRequest {
            region_prefix: prefix.into(),
            at: point(as_of, known_at),
        })
        .await?
        .into_inner())
}

async fn flows(
    rolls: &mut RollsClient<Channel>,
    from: &str,
    to: &str,
) -> Result<pb::GetFlowsResponse, tonic::Status> {
    Ok(rolls
        .get_flows(pb::GetFlowsRequest {
            region_prefix: baota::DISTRICT.into(),
            from_date: from.into(),
            to_date: to.into(),
            known_at: None,
        })
        .await?
        .into_inner())
}

fn pair(t: Option<pb::Tally>) -> (u64, u64) {
    let t = t.unwrap_or_default();
    (t.households, t.people)
}

fn on_roll(row: Option<pb::StatsRow>) -> (u64, u64) {
    pair(row.unwrap_or_default().on_roll)
}

fn registered(row: Option<pb::StatsRow>) -> (u64, u64) {
    let row = row.unwrap_or_default();
    let (a, b) = (pair(row.on_roll), pair(row.exited));
    (a.0 + b.0, a.1 + b.1)
}

fn both(value: (u64, u64)) -> (u64, Option<u64>) {
    (value.0, Some(value.1))
}

/// Asks the store every figure the seed gives.
pub async fn figures(channel: Channel) -> Result<Vec<Figure>, tonic::Status> {
    let mut rolls = RollsClient::new(channel);
    let district = baota::DISTRICT;
    let now = stats(&mut rolls, district, baota::dates::NOW, None).await?;
    let end_2015 = stats(&mut rolls, district, "2015-12-31", None).await?;
    let end_2018 = stats(&mut rolls, district, "2018-12-31", None).await?;
    let end_2019 = stats(&mut rolls, district, "2019-12-31", None).await?;
    let history = flows(&mut rolls, "2014-01-01", baota::dates::NOW).await?;
    let low_income = now
        .by_attribute
        .iter()
        .filter(|a| a.attribute != pb::Attribute::General as i32)
        .map(|a| registered(a.counts))
        .fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
    let measure = |kind: pb::MeasureKind| {
        history
            .measures
            .iter()
            .find(|m| m.kind == kind as i32)
            .map_or(0, |m| pair(m.count).0)
    };
    let left = {
        let (a, b) = (on_roll(now.total), on_roll(end_2019.total));
        (a.0 - b.0.min(a.0), a.1 - b.1.min(a.1))
    };
    Ok(vec![
        Figure {
            label: "建档立卡 registered (on roll + exited), 2019-10-15",
            seed: both(targets::REGISTERED),
            store: both(registered(now.total)),
        },
        Figure {
            label: "在册 on the roll, 2015-12-31",
            seed: both(targets::ON_ROLL_2015),
            store: both(on_roll(end_2015.total)),
        },
        Figure {
            label: "在册 on the roll, 2018-12-31",
            seed: both(targets::ON_ROLL_2018),
            store: both(on_roll(end_2018.total)),
        },
        Figure {
            label: "在册 on the roll, 2019-10-15",
            seed: both(targets::ON_ROLL_2018),
            store: both(on_roll(now.total)),
        },
        Figure {
            label: "  兜底 of which safety net",
            seed: both(targets::SAFETY_NET),
            store: both(on_roll(now.safety_net)),
        },
        Figure {
            label: "  今年退出 of which lifted out by 2019-12-31",
            seed: both(targets::EXIT_2019),
            store: both(left),
        },
        Figure {
            label: "易地扶贫搬迁 relocated households",
            seed: (targets::RELOCATED, None),
            store: (pair(history.relocated).0, None),
        },
        Figure {
            label: "危房改造 houses rebuilt",
            seed: (targets::HOUSING, None),
            store: (measure(pb::MeasureKind::Housing), None),
        },
        Figure {
            label: "低保五保 low-income / destitute-supported",
            seed: both(targets::LOW_INCOME),
            store: both(low_income),
        },
    ])
}

/// A plain text table whose columns line up with Chinese text in them.
struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| (*h).into()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let columns = self.header.len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r.get(c).map_or(0, |s| s.width()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String], out: &mut String| {
            let mut text = String::new();
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c].saturating_sub(cell.width());
                // The first column is text, the others numbers: left- and right-aligned.
                if c == 0 {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                } else {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                }
                text.push_str("  ");
            }
            let _ = writeln!(out, "  {}", text.trim_end());
        };
        let _ = writeln!(out, "\n{}", self.title);
        line(&self.header, out);
        let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
        line(&rule, out);
        for row in &self.rows {
            line(row, out);
        }
    }
}

/// The whole report, as text.
pub async fn report(channel: Channel, data: &DataSet) -> Result<String, tonic::Status> {
    let mut rolls = RollsClient::new(channel.clone());
    let district = baota::DISTRICT;
    let mut out = String::new();

    let mut years = Table::new(
        "年末在册贫困人口 The roll at the end of each year (宝塔区 Baota District, 610602)",
        &[
            "date 日期",
            "households 户",
            "people 人",
            "exited 已脱贫 (户)",
            "safety net 兜底 (户)",
        ],
    );
    for as_of in [
        "2014-12-31",
        "2015-12-31",
        "2016-12-31",
        "2017-12-31",
        "2018-12-31",
        baota::dates::NOW,
        "2019-12-31",
    ] {
        let s = stats(&mut rolls, district, as_of, None).await?;
        let (h, p) = on_roll(s.total);
        let exited = pair(s.total.unwrap_or_default().exited).0;
        years.row(vec![
            as_of.into(),
            h.to_string(),
            p.to_string(),
            exited.to_string(),
            on_roll(s.safety_net).0.to_string(),
        ]);
    }
    years.render(&mut out);

    let mut towns = Table::new(
        "2019-10-15 各乡镇 By township and street office",
        &[
            "township 乡镇街道",
            "on roll 在册 户/人",
            "exited 已脱贫 户/人",
        ],
    );
    let now = stats(&mut rolls, district, baota::dates::NOW, None).await?;
    for region in &now.by_region {
        let counts = region.counts.unwrap_or_default();
        let (a, b) = (pair(counts.on_roll), pair(counts.exited));
        let name = data.district.name_of(&region.region_prefix).unwrap_or("?");
        towns.row(vec![
            format!("{} {}", region.region_prefix, name),
            format!("{} / {}", a.0, a.1),
            format!("{} / {}", b.0, b.1),
        ]);
    }
    towns.render(&mut out);

    let mut flow = Table::new(
        "动态调整 Flows of each year (households 户)",
        &[
            "year 年",
            "identified 识别",
            "lifted out 脱贫",
            "relapsed 返贫",
            "removed 剔除",
            "dissolved 销户",
            "corrected 整改",
            "relocated 搬迁",
            "born 出生",
            "died 死亡",
            "married in/out 婚入/婚出",
        ],
    );
    for year in 2014..=2019 {
        let f = flows(
            &mut rolls,
            &format!("{year}-01-01"),
            &format!("{year}-12-31"),
        )
        .await?;
        let h = |t: Option<pb::Tally>| pair(t).0.to_string();
        flow.row(vec![
            year.to_string(),
            h(f.identified),
            h(f.exited),
            h(f.relapsed),
            h(f.removed),
            h(f.dissolved),
            h(f.corrected),
            h(f.relocated),
            format!("{} 人", pair(f.born).1),
            format!("{} 人", pair(f.died).1),
            format!("{} / {} 人", pair(f.married_in).1, pair(f.married_out).1),
        ]);
    }
    flow.render(&mut out);

    let mut seed = Table::new(
        "种子数据核对 The seed's figures beside what the store answers",
        &["figure", "seed 发布会", "store 本库", ""],
    );
    let show = |(h, p): (u64, Option<u64>)| match p {
        Some(p) => format!("{h} 户 {p} 人"),
        None => format!("{h} 户"),
    };
    for figure in figures(channel.clone()).await? {
        seed.row(vec![
            figure.label.into(),
            show(figure.seed),
            show(figure.store),
            if figure.holds() {
                "✓".into()
            } else {
                "✗".into()
            },
        ]);
    }
    seed.render(&mut out);

    // The inspection: the register as it showed on 2019-03-01, and after the rectification.
    let before = data.known_at_inspection;
    let shown = stats(&mut rolls, district, "2018-12-31", Some(before)).await?;
    let today = stats(&mut rolls, district, "2018-12-31", None).await?;
    let _ = writeln!(
        out,
        "\n巡视整改 An inspection story\n  The inspection of {} read the roll at 2018-12-31 as the register then showed it\n  (known at seq {before}): {} households, {} people.",
        baota::dates::INSPECTION,
        on_roll(shown.total).0,
        on_roll(shown.total).1,
    );
    let mut diff = rolls
        .diff_rosters(pb::DiffRostersRequest {
            region_prefix: district.into(),
            from: point("2018-12-31", Some(before)),
            to: point("2018-12-31", None),
        })
        .await?
        .into_inner();
    let mut changes = Vec::new();
    while let Some(message) = diff.message().await? {
        changes.extend(message.changes);
    }
    let _ = writeln!(
        out,
        "  It found {} exits of 2018-12-20 wrong (错退); the rectification of {} annulled them\n  (宝脱贫整改〔2019〕12号). The same roll as known today: {} households, {} people.\n  What the rectification changed (DiffRosters):",
        changes.len(),
        baota::dates::RECTIFICATION,
        on_roll(today.total).0,
        on_roll(today.total).1,
    );
    for change in &changes {
        let reason = pb::RosterChangeReason::try_from(change.reason)
            .map(|r| r.as_str_name())
            .unwrap_or("?");
        let people = change.to.as_ref().map_or(0, |t| t.people);
        let _ = writeln!(
            out,
            "    {} {}  {} 人  ({})",
            if change.entered { "+" } else { "-" },
            change.household_id,
            people,
            reason
        );
    }
    let _ = writeln!(
        out,
        "  The annulled exits stay in the log: GetHistory shows each with the correction that\n  annulled it, and the roll as known on {} can still be read.",
        baota::dates::INSPECTION
    );
    Ok(out)
}

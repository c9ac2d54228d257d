//! The Baota District demo: generated, loaded through the API, and queried — every figure of
//! the seed exactly; the same seed gives the same log.

mod common;

use std::collections::HashSet;

use common::TestServer;
use rollstore::app::{Clock, Config};
use rollstore::demo::{self, baota};
use rollstore::domain::{Change, IdNumber};
use rollstore::pb;

/// A fixed recording instant after every effective date of the data set, so that two loads
/// record the same bodies.
fn fixed_clock() -> Config {
    let instant = chrono::DateTime::parse_from_rfc3339("2020-01-06T09:00:00+08:00").unwrap();
    Config {
        clock: Clock::Fixed(instant.to_utc()),
        ..Config::default()
    }
}

async fn load_and_head(data: &baota::DataSet) -> (TestServer, pb::GetHeadResponse) {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), fixed_clock()).await;
    let report = demo::load(server.any_channel().await, data)
        .await
        .expect("the data set loads");
    assert_eq!(report.head, data.commands.len() as u64);
    let head = server
        .audit()
        .await
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    (server, head)
}

#[tokio::test]
async fn the_seed_figures_hold_through_the_api_and_the_log_is_deterministic() {
    let data = baota::generate(baota::DEFAULT_SEED);
    let (server, head) = load_and_head(&data).await;
    let figures = demo::report::figures(server.any_channel().await)
        .await
        .unwrap();
    let wrong: Vec<_> = figures.iter().filter(|f| !f.holds()).collect();
    assert!(wrong.is_empty(), "figures that do not hold: {wrong:#?}");
    assert_eq!(figures.len(), 9);

    // Loading again is a no-op: the demo reuses its directory.
    let again = demo::load(server.any_channel().await, &data).await.unwrap();
    assert_eq!(again.appended, 0);

    // The inspection story: 8 fewer on the roll at 2018-12-31 as known before the rectification.
    let mut rolls = server.rolls().await;
    let before = rolls
        .get_stats(pb::GetStatsRequest {
            region_prefix: baota::DISTRICT.into(),
            at: Some(pb::PointInTime {
                as_of: "2018-12-31".into(),
                known_at: Some(pb::KnownAt {
                    position: Some(pb::known_at::Position::Seq(data.known_at_inspection)),
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.total.unwrap().on_roll.unwrap().households, 472 - 8);
    assert_eq!(data.corrected.len(), 8);

    // The same seed, generated and loaded again, gives the same log, to the head hash.
    let (other, other_head) = load_and_head(&baota::generate(baota::DEFAULT_SEED)).await;
    assert_eq!(other_head, head);
    other.stop().await;
    server.stop().await;
}

#[test]
fn the_generator_is_deterministic_and_its_identities_are_valid() {
    let a = baota::generate(7);
    let b = baota::generate(7);
    assert_eq!(a.commands, b.commands);
    assert_ne!(a.commands, baota::generate(8).commands);

    let district = &a.district;
    assert_eq!(
        district.villages.iter().filter(|v| !v.community).count(),
        baota::targets::VILLAGES
    );
    assert_eq!(
        district.villages.iter().filter(|v| v.community).count(),
        baota::targets::COMMUNITIES
    );
    assert_eq!(
        district.villages.iter().filter(|v| v.poor).count(),
        baota::targets::POOR_VILLAGES
    );
    let kinds = |k| district.townships.iter().filter(|t| t.kind == k).count();
    assert_eq!(
        (
            kinds(baota::TownshipKind::Town),
            kinds(baota::TownshipKind::Township),
            kinds(baota::TownshipKind::Street)
        ),
        (9, 4, 5)
    );
    for (township, village) in [("川口乡", "枣元村"), ("甘谷驿镇", "代家沟村")] {
        assert!(
            district.villages.iter().any(|v| v.name == village
                && v.poor
                && district.townships[v.township].name == township),
            "{township} {village}"
        );
    }
    assert!(district.townships.iter().any(|t| t.name == "万花乡"));

    // Every identity re-parses (checksum and birth date), none repeats, and nobody is
    // registered before they were born.
    let mut seen = HashSet::new();
    for command in &a.commands {
        let members: Vec<_> = match &command.change {
            Change::Identify(id) => id.members.iter().collect(),
            Change::Adjust(adj) => adj.members_added.iter().map(|m| &m.member).collect(),
            _ => Vec::new(),
        };
        for member in members {
            let id = &member.id_number;
            assert_eq!(&IdNumber::parse(id.as_str()).unwrap(), id);
            assert!(
                id.birth_date() <= command.effective_date,
                "{id} born after {}",
                command.effective_date
            );
            assert!(seen.insert(*id), "{id} appears twice");
        }
    }
}

#[test]
fn the_figures_hold_for_other_seeds_too() {
    // Checked without a server: fold the commands with the store's own rules.
    use rollstore::domain::{decide, Context, Event, PointInTime, Policy, RegionPrefix, Status};
    use rollstore::projection::{History, Roll};
    struct Log<'a>(&'a [Event]);
    impl History for Log<'_> {
        fn events(&self, seqs: &[u64]) -> Result<Vec<Event>, rollstore::Error> {
            Ok(seqs
                .iter()
                .map(|s| self.0[*s as usize - 1].clone())
                .collect())
        }
    }
    for seed in [1, 2] {
        let data = baota::generate(seed);
        let policy = Policy::default();
        let ctx = Context {
            today: common::date("2020-01-06"),
            policy: &policy,
        };
        let mut roll = Roll::default();
        let mut events: Vec<Event> = Vec::new();
        for command in &data.commands {
            let current = roll
                .household(&command.household_id)
                .map(|e| e.state.unpack().unwrap());
            let version = roll
                .household(&command.household_id)
                .map_or(0, |e| e.version());
            let accepted = match &command.change {
                Change::Correct(_) => {
                    let seqs = roll.household(&command.household_id).unwrap().seqs.to_vec();
                    rollstore::domain::decide_correction(
                        ctx,
                        &Log(&events).events(&seqs).unwrap(),
                        command,
                        &roll,
                    )
                    .map(|_| ())
                }
                _ => decide(ctx, current.as_ref(), command, &roll).map(|_| ()),
            };
            accepted.unwrap_or_else(|e| panic!("seed {seed}: {command:?} refused: {e}"));
            events.push(command.clone().recorded(
                events.len() as u64 + 1,
                version + 1,
                chrono::Utc::now(),
                "test",
            ));
            roll.apply(events.last().unwrap(), &Log(&events)).unwrap();
        }
        let district = RegionPrefix::parse(baota::DISTRICT).unwrap();
        let at = |as_of: &str| PointInTime {
            as_of: Some(common::date(as_of)),
            known_at: None,
        };
        let now = roll.stats(district, at("2019-10-15"));
        let registered = (
            now.total.on_roll.households + now.total.exited.households,
            now.total.on_roll.people + now.total.exited.people,
        );
        assert_eq!(registered, baota::targets::REGISTERED, "seed {seed}");
        let on_roll = |as_of| {
            let s = roll.stats(district, at(as_of));
            (s.total.on_roll.households, s.total.on_roll.people)
        };
        assert_eq!(
            on_roll("2015-12-31"),
            baota::targets::ON_ROLL_2015,
            "seed {seed}"
        );
        assert_eq!(
            on_roll("2018-12-31"),
            baota::targets::ON_ROLL_2018,
            "seed {seed}"
        );
        let (page, _) = roll.roster(district, &[Status::OnRoll], at("2019-12-31"), None, 10_000);
        assert_eq!(
            page.len() as u64,
            baota::targets::SAFETY_NET.0,
            "seed {seed}"
        );
    }
}

//! Points in time and corrections through the real server: the inspection story, and the
//! corrections the store must refuse.

mod common;

use common::*;
use rollstore::domain::{Adjustment, Change, Command, Correction, CorrectionAction, ExitReason};
use rollstore::pb;
use tonic::Code;

fn annul(hh: &str, day: &str, target_seq: u64, reason: &str) -> Command {
    tweak(
        command(
            hh,
            day,
            Change::Correct(Correction {
                target_seq,
                action: CorrectionAction::Annul,
                reason: reason.into(),
            }),
        ),
        |c| c.document_ref = "宝脱贫整改〔2019〕12号".into(),
    )
}

fn amend(
    hh: &str,
    day: &str,
    target_seq: u64,
    replacement: Command,
    date: Option<&str>,
) -> Command {
    command(
        hh,
        day,
        Change::Correct(Correction {
            target_seq,
            action: CorrectionAction::Amend {
                change: Box::new(replacement.change),
                effective_date: date.map(common::date),
            },
            reason: "整改: 退出数据有误".into(),
        }),
    )
}

fn at(as_of: &str, known_at: Option<u64>) -> Option<pb::PointInTime> {
    Some(pb::PointInTime {
        as_of: as_of.into(),
        known_at: known_at.map(|seq| pb::KnownAt {
            position: Some(pb::known_at::Position::Seq(seq)),
        }),
    })
}

async fn roster_at(server: &TestServer, point: Option<pb::PointInTime>) -> Vec<String> {
    let mut stream = server
        .rolls()
        .await
        .list_roster(pb::ListRosterRequest {
            region_prefix: "610602".into(),
            at: point,
            ..Default::default()
        })
        .await
        .expect("ListRoster answers")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(message) = stream.message().await.expect("the stream is whole") {
        ids.extend(message.households.into_iter().map(|h| h.household_id));
    }
    ids
}

/// An inspection finds a wrong exit (错退) and annuls it; the register before and after.
#[tokio::test]
async fn the_inspection_story() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;

    // 2016: two households are identified. 2018-12-20: both are lifted out.
    send(
        &mut registry,
        &identify("BT-0001", "2016-03-10", &[1, 2, 3]),
    )
    .await
    .unwrap();
    send(&mut registry, &identify("BT-0002", "2016-03-10", &[4, 5]))
        .await
        .unwrap();
    send(&mut registry, &lift_out("BT-0002", "2018-12-20", 5200))
        .await
        .unwrap();
    let wrong_exit = send(&mut registry, &lift_out("BT-0001", "2018-12-20", 4100))
        .await
        .unwrap();

    // 2019-03-01: the register as the inspection sees it.
    let shown_on_2019_03_01 = server.head_seq().await;
    assert!(
        roster_at(&server, at("2018-12-31", Some(shown_on_2019_03_01)))
            .await
            .is_empty()
    );

    // 2019-06-01: the exit of BT-0001 is found wrong (its income was overstated) and annulled.
    let correction = send(
        &mut registry,
        &annul(
            "BT-0001",
            "2019-06-01",
            wrong_exit.seq,
            "巡视整改: 收入核算有误, 错退",
        ),
    )
    .await
    .unwrap();

    // As known on 2019-03-01, the roll at the end of 2018 is empty; as known today, it holds
    // BT-0001, which was never really lifted out.
    assert!(
        roster_at(&server, at("2018-12-31", Some(shown_on_2019_03_01)))
            .await
            .is_empty()
    );
    assert_eq!(
        roster_at(&server, at("2018-12-31", None)).await,
        vec!["BT-0001"]
    );
    // A known_at given as a timestamp: the last seq recorded at or before it.
    let recorded_then = Some(pb::PointInTime {
        as_of: "2018-12-31".into(),
        known_at: Some(pb::KnownAt {
            position: Some(pb::known_at::Position::Time(wrong_exit.recorded_at.clone())),
        }),
    });
    assert!(roster_at(&server, recorded_then).await.is_empty());

    // The diff the inspection reads: what its rectification changed.
    let mut rolls = server.rolls().await;
    let mut stream = rolls
        .diff_rosters(pb::DiffRostersRequest {
            region_prefix: "610602".into(),
            from: at("2018-12-31", Some(shown_on_2019_03_01)),
            to: at("2018-12-31", None),
        })
        .await
        .unwrap()
        .into_inner();
    let mut changes = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        changes.extend(message.changes);
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].household_id, "BT-0001");
    assert!(changes[0].entered);
    assert_eq!(changes[0].reason, pb::RosterChangeReason::Corrected as i32);

    // The history still shows the annulled exit, and who annulled it with which document.
    let history = rolls
        .get_history(pb::GetHistoryRequest {
            household_id: "BT-0001".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let exit = history
        .iter()
        .find(|e| e.seq == wrong_exit.seq)
        .expect("the exit is kept");
    assert_eq!(exit.kind, pb::EventKind::Exit as i32);
    assert_eq!(exit.corrected_by, vec![correction.seq]);
    let annulment = history.iter().find(|e| e.seq == correction.seq).unwrap();
    assert_eq!(annulment.kind, pb::EventKind::Correct as i32);
    assert_eq!(annulment.document_ref, "宝脱贫整改〔2019〕12号");
    assert_eq!(annulment.actor, "anonymous");
    let Some(pb::event::Payload::Correct(payload)) = &annulment.payload else {
        panic!("not a correction: {annulment:?}");
    };
    assert_eq!(payload.target_seq, wrong_exit.seq);
    assert_eq!(payload.action, pb::CorrectionAction::Annul as i32);

    // The household now: on the roll again; as known before, it had exited.
    let household = |point| {
        let mut rolls = rolls.clone();
        async move {
            rolls
                .get_household(pb::GetHouseholdRequest {
                    household_id: "BT-0001".into(),
                    at: point,
                })
                .await
                .unwrap()
                .into_inner()
                .household
                .unwrap()
        }
    };
    assert_eq!(household(None).await.status, pb::Status::OnRoll as i32);
    let before = household(at("", Some(shown_on_2019_03_01))).await;
    assert_eq!(before.status, pb::Status::Exited as i32);
    assert_eq!(before.exited_on, "2018-12-20");
    // Flows of 2018 as known then count two exits; as known now, one.
    let flows = |known: Option<u64>| {
        let mut rolls = rolls.clone();
        async move {
            rolls
                .get_flows(pb::GetFlowsRequest {
                    region_prefix: "610602".into(),
                    from_date: "2018-01-01".into(),
                    to_date: "2018-12-31".into(),
                    known_at: known.map(|seq| pb::KnownAt {
                        position: Some(pb::known_at::Position::Seq(seq)),
                    }),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(
        flows(Some(shown_on_2019_03_01))
            .await
            .exited
            .unwrap()
            .households,
        2
    );
    assert_eq!(flows(None).await.exited.unwrap().households, 1);
}

#[tokio::test]
async fn an_amended_exit_date_moves_the_household_across_the_year_end() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    send(&mut registry, &identify("H1", "2016-03-10", &[1]))
        .await
        .unwrap();
    let exit = send(&mut registry, &lift_out("H1", "2018-12-20", 4100))
        .await
        .unwrap();
    assert!(roster_at(&server, at("2018-12-31", None)).await.is_empty());
    send(
        &mut registry,
        &amend(
            "H1",
            "2019-06-01",
            exit.seq,
            lift_out("H1", "2018-12-20", 4100),
            Some("2019-01-05"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(roster_at(&server, at("2018-12-31", None)).await, vec!["H1"]);
    assert!(roster_at(&server, at("2019-01-05", None)).await.is_empty());
}

#[tokio::test]
async fn corrections_that_would_break_the_stream_are_refused() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    let identified = send(&mut registry, &identify("H1", "2016-03-10", &[1, 2]))
        .await
        .unwrap();
    let exited = send(&mut registry, &lift_out("H1", "2017-11-20", 4100))
        .await
        .unwrap();
    let relapsed = send(&mut registry, &relapse("H1", "2018-05-01"))
        .await
        .unwrap();
    let other = send(&mut registry, &identify("H2", "2016-03-10", &[7]))
        .await
        .unwrap();
    let annulment = send(
        &mut registry,
        &annul("H2", "2019-01-01", other.seq, "重复录入"),
    )
    .await;
    assert_eq!(
        annulment.unwrap_err().code(),
        Code::FailedPrecondition,
        "the only identification"
    );
    let before = server.head_seq().await;

    let cases: Vec<(&str, Command, Code)> = vec![
        (
            "an exit a later relapse depends on",
            annul("H1", "2019-06-01", exited.seq, "错退"),
            Code::FailedPrecondition,
        ),
        (
            "the identification later events depend on",
            annul("H1", "2019-06-01", identified.seq, "错评"),
            Code::FailedPrecondition,
        ),
        (
            "an exit amended below the poverty line",
            amend(
                "H1",
                "2019-06-01",
                exited.seq,
                lift_out("H1", "2017-11-20", 2000),
                None,
            ),
            Code::FailedPrecondition,
        ),
        (
            "an exit amended into the identification year",
            amend(
                "H1",
                "2019-06-01",
                exited.seq,
                lift_out("H1", "2017-11-20", 4100),
                Some("2016-11-20"),
            ),
            Code::FailedPrecondition,
        ),
        (
            "an exit amended after the relapse",
            amend(
                "H1",
                "2019-06-01",
                exited.seq,
                lift_out("H1", "2017-11-20", 4100),
                Some("2018-06-01"),
            ),
            Code::FailedPrecondition,
        ),
        (
            "an amendment of another kind",
            amend(
                "H1",
                "2019-06-01",
                exited.seq,
                relapse("H1", "2017-11-20"),
                None,
            ),
            Code::InvalidArgument,
        ),
        (
            "a target in another household",
            annul("H1", "2019-06-01", other.seq, "错"),
            Code::FailedPrecondition,
        ),
        (
            "a target that does not exist",
            annul("H1", "2019-06-01", 999, "错"),
            Code::NotFound,
        ),
        (
            "no reason",
            annul("H1", "2019-06-01", relapsed.seq, " "),
            Code::InvalidArgument,
        ),
    ];
    for (name, command, code) in cases {
        let status = send(&mut registry, &command).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert_eq!(server.head_seq().await, before, "{name} appended something");
    }
    // Annulling the relapse first, then the exit, is the way.
    let first = send(
        &mut registry,
        &annul("H1", "2019-06-01", relapsed.seq, "错"),
    )
    .await
    .unwrap();
    send(
        &mut registry,
        &annul("H1", "2019-06-01", exited.seq, "错退"),
    )
    .await
    .unwrap();
    let status = send(
        &mut registry,
        &annul("H1", "2019-06-02", first.seq, "撤销整改"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "a correction of a correction"
    );
    let status = send(
        &mut registry,
        &annul("H1", "2019-06-02", exited.seq, "again"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "an annulled event, again"
    );
    // After the corrections the household is on the roll and takes new events as usual.
    send(
        &mut registry,
        &adjust(
            "H1",
            "2019-07-01",
            Adjustment {
                income_per_capita: Some(3900),
                ..Adjustment::default()
            },
        ),
    )
    .await
    .unwrap();
    send(
        &mut registry,
        &exit("H1", "2019-08-01", ExitReason::Removed),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn malformed_points_in_time_are_invalid() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    send(&mut registry, &identify("H1", "2016-03-10", &[1]))
        .await
        .unwrap();
    let mut rolls = server.rolls().await;
    let bad = [
        at("2018-13-01", None),
        at("", Some(2)),
        Some(pb::PointInTime {
            as_of: String::new(),
            known_at: Some(pb::KnownAt {
                position: Some(pb::known_at::Position::Time("yesterday".into())),
            }),
        }),
    ];
    for point in bad {
        let status = rolls
            .get_stats(pb::GetStatsRequest {
                region_prefix: "610602".into(),
                at: point.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{point:?}");
    }
    // Before anything was known, nothing was registered.
    let status = rolls
        .get_household(pb::GetHouseholdRequest {
            household_id: "H1".into(),
            at: at("", Some(0)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

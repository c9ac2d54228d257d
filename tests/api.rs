//! The API through a real tonic client against the real server on port 0.

mod common;

use common::*;
use rollstore::domain::{
    Adjustment, Command, ExitReason, MemberAdded, MemberAddedReason, MemberRemoved,
    MemberRemovedReason,
};
use rollstore::pb;
use tonic::Code;
use tonic_types::StatusExt;

async fn head(server: &TestServer) -> pb::GetHeadResponse {
    server
        .audit()
        .await
        .get_head(pb::GetHeadRequest {})
        .await
        .expect("GetHead answers")
        .into_inner()
}

async fn household(server: &TestServer, id: &str) -> pb::Household {
    server
        .rolls()
        .await
        .get_household(pb::GetHouseholdRequest {
            household_id: id.into(),
            at: None,
        })
        .await
        .expect("the household exists")
        .into_inner()
        .household
        .expect("a household")
}

/// Every household of a roster, following page tokens.
async fn roster(
    server: &TestServer,
    prefix: &str,
    statuses: &[pb::Status],
    page_size: u32,
) -> Vec<String> {
    let mut rolls = server.rolls().await;
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let mut stream = rolls
            .list_roster(pb::ListRosterRequest {
                region_prefix: prefix.into(),
                statuses: statuses.iter().map(|s| *s as i32).collect(),
                page_size,
                page_token: token.clone(),
                at: None,
            })
            .await
            .expect("ListRoster answers")
            .into_inner();
        let mut next = String::new();
        while let Some(message) = stream.message().await.expect("the stream is whole") {
            ids.extend(message.households.into_iter().map(|h| h.household_id));
            next = message.next_page_token;
        }
        if next.is_empty() {
            return ids;
        }
        token = next;
    }
}

/// (households, people) on the roll and exited under `prefix`.
async fn totals(server: &TestServer, prefix: &str) -> ((u64, u64), (u64, u64)) {
    let stats = server
        .rolls()
        .await
        .get_stats(pb::GetStatsRequest {
            region_prefix: prefix.into(),
            at: None,
        })
        .await
        .expect("GetStats answers")
        .into_inner();
    let total = stats.total.unwrap_or_default();
    let pair = |t: Option<pb::Tally>| {
        let t = t.unwrap_or_default();
        (t.households, t.people)
    };
    (pair(total.on_roll), pair(total.exited))
}

fn born(n: u32) -> Adjustment {
    Adjustment {
        members_added: vec![MemberAdded {
            member: member(n),
            reason: MemberAddedReason::Birth,
        }],
        ..Adjustment::default()
    }
}

#[tokio::test]
async fn lifecycle_with_roster_and_stats_after_each_step() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    let county = "610602";
    let village = VILLAGE;
    let other_town = &OTHER_VILLAGE[..9];
    // (command, status after, people after, region after)
    let steps: Vec<(rollstore::domain::Command, pb::Status, u64, &str)> = vec![
        (
            identify("H1", "2015-03-01", &[1, 2, 3]),
            pb::Status::OnRoll,
            3,
            VILLAGE,
        ),
        (
            adjust("H1", "2016-02-01", born(4)),
            pb::Status::OnRoll,
            4,
            VILLAGE,
        ),
        (
            adjust(
                "H1",
                "2016-04-01",
                Adjustment {
                    members_removed: vec![MemberRemoved {
                        id_number: person(3),
                        reason: MemberRemovedReason::Death,
                    }],
                    ..Adjustment::default()
                },
            ),
            pb::Status::OnRoll,
            3,
            VILLAGE,
        ),
        (
            adjust(
                "H1",
                "2016-06-01",
                Adjustment {
                    relocate_to: Some(region(OTHER_VILLAGE)),
                    ..Adjustment::default()
                },
            ),
            pb::Status::OnRoll,
            3,
            OTHER_VILLAGE,
        ),
        (
            lift_out("H1", "2016-11-20", 3600),
            pb::Status::Exited,
            3,
            OTHER_VILLAGE,
        ),
        (
            relapse("H1", "2018-03-01"),
            pb::Status::OnRoll,
            3,
            OTHER_VILLAGE,
        ),
        (
            lift_out("H1", "2018-11-20", 4100),
            pb::Status::Exited,
            3,
            OTHER_VILLAGE,
        ),
    ];
    for (i, (command, status, people, region_code)) in steps.into_iter().enumerate() {
        let receipt = send(&mut registry, &command)
            .await
            .unwrap_or_else(|e| panic!("step {i}: {e}"));
        assert_eq!(receipt.seq, i as u64 + 1, "step {i}");
        assert_eq!(receipt.version, i as u64 + 1, "step {i}");
        let h = household(&server, "H1").await;
        assert_eq!(h.status, status as i32, "step {i}");
        assert_eq!(h.members.len() as u64, people, "step {i}");
        assert_eq!(h.region_code, region_code, "step {i}");
        let on_roll = status == pb::Status::OnRoll;
        let listed = roster(&server, county, &[], 0).await;
        assert_eq!(
            listed,
            if on_roll {
                vec!["H1".to_string()]
            } else {
                vec![]
            },
            "step {i}"
        );
        let (roll, exited) = totals(&server, county).await;
        let expected = if on_roll {
            ((1, people), (0, 0))
        } else {
            ((0, 0), (1, people))
        };
        assert_eq!((roll, exited), expected, "step {i}");
        // The village it left counts nothing; the town it moved to counts it.
        let here = roster(
            &server,
            &region_code[..9],
            &[pb::Status::OnRoll, pb::Status::Exited],
            0,
        )
        .await;
        assert_eq!(here, vec!["H1".to_string()], "step {i}");
        if region_code != village {
            assert_eq!(
                totals(&server, &village[..9]).await,
                ((0, 0), (0, 0)),
                "step {i}"
            );
            assert_eq!(region_code[..9], *other_town);
        }
    }
    let history = server
        .rolls()
        .await
        .get_history(pb::GetHistoryRequest {
            household_id: "H1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<i32> = history.iter().map(|e| e.kind).collect();
    use pb::EventKind::*;
    assert_eq!(
        kinds,
        [Identify, Adjust, Adjust, Adjust, Exit, Relapse, Exit].map(|k| k as i32)
    );
}

#[tokio::test]
async fn idempotent_retry_and_reused_request_id() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    let first = tweak(identify("H1", "2015-03-01", &[1, 2]), |c| {
        c.request_id = Some("county-upload-0001".into())
    });
    let original = send(&mut registry, &first).await.unwrap();
    assert!(!original.replayed);
    let retried = send(&mut registry, &first).await.unwrap();
    assert!(retried.replayed);
    assert_eq!(
        (
            retried.seq,
            retried.version,
            &retried.hash,
            &retried.recorded_at
        ),
        (
            original.seq,
            original.version,
            &original.hash,
            &original.recorded_at
        )
    );
    assert_eq!(head(&server).await.seq, 1);
    // Retried inside a batch, alongside a new command: the old one is not appended again.
    let receipts = send_batch(
        &mut registry,
        &[first.clone(), identify("H2", "2015-03-01", &[5])],
    )
    .await
    .unwrap();
    assert!(receipts[0].replayed && receipts[0].seq == 1);
    assert!(!receipts[1].replayed && receipts[1].seq == 2);
    let other = tweak(identify("H3", "2015-03-01", &[7]), |c| {
        c.request_id = Some("county-upload-0001".into())
    });
    let status = send(&mut registry, &other).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(head(&server).await.seq, 2);
}

#[tokio::test]
async fn expected_version_lets_exactly_one_concurrent_writer_win() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    send(&mut registry, &identify("H1", "2015-03-01", &[1]))
        .await
        .unwrap();
    for round in 0..5u32 {
        let version = round as u64 + 1;
        let writers = (0..2u32).map(|w| {
            let command = tweak(adjust("H1", "2016-01-01", born(100 + round * 2 + w)), |c| {
                c.expected_version = Some(version)
            });
            let mut client = registry.clone();
            tokio::spawn(async move { send(&mut client, &command).await })
        });
        let results: Vec<_> = futures_join(writers.collect()).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(lost.code(), Code::Aborted);
        assert!(
            lost.message().contains(&format!("version {}", version + 1)),
            "{}",
            lost.message()
        );
    }
    // Version 0 means "must not exist yet".
    let fresh = tweak(identify("H1", "2016-01-02", &[9]), |c| {
        c.expected_version = Some(0)
    });
    assert_eq!(
        send(&mut registry, &fresh).await.unwrap_err().code(),
        Code::Aborted
    );
    let fresh = tweak(identify("H2", "2016-01-02", &[9]), |c| {
        c.expected_version = Some(0)
    });
    send(&mut registry, &fresh).await.unwrap();
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("the task ends"));
    }
    out
}

/// A raw identify request, valid as it stands, for the malformed-input cases to break.
fn raw_identify(hh: &str, people: &[u32]) -> pb::IdentifyRequest {
    match rollstore::api::convert::command_message(&identify(hh, "2015-03-01", people)).command {
        Some(pb::command::Command::Identify(r)) => *r,
        _ => unreachable!("identify builds an identify"),
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_its_code_and_appends_nothing() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    send(&mut registry, &identify("H1", "2015-03-01", &[1, 2]))
        .await
        .unwrap();
    send(&mut registry, &identify("H2", "2016-03-01", &[5]))
        .await
        .unwrap();
    let before = head(&server).await;

    enum Call {
        Identify(pb::IdentifyRequest),
        Domain(rollstore::domain::Command),
    }
    let identify_with = |change: &dyn Fn(&mut pb::IdentifyRequest)| {
        let mut request = raw_identify("H9", &[20, 21]);
        change(&mut request);
        Call::Identify(request)
    };
    let cases: Vec<(&str, Call, Code, Option<&str>)> = vec![
        (
            "a bad ID checksum",
            identify_with(&|r| {
                let id = &mut r.members[1].id_number;
                let last = if id.ends_with('1') { "2" } else { "1" };
                id.replace_range(17.., last);
            }),
            Code::InvalidArgument,
            Some("members[1].id_number"),
        ),
        (
            "an 11-digit region",
            identify_with(&|r| r.region_code = "61060220100".into()),
            Code::InvalidArgument,
            Some("region_code"),
        ),
        (
            "an unknown cause",
            identify_with(&|r| r.primary_cause = 99),
            Code::InvalidArgument,
            Some("primary_cause"),
        ),
        (
            "an unspecified cause",
            identify_with(&|r| r.primary_cause = 0),
            Code::InvalidArgument,
            Some("primary_cause"),
        ),
        (
            "a malformed date",
            identify_with(&|r| r.effective_date = "2015-02-30".into()),
            Code::InvalidArgument,
            Some("effective_date"),
        ),
        (
            "a bad household id",
            identify_with(&|r| r.household_id = "户 1".into()),
            Code::InvalidArgument,
            Some("household_id"),
        ),
        (
            "an empty household",
            identify_with(&|r| r.members.clear()),
            Code::InvalidArgument,
            Some("members"),
        ),
        (
            "a head who is not a member",
            identify_with(&|r| r.head_id = person(30).to_string()),
            Code::InvalidArgument,
            Some("head_id"),
        ),
        (
            "a future date",
            identify_with(&|r| r.effective_date = "2099-01-01".into()),
            Code::FailedPrecondition,
            None,
        ),
        (
            "back-dated before the latest event",
            Call::Domain(adjust("H1", "2015-02-01", born(40))),
            Code::FailedPrecondition,
            None,
        ),
        (
            "an exit below the poverty line",
            Call::Domain(lift_out("H1", "2016-11-01", 2000)),
            Code::FailedPrecondition,
            None,
        ),
        (
            "an exit in the identification year",
            Call::Domain(lift_out("H1", "2015-11-01", 4000)),
            Code::FailedPrecondition,
            None,
        ),
        (
            "a relapse of a household on the roll",
            Call::Domain(relapse("H1", "2016-01-01")),
            Code::FailedPrecondition,
            None,
        ),
        (
            "a person active in another household",
            Call::Domain(identify("H9", "2016-05-01", &[20, 5])),
            Code::FailedPrecondition,
            None,
        ),
        (
            "an adjustment of a household never identified",
            Call::Domain(adjust("H8", "2016-05-01", born(41))),
            Code::NotFound,
            None,
        ),
        (
            "an exit of a household never identified",
            Call::Domain(exit("H7", "2016-05-01", ExitReason::Removed)),
            Code::NotFound,
            None,
        ),
    ];
    for (name, call, code, field) in cases {
        let result = match call {
            Call::Identify(request) => registry.identify(request).await.map(|_| ()),
            Call::Domain(command) => send(&mut registry, &command).await.map(|_| ()),
        };
        let status = result.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(!status.message().is_empty(), "{name}");
        if let Some(field) = field {
            let details = status
                .get_details_bad_request()
                .unwrap_or_else(|| panic!("{name}: no BadRequest"));
            assert!(
                details.field_violations.iter().any(|v| v.field == field),
                "{name}: {:?}",
                details.field_violations
            );
        }
        if code == Code::FailedPrecondition {
            assert!(
                status.get_details_precondition_failure().is_some(),
                "{name}: no rule named"
            );
        }
        assert_eq!(head(&server).await, before, "{name} appended something");
    }
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    let bad = vec![
        identify("H1", "2015-03-01", &[1]),
        identify("H2", "2015-03-01", &[2]),
        identify("H3", "2015-03-01", &[2]), // person 2 is in H2 already
    ];
    let status = send_batch(&mut registry, &bad).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("commands[2]"),
        "{}",
        status.message()
    );
    assert_eq!(head(&server).await.seq, 0);
    let good: Vec<_> = (0..50)
        .map(|i| identify(&format!("H{i}"), "2015-03-01", &[i * 3, i * 3 + 1]))
        .collect();
    let receipts = send_batch(&mut registry, &good).await.unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    // Commands of one batch see each other: identify then exit in the same batch.
    let receipts = send_batch(
        &mut registry,
        &[
            identify("X1", "2015-03-01", &[900]),
            exit("X1", "2015-05-01", ExitReason::Removed),
        ],
    )
    .await
    .unwrap();
    assert_eq!(receipts[1].version, 2);
    // One request_id on two commands of a batch: refused whole, naming the second.
    let head_before = head(&server).await;
    let with_id = |c, id: &str| tweak(c, |c| c.request_id = Some(id.into()));
    let twice = [
        with_id(identify("R1", "2015-03-01", &[700]), "upload-7"),
        with_id(identify("R2", "2015-03-01", &[701]), "upload-8"),
        with_id(identify("R3", "2015-03-01", &[702]), "upload-7"),
    ];
    let status = send_batch(&mut registry, &twice).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "commands[2].request_id");
    assert!(
        violations[0].description.contains("commands[0]"),
        "{violations:?}"
    );
    assert_eq!(head(&server).await, head_before);
}

/// Who holds a person is what the commands before left, whether they came in the same batch
/// (staged, not yet in the roll) or in requests before (folded into the roll): a person
/// released before may be claimed, one left in place (or just moved elsewhere) may not.
#[tokio::test]
async fn claims_see_whom_the_commands_before_moved() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    let day = "2016-03-01";
    let removed = |n| Adjustment {
        members_removed: vec![MemberRemoved {
            id_number: person(n),
            reason: MemberRemovedReason::Death,
        }],
        ..Adjustment::default()
    };
    let added = |n| Adjustment {
        members_added: vec![MemberAdded {
            member: member(n),
            reason: MemberAddedReason::Birth,
        }],
        ..Adjustment::default()
    };
    let income = Adjustment {
        income_per_capita: Some(3100),
        ..Adjustment::default()
    };
    // Each case: household A already holds people p (its head) and p + 1; then the commands,
    // and the index of the one refused (None: all are accepted).
    let cases = |hh: &dyn Fn(&str) -> String, p: u32| -> Vec<(Vec<Command>, Option<usize>)> {
        vec![
            (
                vec![
                    adjust(&hh("A"), day, removed(p + 1)),
                    identify(&hh("B"), day, &[p + 1]),
                ],
                None,
            ),
            (
                vec![
                    adjust(&hh("A"), day, income.clone()),
                    identify(&hh("B"), day, &[p + 1]),
                ],
                Some(1),
            ),
            (
                vec![
                    adjust(&hh("A"), day, removed(p + 1)),
                    identify(&hh("B"), day, &[p + 1]),
                    adjust(&hh("A"), day, added(p + 1)),
                ],
                Some(2),
            ),
            (
                vec![
                    exit(&hh("A"), day, ExitReason::Removed),
                    identify(&hh("B"), day, &[p, p + 1]),
                ],
                None,
            ),
            (
                vec![
                    adjust(&hh("A"), day, income.clone()),
                    adjust(&hh("A"), day, removed(p + 1)),
                    identify(&hh("B"), day, &[p + 1]),
                    identify(&hh("C"), day, &[p]),
                ],
                Some(3),
            ),
        ]
    };
    for in_one_batch in [true, false] {
        let mode = if in_one_batch { "batch" } else { "one by one" };
        for case in 0..5 {
            let p = u32::from(in_one_batch) * 1000 + case * 10;
            let hh = |name: &str| format!("{name}{p}");
            let (commands, refused_at) = cases(&hh, p).swap_remove(case as usize);
            send(
                &mut registry,
                &identify(&hh("A"), "2015-03-01", &[p, p + 1]),
            )
            .await
            .unwrap();
            let before = head(&server).await;
            if in_one_batch {
                let got = send_batch(&mut registry, &commands).await;
                match refused_at {
                    None => assert_eq!(
                        got.map(|r| r.len()).map_err(|s| s.message().to_owned()),
                        Ok(commands.len()),
                        "{mode}, case {case}"
                    ),
                    Some(i) => {
                        let status = got.expect_err(&format!("{mode}, case {case} is refused"));
                        assert_eq!(status.code(), Code::FailedPrecondition, "case {case}");
                        assert!(
                            status.message().contains(&format!("commands[{i}]")),
                            "{mode}, case {case}: {}",
                            status.message()
                        );
                        assert_eq!(head(&server).await, before, "{mode}, case {case}");
                    }
                }
            } else {
                for (i, command) in commands.iter().enumerate() {
                    let got = send(&mut registry, command).await.map_err(|s| s.code());
                    let want = if refused_at == Some(i) {
                        Err(Code::FailedPrecondition)
                    } else {
                        Ok(())
                    };
                    assert_eq!(got.map(|_| ()), want, "{mode}, case {case}, command {i}");
                }
            }
        }
    }
}

#[tokio::test]
async fn roster_pages_and_region_levels() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    let commands: Vec<_> = (0..25u32)
        .map(|i| {
            let mut c = identify(&format!("H{i:02}"), "2015-03-01", &[i]);
            if !i.is_multiple_of(2) {
                identification(&mut c).region_code = region(OTHER_VILLAGE);
            }
            c
        })
        .collect();
    send_batch(&mut registry, &commands).await.unwrap();
    let all = roster(&server, "", &[], 7).await;
    assert_eq!(all.len(), 25);
    let mut sorted_by_region: Vec<String> = (0..25u32)
        .filter(|i| !i.is_multiple_of(2))
        .chain((0..25).filter(|i: &u32| i.is_multiple_of(2)))
        .map(|i| format!("H{i:02}"))
        .collect();
    // OTHER_VILLAGE (…104…) sorts before VILLAGE (…201…).
    sorted_by_region.sort_by_key(|id| {
        let n: u32 = id[1..].parse().unwrap();
        (n.is_multiple_of(2), n)
    });
    assert_eq!(all, sorted_by_region);
    assert_eq!(roster(&server, &VILLAGE[..9], &[], 0).await.len(), 13);
    assert_eq!(roster(&server, OTHER_VILLAGE, &[], 3).await.len(), 12);
    assert_eq!(roster(&server, "62", &[], 0).await.len(), 0);
    let mut rolls = server.rolls().await;
    for bad in ["6", "61060", "6106021", "abc"] {
        let status = rolls
            .list_roster(pb::ListRosterRequest {
                region_prefix: bad.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
    }
    let status = rolls
        .list_roster(pb::ListRosterRequest {
            page_token: "nonsense".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let stats = rolls
        .get_stats(pb::GetStatsRequest {
            region_prefix: "610602".into(),
            at: None,
        })
        .await
        .unwrap()
        .into_inner();
    let by_town: Vec<(String, u64)> = stats
        .by_region
        .iter()
        .map(|r| {
            (
                r.region_prefix.clone(),
                r.counts.unwrap().on_roll.unwrap().households,
            )
        })
        .collect();
    assert_eq!(
        by_town,
        vec![
            (OTHER_VILLAGE[..9].to_string(), 12),
            (VILLAGE[..9].to_string(), 13)
        ]
    );
}

#[tokio::test]
async fn the_log_reads_back_as_a_verifiable_chain_across_a_restart() {
    use sha2::{Digest, Sha256};
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    for i in 0..10u32 {
        send(
            &mut registry,
            &identify(&format!("H{i}"), "2015-03-01", &[i]),
        )
        .await
        .unwrap();
    }
    send(&mut registry, &lift_out("H3", "2016-11-01", 4000))
        .await
        .unwrap();
    let read_all = |server: &TestServer| {
        let address = server.address;
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut audit = pb::audit_log_client::AuditLogClient::new(channel);
            let mut stream = audit
                .read_events(pb::ReadEventsRequest {
                    from_seq: 1,
                    limit: 0,
                })
                .await
                .unwrap()
                .into_inner();
            let mut events = Vec::new();
            while let Some(message) = stream.message().await.unwrap() {
                events.push(message.event.unwrap());
            }
            events
        }
    };
    let before = read_all(&server).await;
    let head_before = head(&server).await;
    let h3_before = household(&server, "H3").await;
    let mut hash = vec![0u8; 32];
    for event in &before {
        hash = Sha256::new()
            .chain_update(&hash)
            .chain_update(&event.body)
            .finalize()
            .to_vec();
        assert_eq!(hash, event.hash, "seq {}", event.seq);
    }
    assert_eq!(hash, head_before.hash);
    assert_eq!(head_before.seq, 11);

    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    assert_eq!(read_all(&server).await, before);
    assert_eq!(head(&server).await, head_before);
    assert_eq!(household(&server, "H3").await, h3_before);
    let mut registry = server.registry().await;
    let next = send(&mut registry, &identify("H10", "2015-03-01", &[10]))
        .await
        .unwrap();
    assert_eq!(next.seq, 12);
    let last = read_all(&server).await.pop().unwrap();
    let expected = Sha256::new()
        .chain_update(&head_before.hash)
        .chain_update(&last.body)
        .finalize()
        .to_vec();
    assert_eq!(last.hash, expected);
    server.stop().await;
}

#[tokio::test]
async fn health_serves_and_reflection_lists_the_services() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let server = TestServer::start().await;
    let channel = server.any_channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "rollstore.v1.Registry",
        "rollstore.v1.Rolls",
        "rollstore.v1.AuditLog",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut client = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("not a service list: {response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "rollstore.v1.Registry",
            "rollstore.v1.Rolls",
            "rollstore.v1.AuditLog",
        ] {
            assert!(names.contains(&expected.to_string()), "{names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("not a service list: {response:?}");
        };
        assert!(list.service.iter().any(|s| s.name == "rollstore.v1.Rolls"));
    }
}

#[tokio::test]
async fn writes_after_shutdown_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let register = rollstore::app::Register::open(dir.path(), Default::default()).unwrap();
    register
        .append_one(identify("H1", "2015-03-01", &[1]))
        .await
        .unwrap();
    register.close().await;
    let error = register
        .append_one(identify("H2", "2015-03-01", &[2]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, rollstore::Error::Unavailable(_)),
        "{error:?}"
    );
}

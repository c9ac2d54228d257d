//! The load generator's smoke test: a few hundred requests of each shape against a real server
//! on port 0. Every command it sends must be one the rules accept (no errors), every reported
//! event must be in the log, and the mixed load must really mix. Timings are not checked here;
//! the figures come from `rollstore bench` and `benches/`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use rollstore::loadgen::{self, Mix, Options, Report};
use rollstore::pb;

struct Case {
    name: &'static str,
    mix: Mix,
    concurrency: usize,
    /// Connections the clients share; `None`: one each.
    connections: Option<usize>,
    batch: usize,
    requests: u64,
    households: Option<u64>,
    request_ids: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "single identifications",
        mix: Mix::Identify,
        concurrency: 4,
        connections: None,
        batch: 1,
        requests: 200,
        households: None,
        request_ids: false,
    },
    Case {
        name: "single mixed commands",
        mix: Mix::Mixed,
        concurrency: 4,
        connections: None,
        batch: 1,
        requests: 300,
        households: Some(20),
        request_ids: true,
    },
    Case {
        name: "batches of identifications",
        mix: Mix::Identify,
        concurrency: 2,
        connections: None,
        batch: 50,
        requests: 10,
        households: None,
        request_ids: false,
    },
    Case {
        name: "batches of mixed commands",
        mix: Mix::Mixed,
        concurrency: 3,
        connections: None,
        batch: 40,
        requests: 12,
        households: Some(30),
        request_ids: false,
    },
    Case {
        name: "single mixed commands, four clients on one connection",
        mix: Mix::Mixed,
        concurrency: 4,
        connections: Some(1),
        batch: 1,
        requests: 200,
        households: Some(20),
        request_ids: false,
    },
    Case {
        name: "batches of identifications, three clients on two connections",
        mix: Mix::Identify,
        concurrency: 3,
        connections: Some(2),
        batch: 20,
        requests: 9,
        households: None,
        request_ids: true,
    },
    Case {
        name: "GetHead only",
        mix: Mix::Head,
        concurrency: 4,
        connections: None,
        batch: 1,
        requests: 200,
        households: None,
        request_ids: false,
    },
];

/// A TCP relay to `server` that counts the connections made through it: how a test sees how
/// many connections the load generator really opened, not how many it says it did.
async fn counting_relay(server: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    let opened = Arc::new(AtomicUsize::new(0));
    let counted = opened.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, opened)
}

fn options(server: &TestServer, case: &Case, run: u32) -> Options {
    Options {
        address: server.address.to_string(),
        concurrency: case.concurrency,
        connections: case.connections,
        batch: case.batch,
        duration: Duration::from_secs(120),
        requests: Some(case.requests),
        mix: case.mix,
        run,
        households: case.households,
        request_ids: case.request_ids,
        seed: 7,
    }
}

/// How many events of each kind the log holds from `from` on, and how many carry a request_id.
async fn kinds_from(server: &TestServer, from: u64) -> (BTreeMap<i32, u64>, u64) {
    let mut stream = server
        .audit()
        .await
        .read_events(pb::ReadEventsRequest {
            from_seq: from,
            limit: 10_000,
        })
        .await
        .expect("ReadEvents answers")
        .into_inner();
    let (mut kinds, mut with_ids) = (BTreeMap::new(), 0);
    while let Some(message) = stream.message().await.expect("the stream reads") {
        let event = message.event.expect("every message carries an event");
        *kinds.entry(event.kind).or_insert(0) += 1;
        with_ids += u64::from(!event.request_id.is_empty());
    }
    (kinds, with_ids)
}

/// The percentiles in order, and the slowest request sent while the run ran.
fn check_latencies(name: &str, report: &Report, began: chrono::DateTime<chrono::Utc>) {
    let l = &report.latency_ms;
    assert!(
        0.0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{name}: percentiles out of order: {l:?}"
    );
    let sent = report
        .slowest_sent_at
        .unwrap_or_else(|| panic!("{name}: requests were sent, so one was the slowest"));
    assert!(
        began <= sent && sent <= chrono::Utc::now(),
        "{name}: the slowest request was sent at {sent}, outside the run (from {began})"
    );
}

#[tokio::test]
async fn every_shape_of_load_is_accepted_and_lands_in_the_log() {
    let server = TestServer::start().await;
    for (run, case) in CASES.iter().enumerate() {
        let before = server.head_seq().await;
        let (relay, opened) = counting_relay(server.address).await;
        let began = chrono::Utc::now();
        let report = loadgen::run(Options {
            address: relay.to_string(),
            ..options(&server, case, run as u32)
        })
        .await
        .unwrap_or_else(|e| panic!("{}: the load generator failed: {e}", case.name));
        let name = case.name;
        assert_eq!(report.errors, 0, "{name}: {:?}", report.first_error);
        assert_eq!(report.requests, case.requests, "{name}: requests");
        let connections = case.connections.unwrap_or(case.concurrency);
        assert_eq!(report.connections, connections, "{name}: connections");
        assert_eq!(
            opened.load(Ordering::SeqCst),
            connections,
            "{name}: connections opened"
        );
        let written = if case.mix == Mix::Head {
            0
        } else {
            case.requests * case.batch as u64
        };
        assert_eq!(report.events, written, "{name}: events reported");
        let after = server.head_seq().await;
        assert_eq!(after - before, written, "{name}: events in the log");
        check_latencies(name, &report, began);

        if written > 0 {
            let (kinds, with_ids) = kinds_from(&server, before + 1).await;
            let expected = if case.request_ids { written } else { 0 };
            assert_eq!(with_ids, expected, "{name}: events with a request_id");
            let identified = kinds
                .get(&(pb::EventKind::Identify as i32))
                .copied()
                .unwrap_or(0);
            match case.mix {
                Mix::Identify => assert_eq!(identified, written, "{name}: {kinds:?}"),
                _ => {
                    let cap = case
                        .households
                        .expect("the mixed cases cap their households");
                    assert!(
                        identified <= cap,
                        "{name}: {identified} identifications for a cap of {cap}"
                    );
                    for kind in [
                        pb::EventKind::Adjust,
                        pb::EventKind::Exit,
                        pb::EventKind::Relapse,
                    ] {
                        assert!(
                            kinds.contains_key(&(kind as i32)),
                            "{name}: no {kind:?} in {kinds:?}"
                        );
                    }
                }
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_command_line_writes_its_report_as_a_table_and_as_json() {
    let server = TestServer::start().await;
    let json = server.dir.path().join("report.json");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rollstore"));
    command
        .args(["bench", "--address", &server.address.to_string()])
        .args(["--concurrency", "2", "--connections", "1"])
        .args(["--batch", "10", "--requests", "20"])
        .args(["--mix", "mixed", "--seconds", "60", "--json"])
        .arg(&json);
    // Off the test's one runtime thread, which the server needs to answer.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the waiting thread ends")
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("events           200"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report is written"))
            .expect("it parses");
    assert_eq!(report["events"], 200);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["mix"], "mixed");
    assert_eq!(report["connections"], 1);
    assert!(
        report["latency_ms"]["p99"]
            .as_f64()
            .is_some_and(|p| p > 0.0),
        "{report}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_load_that_cannot_be_sent_is_refused_with_a_reason() {
    let server = TestServer::start().await;
    let head = Case {
        name: "",
        mix: Mix::Head,
        concurrency: 1,
        connections: None,
        batch: 5,
        requests: 1,
        households: None,
        request_ids: false,
    };
    let error = loadgen::run(options(&server, &head, 0))
        .await
        .expect_err("GetHead has no batches");
    assert!(error.contains("--batch"), "{error}");
    let forever = Options {
        duration: Duration::MAX,
        ..options(&server, &CASES[0], 0)
    };
    let error = loadgen::run(forever)
        .await
        .expect_err("no clock runs that long");
    assert!(error.contains("too long"), "{error}");
    for connections in [0, 5] {
        let shared = Options {
            concurrency: 4,
            connections: Some(connections),
            ..options(&server, &CASES[0], 0)
        };
        let error = loadgen::run(shared)
            .await
            .expect_err("between 1 and as many connections as clients");
        assert!(error.contains("--connections"), "{error}");
    }
    let nobody = Options {
        address: "127.0.0.1:1".into(),
        ..options(&server, &CASES[0], 0)
    };
    let error = loadgen::run(nobody)
        .await
        .expect_err("nothing listens on port 1");
    assert!(error.contains("cannot connect to 127.0.0.1:1"), "{error}");
    assert_eq!(server.head_seq().await, 0, "nothing was written");
    server.stop().await;
}

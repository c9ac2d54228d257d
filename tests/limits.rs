//! Resource limits through the real server: each refusal has its code, names its limit, and
//! appends nothing.

mod common;

use common::*;
use rollstore::api::Limits;
use rollstore::app::Config;
use rollstore::pb;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tonic::Code;
use tracing_subscriber::layer::SubscriberExt;

async fn limited() -> TestServer {
    let mut config = Config {
        max_batch: 50,
        ..Config::default()
    };
    config.policy.max_members = 5;
    config.policy.max_text_chars = 40;
    let limits = Limits {
        max_request_bytes: 64 * 1024,
        max_streams: 4,
        ..Limits::default()
    };
    TestServer::start_limited(tempfile::tempdir().unwrap(), config, limits).await
}

#[tokio::test]
async fn oversized_and_overlong_requests_name_their_limit() {
    let server = limited().await;
    let mut registry = server.registry().await;
    let batch = |n: u32| -> Vec<_> {
        (0..n)
            .map(|i| identify(&format!("H{i}"), "2016-03-01", &[i]))
            .collect()
    };
    let cases: Vec<(&str, Vec<rollstore::domain::Command>, Code, &str)> = vec![
        (
            "a request over max_request_bytes",
            batch(49)
                .into_iter()
                .map(|c| tweak(c, |c| c.document_ref = "文".repeat(40)))
                .chain((100..400).map(|i| {
                    tweak(identify(&format!("X{i}"), "2016-03-01", &[i]), |c| {
                        c.document_ref = "文".repeat(40)
                    })
                }))
                .collect(),
            Code::ResourceExhausted,
            "max_request_bytes",
        ),
        (
            "a batch over max_batch",
            batch(51),
            Code::ResourceExhausted,
            "max_batch",
        ),
        (
            "a household over max_members",
            vec![identify("H1", "2016-03-01", &[1, 2, 3, 4, 5, 6])],
            Code::InvalidArgument,
            "max_members",
        ),
        (
            "a name over max_text_chars",
            vec![tweak(identify("H1", "2016-03-01", &[1]), |c| {
                identification(c).members[0].name = "长".repeat(41)
            })],
            Code::InvalidArgument,
            "max_text_chars",
        ),
    ];
    for (name, commands, code, limit) in cases {
        let status = send_batch(&mut registry, &commands).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(limit),
            "{name}: {}",
            status.message()
        );
        assert_eq!(server.head_seq().await, 0, "{name} appended something");
    }
    // Within every limit, the same server takes the write.
    send_batch(&mut registry, &batch(50)).await.unwrap();
    assert_eq!(server.head_seq().await, 50);
}

#[tokio::test]
async fn subscriptions_that_never_read_are_capped() {
    let server = limited().await;
    let mut registry = server.registry().await;
    send_batch(
        &mut registry,
        &(0..50)
            .map(|i| identify(&format!("H{i}"), "2016-03-01", &[i]))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    // Four streams that never read hold their permits; a fifth is refused, naming the limit.
    let mut open = Vec::new();
    for _ in 0..4 {
        let response = server
            .audit()
            .await
            .subscribe(pb::SubscribeRequest::default())
            .await
            .unwrap();
        open.push(response.into_inner());
    }
    let status = server
        .audit()
        .await
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect_err("a fifth stream is refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("max_streams"),
        "{}",
        status.message()
    );
    // Writes go on while they sit unread.
    send(&mut registry, &identify("Z", "2016-03-01", &[999]))
        .await
        .unwrap();
    // Closing one frees its place.
    drop(open.pop());
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(response) = server
            .audit()
            .await
            .subscribe(pb::SubscribeRequest::default())
            .await
        {
            reopened = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut stream = reopened
        .expect("a closed stream's place is free again")
        .into_inner();
    assert_eq!(
        stream.message().await.unwrap().unwrap().event.unwrap().seq,
        1
    );
}

/// Counts the server's "a write waits for the write budget" events, from every thread: the
/// one sign, seen from outside, that the budget stands in front of the writes at all.
struct BudgetWaits;

static BUDGET_WAITS: AtomicUsize = AtomicUsize::new(0);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for BudgetWaits {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "rollstore::api::budget" {
            BUDGET_WAITS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The budget's waits so far in this test binary, with the counter installed once.
fn budget_waits() -> usize {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(BudgetWaits))
            .expect("no other global subscriber in this test binary");
    });
    BUDGET_WAITS.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_write_budget_wait_their_turn_and_all_land() {
    let waits_before = budget_waits();
    // A budget of one byte: every write is larger, so each one runs alone while the others
    // wait, read but undecoded. Refused writes must give their bytes back like the rest.
    let limits = Limits {
        max_write_bytes_in_flight: 1,
        ..Limits::default()
    };
    let server =
        TestServer::start_limited(tempfile::tempdir().unwrap(), Config::default(), limits).await;
    let mut writes = Vec::new();
    for client in 0..8u32 {
        let mut registry = server.registry().await;
        writes.push(tokio::spawn(async move {
            let batch: Vec<_> = (0..10)
                .map(|i| identify(&format!("B{client}-{i}"), "2016-03-01", &[client * 100 + i]))
                .collect();
            let receipts = send_batch(&mut registry, &batch).await.map(|r| r.len());
            let single = send(
                &mut registry,
                &identify(&format!("S{client}"), "2016-03-01", &[5_000 + client]),
            )
            .await
            .map(|_| 1);
            // This client's own household, already on the roll: refused by a rule.
            let again = identify(&format!("B{client}-0"), "2016-03-02", &[9_000 + client]);
            let refused = send(&mut registry, &again).await;
            (receipts, single, refused)
        }));
    }
    let mut written = 0;
    for write in writes {
        let (receipts, single, refused) = tokio::time::timeout(Duration::from_secs(60), write)
            .await
            .expect("no write waits forever for the budget")
            .expect("the client task finishes");
        written += receipts.expect("the batch lands") + single.expect("the single write lands");
        let status = refused.expect_err("a household already on the roll is refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    assert_eq!(written, 88);
    assert_eq!(server.head_seq().await, 88);
    // Eight clients at once against room for one: some of their 24 writes waited.
    assert!(
        budget_waits() > waits_before,
        "no write waited for the budget: is it in front of the writes?"
    );
    let mut registry = server.registry().await;
    send(&mut registry, &identify("LAST", "2016-03-01", &[7_777]))
        .await
        .expect("the budget is whole again after every write was answered");
}

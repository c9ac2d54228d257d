//! Crash torture: the real server binary, concurrent writers (single and batched, with
//! idempotency keys) and a subscriber, killed with SIGKILL at random moments, restarted, and
//! checked:
//!
//! - every acknowledged write is in the log exactly once, at the seq it was acknowledged with;
//! - a write whose answer was lost either fully exists or does not, and retrying it with the
//!   same request_id settles which (replayed, or appended now);
//! - the chain verifies, seqs are gapless, and the projections equal a replay of the log —
//!   including those loaded from a checkpoint and a delta on it, which the server writes in the
//!   background every few dozen events here, while the writers go on (and the kill may land in
//!   one);
//! - the subscriber, resuming from its last seq + 1, sees every seq once, in order.
//!
//! A few rounds run in the normal test suite; `ROLLSTORE_TORTURE_ROUNDS=200 cargo test --release
//! --test torture -- --nocapture` runs a long one.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::{RngExt, SeedableRng};
use rollstore::app::audit;
use rollstore::domain::{Adjustment, Command};
use rollstore::pb;
use tonic::transport::Channel;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: tokio::process::Child,
    address: String,
}

async fn start(dir: &std::path::Path) -> Server {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollstore"))
        .args(["serve", "--data"])
        .arg(dir)
        .args(["--listen", &address])
        // Checkpoints taken while writes go on, many per round, and deltas on them between.
        .args(["--checkpoint-every", "40", "--delta-every", "15"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    // Wait until it serves.
    for _ in 0..200 {
        if let Ok(channel) = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
        {
            let mut audit = pb::audit_log_client::AuditLogClient::new(channel);
            if audit.get_head(pb::GetHeadRequest {}).await.is_ok() {
                return Server { child, address };
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server did not come up on {address}");
}

async fn channel(address: &str) -> Option<Channel> {
    Channel::from_shared(format!("http://{address}"))
        .ok()?
        .connect()
        .await
        .ok()
}

/// What the writers learned: acknowledged request_ids with their seqs, and those whose answer
/// was lost (with the command, to retry).
#[derive(Default)]
struct Ledger {
    acknowledged: BTreeMap<String, u64>,
    uncertain: Vec<Command>,
}

/// One writer: sends commands until the server dies, recording what it learns.
async fn writer(
    address: String,
    worker: u32,
    round: u32,
    ledger: Arc<Mutex<Ledger>>,
    households: Arc<Mutex<Vec<String>>>,
) {
    let Some(channel) = channel(&address).await else {
        return;
    };
    let mut registry = pb::registry_client::RegistryClient::new(channel);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from(round * 100 + worker));
    for i in 0u32.. {
        let batch = rng.random_range(0..4) == 0;
        let count = if batch { rng.random_range(2..20) } else { 1 };
        let mut commands = Vec::new();
        for k in 0..count {
            let tag = format!("r{round}w{worker}i{i}k{k}");
            let adjust = rng.random_range(0..3) == 0;
            let known = households.lock().unwrap().clone();
            let command = if adjust && !known.is_empty() && !batch {
                let hh = &known[rng.random_range(0..known.len())];
                adjust_income(hh, rng.random_range(1000..9000))
            } else {
                let person = (round * 1_000_000 + worker * 100_000 + i * 20 + k) % 20_000_000;
                identify(&format!("T{tag}"), "2016-03-01", &[person])
            };
            commands.push(tweak(command, |c| {
                c.request_id = Some(format!("req-{tag}"))
            }));
        }
        let result = if batch {
            send_batch(&mut registry, &commands).await
        } else {
            send(&mut registry, &commands[0]).await.map(|r| vec![r])
        };
        let mut ledger = ledger.lock().unwrap();
        match result {
            Ok(receipts) => {
                for (command, receipt) in commands.iter().zip(receipts) {
                    let request_id = command.request_id.clone().unwrap();
                    assert!(ledger
                        .acknowledged
                        .insert(request_id, receipt.seq)
                        .is_none());
                    if matches!(command.change, rollstore::domain::Change::Identify(_)) {
                        households
                            .lock()
                            .unwrap()
                            .push(command.household_id.to_string());
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                // A refused command (e.g. an adjust racing another's): nothing was appended.
            }
            Err(_) => {
                ledger.uncertain.extend(commands);
                return;
            }
        }
    }
}

fn adjust_income(hh: &str, income: i64) -> Command {
    adjust(
        hh,
        "2016-03-01",
        Adjustment {
            income_per_capita: Some(income),
            ..Adjustment::default()
        },
    )
}

/// A subscriber from `from`, recording every seq until the server dies.
async fn subscriber(address: String, from: u64, seen: Arc<Mutex<Vec<u64>>>) {
    let Some(channel) = channel(&address).await else {
        return;
    };
    let mut audit = pb::audit_log_client::AuditLogClient::new(channel);
    let Ok(response) = audit
        .subscribe(pb::SubscribeRequest {
            from_seq: from,
            ..Default::default()
        })
        .await
    else {
        return;
    };
    let mut stream = response.into_inner();
    while let Ok(Some(message)) = stream.message().await {
        seen.lock().unwrap().push(message.event.unwrap().seq);
    }
}

async fn read_log(address: &str) -> Vec<pb::Event> {
    let mut audit = pb::audit_log_client::AuditLogClient::new(channel(address).await.unwrap());
    let mut events = Vec::new();
    loop {
        let from = events.len() as u64 + 1;
        let mut stream = audit
            .read_events(pb::ReadEventsRequest {
                from_seq: from,
                limit: 10_000,
            })
            .await
            .unwrap()
            .into_inner();
        let before = events.len();
        while let Some(m) = stream.message().await.unwrap() {
            events.push(m.event.unwrap());
        }
        if events.len() == before {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let rounds: u32 = std::env::var("ROLLSTORE_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let households = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut settled = 0usize;
    let mut from_checkpoints = 0;
    let mut from_deltas = 0;
    for round in 0..rounds {
        let mut server = start(dir.path()).await;
        // Settle what the last crash left uncertain: the same request_id again.
        let uncertain = std::mem::take(&mut ledger.lock().unwrap().uncertain);
        let mut registry =
            pb::registry_client::RegistryClient::new(channel(&server.address).await.unwrap());
        for command in uncertain {
            match send(&mut registry, &command).await {
                Ok(receipt) => {
                    let request_id = command.request_id.clone().unwrap();
                    ledger
                        .lock()
                        .unwrap()
                        .acknowledged
                        .insert(request_id, receipt.seq);
                    if matches!(command.change, rollstore::domain::Change::Identify(_)) {
                        households
                            .lock()
                            .unwrap()
                            .push(command.household_id.to_string());
                    }
                    settled += 1;
                }
                // An adjust that lost a race is refused, and was never appended.
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
                Err(status) => panic!("retrying {command:?} failed: {status}"),
            }
        }
        let resume_from = seen.lock().unwrap().last().copied().unwrap_or(0) + 1;
        let follower = tokio::spawn(subscriber(
            server.address.clone(),
            resume_from,
            seen.clone(),
        ));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                tokio::spawn(writer(
                    server.address.clone(),
                    w,
                    round,
                    ledger.clone(),
                    households.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..700))).await;
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        for w in writers {
            w.await.unwrap();
        }
        follower.await.unwrap();

        // The store as the crash left it: the chain verifies and the projections the next
        // start will load equal a replay of the log.
        let report = audit::verify_store(dir.path(), &|_, _, _| {}).unwrap();
        assert!(report.ok(), "round {round}: {report:?}");
        if report.loaded.starts_with("checkpoint at seq") {
            from_checkpoints += 1;
        }
        if report.loaded.contains("and delta at seq") {
            from_deltas += 1;
        }
    }
    // Not asserted: whether a kill lands after a delta is up to chance in a few rounds
    // (`src/app/mod.rs` tests a start-up from a delta deterministically).
    println!("{rounds} rounds: {from_checkpoints} loaded from a checkpoint, {from_deltas} from a delta on it");
    assert!(
        from_checkpoints > 0,
        "no round's store had a checkpoint to load: the background checkpoints went untested"
    );

    // Final checks against a live server.
    let server = start(dir.path()).await;
    let uncertain = std::mem::take(&mut ledger.lock().unwrap().uncertain);
    let mut registry =
        pb::registry_client::RegistryClient::new(channel(&server.address).await.unwrap());
    for command in uncertain {
        if let Ok(receipt) = send(&mut registry, &command).await {
            ledger
                .lock()
                .unwrap()
                .acknowledged
                .insert(command.request_id.clone().unwrap(), receipt.seq);
        }
    }
    let events = read_log(&server.address).await;
    let ledger = ledger.lock().unwrap();
    let mut by_request: HashMap<&str, Vec<u64>> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "seqs are gapless");
        by_request
            .entry(event.request_id.as_str())
            .or_default()
            .push(event.seq);
    }
    for (request_id, seq) in &ledger.acknowledged {
        assert_eq!(
            by_request.get(request_id.as_str()),
            Some(&vec![*seq]),
            "{request_id} was acknowledged at seq {seq}"
        );
    }
    assert!(
        by_request.values().all(|seqs| seqs.len() == 1),
        "no request_id appears twice"
    );
    // The subscriber saw a gapless, duplicate-free prefix of the log across every restart.
    let seen = seen.lock().unwrap();
    assert_eq!(*seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    assert!(seen.len() as u64 <= events.len() as u64);
    eprintln!(
        "torture: {rounds} rounds, {} events, {} acknowledged writes, {settled} settled by retry, subscriber saw {}",
        events.len(),
        ledger.acknowledged.len(),
        seen.len()
    );
    drop(server);
}

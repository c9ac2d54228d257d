//! The audit log: subscriptions under concurrent writes, tamper detection, export and import,
//! and rebuilds.

mod common;

use std::time::Duration;

use common::*;
use rollstore::app::audit;
use rollstore::pb;
use rollstore::store::{self, Entry, Key};
use tonic::Code;

/// Identifies households `from..to` in batches of `batch`, as one writer.
async fn write(server: &TestServer, from: u32, to: u32, batch: u32) {
    let mut registry = server.registry().await;
    let mut i = from;
    while i < to {
        let end = (i + batch).min(to);
        let commands: Vec<_> = (i..end)
            .map(|n| identify(&format!("H{n}"), "2016-03-01", &[n]))
            .collect();
        if commands.len() == 1 {
            send(&mut registry, &commands[0]).await.unwrap();
        } else {
            send_batch(&mut registry, &commands).await.unwrap();
        }
        i = end;
    }
}

/// The seqs a subscription delivers, until it has delivered `until` or ends.
async fn follow(
    server: &TestServer,
    request: pb::SubscribeRequest,
    until: u64,
    delay: Duration,
) -> Vec<u64> {
    let mut stream = server
        .audit()
        .await
        .subscribe(request)
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        let event = message.event.unwrap();
        seqs.push(event.seq);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if event.seq >= until {
            break;
        }
    }
    seqs
}

#[tokio::test]
async fn subscribers_see_exactly_the_committed_sequence_under_concurrent_writes() {
    let server = std::sync::Arc::new(TestServer::start().await);
    write(&server, 0, 50, 10).await;
    const TOTAL: u64 = 650;
    let from = |seq| pb::SubscribeRequest {
        from_seq: seq,
        ..Default::default()
    };
    // Subscribers that start mid-stream, read slowly, or disconnect and resume.
    let from_start = tokio::spawn({
        let server = server.clone();
        async move { follow(&server, from(1), TOTAL, Duration::ZERO).await }
    });
    let mid_stream = tokio::spawn({
        let server = server.clone();
        async move { follow(&server, from(37), TOTAL, Duration::ZERO).await }
    });
    let slow = tokio::spawn({
        let server = server.clone();
        async move { follow(&server, from(1), TOTAL, Duration::from_millis(2)).await }
    });
    let resuming = tokio::spawn({
        let server = server.clone();
        async move {
            let mut seen = Vec::new();
            while seen.last().copied().unwrap_or(0) < TOTAL {
                let next = seen.last().copied().unwrap_or(0) + 1;
                let mut stream = server
                    .audit()
                    .await
                    .subscribe(from(next))
                    .await
                    .unwrap()
                    .into_inner();
                // Read a few, then drop the connection.
                for _ in 0..40 {
                    match stream.message().await.unwrap() {
                        Some(m) => seen.push(m.event.unwrap().seq),
                        None => break,
                    }
                    if seen.last() == Some(&TOTAL) {
                        break;
                    }
                }
            }
            seen
        }
    });
    // Writers: single events and batches, concurrently.
    let writers: Vec<_> = [(50, 250, 1), (250, 450, 7), (450, 650, 50)]
        .into_iter()
        .map(|(a, b, batch)| {
            let server = server.clone();
            tokio::spawn(async move { write(&server, a, b, batch).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let all: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(from_start.await.unwrap(), all);
    assert_eq!(mid_stream.await.unwrap(), (37..=TOTAL).collect::<Vec<_>>());
    assert_eq!(slow.await.unwrap(), all);
    assert_eq!(resuming.await.unwrap(), all);
}

#[tokio::test]
async fn subscriptions_filter_by_region_and_kind_and_end_at_shutdown() {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    send(&mut registry, &identify("A", "2016-03-01", &[1]))
        .await
        .unwrap();
    let mut elsewhere = identify("B", "2016-03-01", &[2]);
    identification(&mut elsewhere).region_code = region(OTHER_VILLAGE);
    send(&mut registry, &elsewhere).await.unwrap();
    send(&mut registry, &lift_out("A", "2017-11-20", 4000))
        .await
        .unwrap();
    let relocation = rollstore::domain::Adjustment {
        relocate_to: Some(region(VILLAGE)),
        ..Default::default()
    };
    send(&mut registry, &adjust("B", "2017-05-01", relocation))
        .await
        .unwrap();

    // VILLAGE's events: A's two, and B's relocation into it.
    let village = follow(
        &server,
        pb::SubscribeRequest {
            from_seq: 1,
            region_prefix: VILLAGE.into(),
            kinds: vec![],
        },
        4,
        Duration::ZERO,
    )
    .await;
    assert_eq!(village, vec![1, 3, 4]);
    let exits = follow(
        &server,
        pb::SubscribeRequest {
            from_seq: 1,
            region_prefix: String::new(),
            kinds: vec![pb::EventKind::Exit as i32],
        },
        3,
        Duration::ZERO,
    )
    .await;
    assert_eq!(exits, vec![3]);

    // A live subscriber is told to resume elsewhere when the server stops.
    let mut stream = server
        .audit()
        .await
        .subscribe(pb::SubscribeRequest {
            from_seq: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let waiting = tokio::spawn(async move { stream.message().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.stop().await;
    let status = waiting.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// Writes a small history, stops the server, and returns its directory.
async fn history() -> tempfile::TempDir {
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    for i in 0..20u32 {
        send(
            &mut registry,
            &identify(&format!("H{i}"), "2016-03-01", &[i, 100 + i]),
        )
        .await
        .unwrap();
    }
    for i in 0..10u32 {
        send(
            &mut registry,
            &lift_out(&format!("H{i}"), "2017-11-20", 4000),
        )
        .await
        .unwrap();
    }
    server.stop().await
}

/// Rewrites the stopped server's log as `change` leaves its entries, in blocks of up to three
/// consecutive seqs (so that a change inside a block is tried, and a dropped event leaves a
/// gap where it was).
fn tamper(dir: &std::path::Path, change: impl FnOnce(&mut Vec<Entry>)) {
    // sled may still be releasing the stopped server's file lock for a moment.
    let config = store::sled_config(dir);
    let mut opened = config.open();
    for _ in 0..100 {
        if opened.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        opened = config.open();
    }
    let db = opened.unwrap();
    let mut entries = Vec::new();
    for item in db.range(Key::log()) {
        let (key, value) = item.unwrap();
        entries.extend(store::decode_item(&key, &value).unwrap());
        db.remove(key).unwrap();
    }
    change(&mut entries);
    let mut blocks: Vec<Vec<Entry>> = Vec::new();
    for entry in entries {
        match blocks.last_mut() {
            Some(block) if block.len() < 3 && block[block.len() - 1].seq + 1 == entry.seq => {
                block.push(entry)
            }
            _ => blocks.push(vec![entry]),
        }
    }
    for block in blocks {
        db.insert(
            Key::Block(block[0].seq).encode(),
            store::encode_block(&block),
        )
        .unwrap();
    }
    db.flush().unwrap();
}

fn verify(dir: &std::path::Path) -> audit::StoreReport {
    audit::verify_store(dir, &|_, _, _| {}).unwrap()
}

#[tokio::test]
async fn tampering_is_detected_at_the_seq_it_touches() {
    // One stored event's bytes altered (still valid JSON): verify and VerifyChain name it.
    let dir = history().await;
    assert!(verify(dir.path()).ok());
    tamper(dir.path(), |entries| {
        let seventh = &mut entries[6];
        assert_eq!(seventh.seq, 7);
        let text = String::from_utf8(seventh.body.clone()).unwrap();
        let altered = text.replacen("张", "王", 1);
        assert_ne!(altered, text);
        seventh.body = altered.into_bytes();
    });
    let report = verify(dir.path());
    assert_eq!(
        report.chain.broken.as_ref().map(|b| b.0),
        Some(7),
        "{report:?}"
    );
    let server = TestServer::start_in(dir).await;
    let answer = server
        .audit()
        .await
        .verify_chain(pb::VerifyChainRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.ok);
    assert_eq!((answer.first_bad_seq, answer.verified_seq), (7, 6));
    let dir = server.stop().await;
    // A start-up that has to replay the log (no checkpoint) refuses the broken chain.
    std::fs::remove_file(dir.path().join("roll.checkpoint")).unwrap();
    match rollstore::app::Register::open(dir.path(), Default::default()) {
        Err(rollstore::Error::Corrupt(why)) => assert!(why.contains("event 7"), "{why}"),
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("a broken chain was served"),
    }
    drop(dir);

    // One event dropped.
    let dir = history().await;
    tamper(dir.path(), |entries| {
        entries.retain(|e| e.seq != 12);
    });
    assert_eq!(verify(dir.path()).chain.broken.map(|b| b.0), Some(12));

    // Two events swapped.
    let dir = history().await;
    tamper(dir.path(), |entries| {
        let (a, b) = (entries[3].clone(), entries[8].clone());
        (entries[3].hash, entries[3].body) = (b.hash, b.body);
        (entries[8].hash, entries[8].body) = (a.hash, a.body);
    });
    assert_eq!(verify(dir.path()).chain.broken.map(|b| b.0), Some(4));

    // The last event's hash altered.
    let dir = history().await;
    tamper(dir.path(), |entries| {
        let last = entries.last_mut().unwrap();
        assert_eq!(last.seq, 30);
        last.hash[0] ^= 0xff;
    });
    assert_eq!(verify(dir.path()).chain.broken.map(|b| b.0), Some(30));
}

/// What a few queries answer, to compare two stores.
async fn answers(server: &TestServer) -> Vec<String> {
    let mut rolls = server.rolls().await;
    let mut out = Vec::new();
    for as_of in ["", "2016-12-31", "2017-12-31"] {
        let stats = rolls
            .get_stats(pb::GetStatsRequest {
                region_prefix: "610602".into(),
                at: Some(pb::PointInTime {
                    as_of: as_of.into(),
                    known_at: None,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        out.push(format!("{stats:?}"));
    }
    let household = rolls
        .get_household(pb::GetHouseholdRequest {
            household_id: "H3".into(),
            at: None,
        })
        .await
        .unwrap()
        .into_inner();
    out.push(format!("{household:?}"));
    let head = server
        .audit()
        .await
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    out.push(format!("{head:?}"));
    out
}

#[tokio::test]
async fn export_then_import_gives_the_same_chain_and_answers() {
    let dir = history().await;
    let server = TestServer::start_in(dir).await;
    let expected = answers(&server).await;
    let dir = server.stop().await;

    let mut file = Vec::new();
    let head = audit::export(dir.path(), &mut file, &|_, _| {}).unwrap();
    assert_eq!(head.seq, 30);
    // Into a new, empty directory; the chain re-verifies and the projections are rebuilt.
    let target = tempfile::tempdir().unwrap();
    let imported = audit::import(target.path(), &mut file.as_slice(), &|_| {}).unwrap();
    assert_eq!(imported, head);
    assert!(verify(target.path()).ok());
    let server = TestServer::start_in(target).await;
    assert_eq!(answers(&server).await, expected);
    server.stop().await;

    // A file with one altered body is refused, with its line number, and nothing is kept.
    let text = String::from_utf8(file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[5] = lines[5].replacen("张", "王", 1);
    let broken = lines.join("\n");
    let refused_dir = tempfile::tempdir().unwrap().path().join("refused");
    let error = audit::import(&refused_dir, &mut broken.as_bytes(), &|_| {}).unwrap_err();
    assert!(error.to_string().contains("line 6"), "{error}");
    assert!(!refused_dir.exists());
    // Into a store that already holds events: refused.
    let error = audit::import(dir.path(), &mut text.as_bytes(), &|_| {}).unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error}");
}

#[tokio::test]
async fn a_rebuild_equals_the_incremental_projections() {
    let dir = history().await;
    // The server left a checkpoint: it equals a replay of the log.
    let report = verify(dir.path());
    assert!(report.ok(), "{report:?}");
    assert!(
        report.loaded.starts_with("checkpoint at seq 30"),
        "{}",
        report.loaded
    );
    let server = TestServer::start_in(dir).await;
    let before = answers(&server).await;
    let dir = server.stop().await;
    audit::rebuild_store(dir.path(), &|_, _| {}).unwrap();
    let server = TestServer::start_in(dir).await;
    assert_eq!(answers(&server).await, before);
    server.stop().await;
}

#[tokio::test]
async fn a_damaged_store_is_refused_with_an_error_not_a_panic() {
    let dir = history().await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("db"))
        .unwrap();
    file.set_len(4096).unwrap();
    drop(file);
    let opened = rollstore::app::Register::open(dir.path(), Default::default());
    match opened {
        Err(rollstore::Error::Corrupt(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("a truncated store opened"),
    }
}

//! Disk trouble: when the disk fills, writes fail with UNAVAILABLE and a clear message, nothing
//! acknowledged is lost, nothing half-written is visible, and writes succeed again once space
//! is back, without a restart.
//!
//! The disk is a small tmpfs mounted for the test (it needs root, as CI has); where mounting is
//! not allowed the test says so and checks nothing else.

mod common;

use std::process::Command as Process;

use common::*;
use rollstore::app::{audit, Config, Register};
use rollstore::domain::ExitReason;

struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(size: &str) -> Option<(tempfile::TempDir, Mount)> {
        let dir = tempfile::tempdir().ok()?;
        let status = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then(|| {
            let mount = Mount(dir.path().to_owned());
            (dir, mount)
        })
    }

    fn resize(&self, size: &str) {
        let status = Process::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.0).status();
    }
}

/// A register on a fresh 6 MiB tmpfs (its directory, the mount, the store's path), or `None`,
/// said on stderr, where mounting is not allowed.
fn register_on_a_small_disk() -> Option<(tempfile::TempDir, Mount, std::path::PathBuf, Register)> {
    let Some((dir, mount)) = Mount::tmpfs("6M") else {
        eprintln!(
            "disk_full: cannot mount a tmpfs here (not root?); the disk-full path is not exercised"
        );
        return None;
    };
    let data = dir.path().join("store");
    let register = Register::open(&data, Config::default()).unwrap();
    Some((dir, mount, data, register))
}

#[tokio::test]
async fn a_full_disk_refuses_writes_loses_nothing_and_recovers() {
    let Some((_dir, mount, data, register)) = register_on_a_small_disk() else {
        return;
    };
    let mut acknowledged = 0u64;
    let mut failure = None;
    for i in 0..200_000u32 {
        let batch: Vec<_> = (0..50)
            .map(|k| identify(&format!("H{i}-{k}"), "2016-03-01", &[i * 50 + k]))
            .collect();
        match register.append(batch).await {
            Ok(receipts) => acknowledged = receipts.last().unwrap().seq,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let error = failure.expect("a 6 MiB disk fills up");
    assert!(
        matches!(error, rollstore::Error::Unavailable(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("space"), "{error}");
    assert_eq!(
        register.head().seq,
        acknowledged,
        "nothing half-written is visible"
    );
    // More space: the same register writes again.
    mount.resize("64M");
    let receipt = register
        .append_one(identify("after", "2016-03-01", &[20_000_000]))
        .await
        .unwrap();
    assert_eq!(receipt.seq, acknowledged + 1);
    register.close().await;
    drop(register);
    let report = audit::verify_store(&data, &|_, _, _| {}).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.chain.verified.seq, acknowledged + 1);
}

/// A checkpoint that the disk fills under (here the shutdown's) leaves no file behind: its
/// temporary file would hold the very space that ran out.
#[tokio::test]
async fn a_checkpoint_the_disk_fills_under_leaves_no_file_behind() {
    let Some((dir, _mount, data, register)) = register_on_a_small_disk() else {
        return;
    };
    let batch: Vec<_> = (0..1_000u32)
        .map(|k| identify(&format!("H{k}"), "2016-03-01", &[k]))
        .collect();
    register.append(batch).await.unwrap();
    // Whatever the store left free goes to a file beside it.
    let mut filler = std::fs::File::create(dir.path().join("filler")).unwrap();
    while std::io::Write::write_all(&mut filler, &[0; 4096]).is_ok() {}
    register.close().await;
    let left: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !data.join("roll.checkpoint").exists(),
        "the checkpoint cannot have been written on a full disk"
    );
}

/// Many writers at once when the disk fills: the commit that fails takes with it only the
/// writes decided over it, each refused with UNAVAILABLE; every write acknowledged before it,
/// including those still being applied to the roll while it failed, is in the log and in the
/// roll, which still matches a replay of the log.
#[tokio::test]
async fn writers_racing_a_full_disk_keep_every_acknowledged_write() {
    const WRITERS: u32 = 8;
    const BATCH: u32 = 20;
    let Some((_dir, mount, data, register)) = register_on_a_small_disk() else {
        return;
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let register = register.clone();
            tokio::spawn(async move {
                // Every seq acknowledged to this writer, and its last household.
                let mut acknowledged = Vec::new();
                let mut last = None;
                for i in 0u32.. {
                    let household = format!("W{w}-{i}");
                    let batch: Vec<_> = (0..BATCH)
                        .map(|k| {
                            let people = [((w * 100_000 + i) * BATCH + k) * 2];
                            if k == 0 {
                                identify(&household, "2016-03-01", &people)
                            } else {
                                identify(&format!("{household}-{k}"), "2016-03-01", &people)
                            }
                        })
                        .collect();
                    match register.append(batch).await {
                        Ok(receipts) => {
                            acknowledged.extend(receipts.iter().map(|r| r.seq));
                            last = Some(household);
                        }
                        Err(error) => {
                            assert!(
                                matches!(error, rollstore::Error::Unavailable(_)),
                                "writer {w}: {error:?}"
                            );
                            return (acknowledged, last);
                        }
                    }
                }
                unreachable!("a 6 MiB disk fills up")
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    let mut lasts = Vec::new();
    for writer in writers {
        let (seqs, last) = writer.await.unwrap();
        acknowledged.extend(seqs);
        lasts.extend(last);
    }
    acknowledged.sort_unstable();
    let count = acknowledged.len() as u64;
    assert_eq!(
        acknowledged,
        (1..=count).collect::<Vec<_>>(),
        "the acknowledged writes are the log's first events, each once"
    );
    assert_eq!(register.head().seq, count, "nothing refused was appended");
    mount.resize("64M");
    // Each writer's last acknowledged household is in the roll, at version 1: a removal that
    // expects it succeeds.
    for household in &lasts {
        let removal = tweak(exit(household, "2017-03-01", ExitReason::Removed), |c| {
            c.expected_version = Some(1)
        });
        register.append_one(removal).await.unwrap();
    }
    register.close().await;
    drop(register);
    let report = audit::verify_store(&data, &|_, _, _| {}).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.chain.verified.seq, count + lasts.len() as u64);
}

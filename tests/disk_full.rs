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

#[tokio::test]
async fn a_full_disk_refuses_writes_loses_nothing_and_recovers() {
    let Some((dir, mount)) = Mount::tmpfs("6M") else {
        eprintln!(
            "disk_full: cannot mount a tmpfs here (not root?); the disk-full path is not exercised"
        );
        return;
    };
    let data = dir.path().join("store");
    let register = Register::open(&data, Config::default()).unwrap();
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

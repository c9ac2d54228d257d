//! An independent client: the Python auditor in clients/python, with stubs generated from
//! proto/ at run time, subscribes from seq 1 against the real server and recomputes the chain
//! itself from each event's body.
//!
//! The test makes its own virtual environment (target/interop-venv) with the pinned
//! requirements the first time, so `cargo test` needs only python3 and the package index.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("interop-venv");
    let python = venv.join("bin").join("python");
    let requirements = root.join("clients/python/requirements.txt");
    let marker = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements).expect("clients/python/requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is needed for the interop test (apt-get install python3 python3-venv)");
    assert!(status.success(), "python3 -m venv failed");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("pip runs");
    assert!(
        status.success(),
        "pip install -r clients/python/requirements.txt failed"
    );
    std::fs::write(&marker, wanted).expect("the venv marker is written");
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_auditor_recomputes_the_chain_from_a_subscription() {
    let python = tokio::task::spawn_blocking(venv).await.unwrap();
    let server = TestServer::start().await;
    let mut registry = server.registry().await;
    for i in 0..40u32 {
        send(
            &mut registry,
            &identify(&format!("H{i}"), "2016-03-01", &[i]),
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
    // Writes go on while the auditor reads.
    let writer = tokio::spawn({
        let mut registry = registry.clone();
        async move {
            for i in 40..140u32 {
                send(
                    &mut registry,
                    &identify(&format!("H{i}"), "2016-03-01", &[i]),
                )
                .await
                .unwrap();
            }
        }
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(python)
        .arg(root.join("clients/python/audit_chain.py"))
        .arg("--address")
        .arg(server.address.to_string())
        .arg("--proto-root")
        .arg(root.join("proto"))
        .output()
        .await
        .expect("the auditor runs");
    writer.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the auditor failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("events verified independently"), "{stdout}");
    server.stop().await;
}

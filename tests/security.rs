//! Only the right people: roles and scopes through the real server, masked personal data, TLS.

mod common;

use common::*;
use rollstore::api::auth::{Authentication, Principals, PrincipalsFile, Role};
use rollstore::api::{convert, Options};
use rollstore::domain::Adjustment;
use rollstore::pb;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// The township of VILLAGE, and one elsewhere.
const TOWNSHIP: &str = "610602201";
const ELSEWHERE: &str = "610602104002";

struct Tokens {
    admin: String,
    auditor: String,
    clerk: String,
    clerk_masked: String,
    statistician: String,
}

async fn secured() -> (TestServer, Tokens, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("principals.json");
    let mut file = PrincipalsFile::default();
    let tokens = Tokens {
        admin: file.add("admin", Role::Admin, vec![], true).unwrap(),
        auditor: file.add("auditor", Role::Auditor, vec![], true).unwrap(),
        clerk: file
            .add("clerk-chuankou", Role::Clerk, vec![TOWNSHIP.into()], true)
            .unwrap(),
        clerk_masked: file
            .add("clerk-masked", Role::Clerk, vec![TOWNSHIP.into()], false)
            .unwrap(),
        statistician: file
            .add("statistician", Role::Statistician, vec![], false)
            .unwrap(),
    };
    file.write(&path).unwrap();
    let options = Options {
        auth: Authentication::On(Principals::load(&path).unwrap()),
        ..Options::default()
    };
    let server = TestServer::start_secured(tempfile::tempdir().unwrap(), options).await;
    (server, tokens, files)
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if !token.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// One call, as one caller: the outcome's code (Ok for success) and a dump of what it returned.
async fn call(channel: Channel, op: &str, token: &str) -> (Code, String) {
    let mut registry = pb::registry_client::RegistryClient::new(channel.clone());
    let mut rolls = pb::rolls_client::RollsClient::new(channel.clone());
    let mut audit = pb::audit_log_client::AuditLogClient::new(channel);
    let identify_in = |n: u32| identify(&format!("IN{n}"), "2016-03-01", &[5000 + n]);
    let identify_out = |n: u32| {
        tweak(
            identify(&format!("OUT{n}"), "2016-03-01", &[6000 + n]),
            |c| identification(c).region_code = region(ELSEWHERE),
        )
    };
    let batch = |commands: Vec<rollstore::domain::Command>| pb::AppendBatchRequest {
        commands: commands.iter().map(convert::command_message).collect(),
    };
    let n = rand_suffix();
    let result: Result<String, tonic::Status> = match op {
        "write in scope" => registry
            .append_batch(authed(batch(vec![identify_in(n)]), token))
            .await
            .map(|r| format!("{r:?}")),
        "write out of scope" => registry
            .append_batch(authed(batch(vec![identify_out(n)]), token))
            .await
            .map(|r| format!("{r:?}")),
        "household in scope" => rolls
            .get_household(authed(
                pb::GetHouseholdRequest {
                    household_id: "A".into(),
                    at: None,
                },
                token,
            ))
            .await
            .map(|r| format!("{r:?}")),
        "household out of scope" => rolls
            .get_household(authed(
                pb::GetHouseholdRequest {
                    household_id: "B".into(),
                    at: None,
                },
                token,
            ))
            .await
            .map(|r| format!("{r:?}")),
        "history in scope" => rolls
            .get_history(authed(
                pb::GetHistoryRequest {
                    household_id: "A".into(),
                },
                token,
            ))
            .await
            .map(|r| format!("{r:?}")),
        "roster in scope" | "roster out of scope" => {
            let prefix = if op == "roster in scope" {
                TOWNSHIP
            } else {
                "610602"
            };
            match rolls
                .list_roster(authed(
                    pb::ListRosterRequest {
                        region_prefix: prefix.into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
            {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let mut out = String::new();
                    while let Some(m) = stream.message().await.unwrap() {
                        out.push_str(&format!("{m:?}"));
                    }
                    Ok(out)
                }
                Err(status) => Err(status),
            }
        }
        "stats in scope" | "stats out of scope" => {
            let prefix = if op == "stats in scope" {
                TOWNSHIP
            } else {
                "610602"
            };
            rolls
                .get_stats(authed(
                    pb::GetStatsRequest {
                        region_prefix: prefix.into(),
                        at: None,
                    },
                    token,
                ))
                .await
                .map(|r| format!("{r:?}"))
        }
        "read log" => match audit
            .read_events(authed(
                pb::ReadEventsRequest {
                    from_seq: 1,
                    limit: 100,
                },
                token,
            ))
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                let mut out = String::new();
                while let Some(m) = stream.message().await.unwrap() {
                    out.push_str(&format!("{m:?}"));
                }
                Ok(out)
            }
            Err(status) => Err(status),
        },
        "subscribe in scope" => match audit
            .subscribe(authed(
                pb::SubscribeRequest {
                    from_seq: 1,
                    region_prefix: TOWNSHIP.into(),
                    kinds: vec![],
                },
                token,
            ))
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                let first = stream.message().await.unwrap();
                Ok(format!("{first:?}"))
            }
            Err(status) => Err(status),
        },
        "verify chain" => audit
            .verify_chain(authed(pb::VerifyChainRequest::default(), token))
            .await
            .map(|r| format!("{r:?}")),
        other => panic!("unknown op {other}"),
    };
    match result {
        Ok(dump) => (Code::Ok, dump),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

async fn head(server: &TestServer, token: &str) -> u64 {
    server
        .audit()
        .await
        .get_head(authed(pb::GetHeadRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .seq
}

#[tokio::test]
async fn each_role_may_do_what_it_may_and_nothing_else() {
    let (server, t, _files) = secured().await;
    // A household in the clerk's township (A) and one outside it (B), written by the admin.
    let mut registry = pb::registry_client::RegistryClient::new(server.any_channel().await);
    let setup = pb::AppendBatchRequest {
        commands: [
            identify("A", "2016-03-01", &[1, 2]),
            tweak(identify("B", "2016-03-01", &[3]), |c| {
                identification(c).region_code = region(ELSEWHERE)
            }),
        ]
        .iter()
        .map(convert::command_message)
        .collect(),
    };
    registry
        .append_batch(authed(setup, &t.admin))
        .await
        .unwrap();

    use Code::{Ok as Y, PermissionDenied as N};
    #[rustfmt::skip]
    let matrix: Vec<(&str, [Code; 4])> = vec![
        //                              admin auditor clerk statistician
        ("write in scope",             [Y, N, Y, N]),
        ("write out of scope",         [Y, N, N, N]),
        ("household in scope",         [Y, Y, Y, N]),
        ("household out of scope",     [Y, Y, N, N]),
        ("history in scope",           [Y, Y, Y, N]),
        ("roster in scope",            [Y, Y, Y, N]),
        ("roster out of scope",        [Y, Y, N, N]),
        ("stats in scope",             [Y, Y, Y, Y]),
        ("stats out of scope",         [Y, Y, N, Y]),
        ("read log",                   [Y, Y, N, N]),
        ("subscribe in scope",         [Y, Y, Y, N]),
        ("verify chain",               [Y, Y, N, N]),
    ];
    let callers = [
        ("admin", &t.admin),
        ("auditor", &t.auditor),
        ("clerk", &t.clerk),
        ("statistician", &t.statistician),
    ];
    let mut failures = Vec::new();
    for (op, expected) in &matrix {
        for ((who, token), code) in callers.iter().zip(expected) {
            let before = head(&server, &t.admin).await;
            let (got, detail) = call(server.any_channel().await, op, token).await;
            if got != *code {
                failures.push(format!(
                    "{who} {op}: expected {code:?}, got {got:?} ({detail})"
                ));
            }
            if got != Code::Ok && head(&server, &t.admin).await != before {
                failures.push(format!("{who} {op}: refused, yet appended"));
            }
        }
    }
    // No token, or an unknown one: unauthenticated, for every operation.
    for op in [
        "write in scope",
        "household in scope",
        "stats in scope",
        "read log",
    ] {
        for token in ["", "rs_not-a-real-token"] {
            let (got, _) = call(server.any_channel().await, op, token).await;
            if got != Code::Unauthenticated {
                failures.push(format!("token {token:?} {op}: got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The actor is the authenticated principal, whatever the client says.
    let history = pb::rolls_client::RollsClient::new(server.any_channel().await)
        .get_history(authed(
            pb::GetHistoryRequest {
                household_id: "IN0".into(),
            },
            &t.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history[0].actor, "admin");
    let mut clerk_writes = 0;
    for n in 100..103 {
        let command = identify(&format!("C{n}"), "2016-03-01", &[7000 + n]);
        let request = pb::AppendBatchRequest {
            commands: vec![convert::command_message(&command)],
        };
        let receipt = registry
            .append_batch(authed(request, &t.clerk))
            .await
            .unwrap()
            .into_inner()
            .receipts;
        clerk_writes += receipt.len();
    }
    let events = pb::rolls_client::RollsClient::new(server.any_channel().await)
        .get_history(authed(
            pb::GetHistoryRequest {
                household_id: "C101".into(),
            },
            &t.auditor,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        (clerk_writes, events[0].actor.as_str()),
        (3, "clerk-chuankou")
    );
    // Health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.any_channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_relocation_needs_both_regions_in_scope() {
    let (server, t, _files) = secured().await;
    let mut registry = pb::registry_client::RegistryClient::new(server.any_channel().await);
    let write = |command: rollstore::domain::Command, token: &str| {
        authed(
            pb::AppendBatchRequest {
                commands: vec![convert::command_message(&command)],
            },
            token,
        )
    };
    registry
        .append_batch(write(identify("A", "2016-03-01", &[1]), &t.clerk))
        .await
        .unwrap();
    let before = head(&server, &t.admin).await;
    let away = adjust(
        "A",
        "2016-05-01",
        Adjustment {
            relocate_to: Some(region(ELSEWHERE)),
            ..Default::default()
        },
    );
    let status = registry
        .append_batch(write(away.clone(), &t.clerk))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(head(&server, &t.admin).await, before);
    // The admin may; then the clerk may not bring it back either, as it is now outside.
    registry.append_batch(write(away, &t.admin)).await.unwrap();
    let back = adjust(
        "A",
        "2016-06-01",
        Adjustment {
            relocate_to: Some(region(VILLAGE)),
            ..Default::default()
        },
    );
    let status = registry
        .append_batch(write(back, &t.clerk))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn masked_reads_never_hold_a_full_id_number() {
    let (server, t, _files) = secured().await;
    let mut registry = pb::registry_client::RegistryClient::new(server.any_channel().await);
    let people: Vec<u32> = (1..=6).collect();
    let commands = [
        identify("A", "2016-03-01", &people[..3]),
        identify("A2", "2016-03-01", &people[3..]),
    ];
    let setup = pb::AppendBatchRequest {
        commands: commands.iter().map(convert::command_message).collect(),
    };
    registry
        .append_batch(authed(setup, &t.admin))
        .await
        .unwrap();
    let ids: Vec<String> = people.iter().map(|n| person(*n).to_string()).collect();
    let mut seen = String::new();
    for op in [
        "household in scope",
        "history in scope",
        "roster in scope",
        "stats in scope",
        "subscribe in scope",
    ] {
        let (code, dump) = call(server.any_channel().await, op, &t.clerk_masked).await;
        assert_eq!(code, Code::Ok, "{op}: {dump}");
        seen.push_str(&dump);
    }
    for op in ["stats in scope", "stats out of scope"] {
        let (code, dump) = call(server.any_channel().await, op, &t.statistician).await;
        assert_eq!(code, Code::Ok, "{op}: {dump}");
        seen.push_str(&dump);
    }
    for id in &ids {
        assert!(!seen.contains(id.as_str()), "{id} leaked");
        assert!(!seen.contains(&id[6..14]), "the birth date of {id} leaked");
    }
    assert!(seen.contains("610602********"), "masked IDs are shown");
    assert!(
        seen.contains("body_withheld: true"),
        "bodies are withheld, not faked"
    );
    // The unmasked clerk sees them.
    let (_, full) = call(server.any_channel().await, "household in scope", &t.clerk).await;
    assert!(full.contains(ids[0].as_str()));
}

#[tokio::test]
async fn tls_round_trip_and_a_plaintext_client_refused() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certified.cert.pem();
    let key = certified.signing_key.serialize_pem();
    let options = Options {
        tls: Some(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(&cert, &key)),
        ),
        ..Options::default()
    };
    let server = TestServer::start_secured(tempfile::tempdir().unwrap(), options).await;
    let port = server.address.port();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS client connects");
    let mut audit = pb::audit_log_client::AuditLogClient::new(channel);
    assert_eq!(
        audit
            .get_head(pb::GetHeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .seq,
        0
    );
    // In clear text, the same server answers nothing.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => pb::audit_log_client::AuditLogClient::new(channel)
            .get_head(pb::GetHeadRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext client was served");
}

#[tokio::test]
async fn principals_reload_without_dropping_connections() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("principals.json");
    let mut file = PrincipalsFile::default();
    let old = file.add("auditor", Role::Auditor, vec![], true).unwrap();
    file.write(&path).unwrap();
    let principals = Principals::load(&path).unwrap();
    let options = Options {
        auth: Authentication::On(principals.clone()),
        ..Options::default()
    };
    let server = TestServer::start_secured(tempfile::tempdir().unwrap(), options).await;
    let mut audit = pb::audit_log_client::AuditLogClient::new(server.any_channel().await);
    audit
        .get_head(authed(pb::GetHeadRequest {}, &old))
        .await
        .unwrap();
    // Rotate: a new token for the same name; what SIGHUP does is this reload.
    let new = file.add("auditor", Role::Auditor, vec![], true).unwrap();
    file.write(&path).unwrap();
    assert_eq!(principals.reload(&path).unwrap(), 1);
    // The same connection: the new token works, the old one no longer does.
    audit
        .get_head(authed(pb::GetHeadRequest {}, &new))
        .await
        .unwrap();
    let status = audit
        .get_head(authed(pb::GetHeadRequest {}, &old))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // A broken file keeps the principals in force.
    std::fs::write(&path, "{ not json").unwrap();
    assert!(principals.reload(&path).is_err());
    audit
        .get_head(authed(pb::GetHeadRequest {}, &new))
        .await
        .unwrap();
}

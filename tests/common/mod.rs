//! Test fixtures shared by the test suites: people with valid ID numbers, commands with sensible
//! defaults, and a real server on port 0.
#![allow(dead_code)]

use std::net::SocketAddr;

use rollstore::api::convert;
use rollstore::app::{Config, Register};
use rollstore::domain::{
    parse_date, Adjustment, Attribute, Cause, Change, Command, Date, ExitChecklist, ExitReason,
    ExitRecord, Health, HouseholdId, IdNumber, Identification, Labor, Member, Monitoring,
    RegionCode, RelapseRecord, Relation, Schooling,
};
use rollstore::pb;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A village of 川口乡 in Baota District.
pub const VILLAGE: &str = "610602201001";
/// Another village, of 甘谷驿镇.
pub const OTHER_VILLAGE: &str = "610602104002";

pub fn date(text: &str) -> Date {
    parse_date(text).expect("test dates are valid")
}

pub fn region(text: &str) -> RegionCode {
    RegionCode::parse(text).expect("test regions are valid")
}

pub fn hid(text: &str) -> HouseholdId {
    HouseholdId::parse(text).expect("test household ids are valid")
}

/// Person number `n`: a valid ID number, distinct for every `n` below 30 million (a thousand
/// people born on each day from 1930 on).
pub fn person(n: u32) -> IdNumber {
    let birth = date("1930-01-01") + chrono::Days::new(u64::from(n / 1000));
    IdNumber::from_parts(610602, birth, (n % 1000) as u16).expect("fixture IDs are valid")
}

pub fn member(n: u32) -> Member {
    Member {
        id_number: person(n),
        name: format!("张{n}"),
        relation: Relation::Child,
        health: Health::Healthy,
        labor: Labor::Ordinary,
        schooling: Schooling::Junior,
    }
}

/// Identifies household `hh` on `day` with `people` (the first is the head) in [`VILLAGE`].
pub fn identify(hh: &str, day: &str, people: &[u32]) -> Command {
    let mut members: Vec<Member> = people.iter().map(|n| member(*n)).collect();
    if let Some(head) = members.first_mut() {
        head.relation = Relation::Head;
    }
    command(
        hh,
        day,
        Change::Identify(Identification {
            region_code: region(VILLAGE),
            head_id: person(people.first().copied().unwrap_or(0)),
            members,
            attribute: Attribute::General,
            primary_cause: Cause::Illness,
            other_causes: vec![Cause::LackOfSkills],
            income_per_capita: 2300,
            safety_net: false,
            monitoring: Monitoring::NotMonitored,
            helper: None,
            measures: Vec::new(),
            assessment: None,
            procedure: None,
        }),
    )
}

pub fn adjust(hh: &str, day: &str, adjustment: Adjustment) -> Command {
    command(hh, day, Change::Adjust(adjustment))
}

/// Lifts `hh` out on `day` with every checklist item met and `income` per person.
pub fn lift_out(hh: &str, day: &str, income: i64) -> Command {
    command(
        hh,
        day,
        Change::Exit(ExitRecord {
            reason: ExitReason::LiftedOut,
            checklist: Some(all_met()),
            income_per_capita: Some(income),
            procedure: None,
            note: String::new(),
        }),
    )
}

pub fn all_met() -> ExitChecklist {
    ExitChecklist::ALL_MET
}

pub fn exit(hh: &str, day: &str, reason: ExitReason) -> Command {
    command(
        hh,
        day,
        Change::Exit(ExitRecord {
            reason,
            checklist: None,
            income_per_capita: None,
            procedure: None,
            note: String::new(),
        }),
    )
}

pub fn relapse(hh: &str, day: &str) -> Command {
    command(
        hh,
        day,
        Change::Relapse(RelapseRecord {
            primary_cause: Cause::Illness,
            income_per_capita: Some(2000),
            note: String::new(),
        }),
    )
}

pub fn command(hh: &str, day: &str, change: Change) -> Command {
    Command {
        household_id: hid(hh),
        effective_date: date(day),
        document_ref: format!("宝扶发〔{}〕1号", &day[..4]),
        expected_version: None,
        request_id: None,
        change,
    }
}

/// Changes a command in place and hands it back: `tweak(identify(..), |c| ...)`.
pub fn tweak(mut command: Command, change: impl FnOnce(&mut Command)) -> Command {
    change(&mut command);
    command
}

/// The identification inside an identify command.
pub fn identification(command: &mut Command) -> &mut Identification {
    match &mut command.change {
        Change::Identify(identification) => identification,
        other => panic!("not an identify: {other:?}"),
    }
}

/// The exit record inside an exit command.
pub fn exit_record(command: &mut Command) -> &mut ExitRecord {
    match &mut command.change {
        Change::Exit(exit) => exit,
        other => panic!("not an exit: {other:?}"),
    }
}

/// A real server on port 0 over a data directory.
pub struct TestServer {
    pub address: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), rollstore::Error>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("a temporary directory")).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, Config::default()).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: Config) -> Self {
        Self::start_limited(dir, config, rollstore::api::Limits::default()).await
    }

    pub async fn start_limited(
        dir: tempfile::TempDir,
        config: Config,
        limits: rollstore::api::Limits,
    ) -> Self {
        let register = Register::open(dir.path(), config).expect("the store opens");
        let options = rollstore::api::Options {
            limits,
            ..Default::default()
        };
        Self::spawn(dir, register, options).await
    }

    /// A server with authentication and perhaps TLS.
    pub async fn start_secured(dir: tempfile::TempDir, options: rollstore::api::Options) -> Self {
        let register = Register::open(dir.path(), Config::default()).expect("the store opens");
        Self::spawn(dir, register, options).await
    }

    async fn spawn(
        dir: tempfile::TempDir,
        register: Register,
        options: rollstore::api::Options,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rollstore::api::serve_with(
            listener,
            register,
            options,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            dir,
            stop,
            task,
        }
    }

    /// Stops the server gracefully and hands back its directory.
    pub async fn stop(self) -> tempfile::TempDir {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the server task ends")
            .expect("the server stops cleanly");
        self.dir
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .expect("a valid uri")
            .connect()
            .await
            .expect("the server accepts connections")
    }

    pub async fn registry(&self) -> pb::registry_client::RegistryClient<Channel> {
        pb::registry_client::RegistryClient::new(self.channel().await)
    }

    pub async fn rolls(&self) -> pb::rolls_client::RollsClient<Channel> {
        pb::rolls_client::RollsClient::new(self.channel().await)
    }

    pub async fn audit(&self) -> pb::audit_log_client::AuditLogClient<Channel> {
        pb::audit_log_client::AuditLogClient::new(self.channel().await)
    }

    pub async fn any_channel(&self) -> Channel {
        self.channel().await
    }

    /// The seq at the head of the log.
    pub async fn head_seq(&self) -> u64 {
        self.audit()
            .await
            .get_head(pb::GetHeadRequest {})
            .await
            .expect("GetHead answers")
            .into_inner()
            .seq
    }
}

/// Sends a domain command through the matching `Registry` RPC (not a batch).
pub async fn send(
    client: &mut pb::registry_client::RegistryClient<Channel>,
    command: &Command,
) -> Result<pb::Receipt, tonic::Status> {
    use pb::command::Command as Kind;
    let message = convert::command_message(command)
        .command
        .expect("command_message always sets the command");
    let receipt = match message {
        Kind::Identify(r) => client.identify(*r).await?.into_inner().receipt,
        Kind::Adjust(r) => client.adjust(*r).await?.into_inner().receipt,
        Kind::Exit(r) => client.exit(*r).await?.into_inner().receipt,
        Kind::Relapse(r) => client.relapse(*r).await?.into_inner().receipt,
        Kind::Correct(r) => client.correct(*r).await?.into_inner().receipt,
    };
    Ok(receipt.expect("every write answers a receipt"))
}

/// Sends domain commands as one `AppendBatch`.
pub async fn send_batch(
    client: &mut pb::registry_client::RegistryClient<Channel>,
    commands: &[Command],
) -> Result<Vec<pb::Receipt>, tonic::Status> {
    let request = pb::AppendBatchRequest {
        commands: commands.iter().map(convert::command_message).collect(),
    };
    Ok(client.append_batch(request).await?.into_inner().receipts)
}

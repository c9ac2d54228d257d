//! The gRPC face of the register: `Registry` (writes), `Rolls` (reads), `AuditLog` (the log),
//! plus the standard health and reflection services.
//!
//! ```text
//!   tonic request ──convert::command──▶ domain::Command ──▶ app::Register ──▶ Receipt
//!                 ◀──────────────── convert::receipt ◀─────────────────────┘
//!   any Error ──status.rs──▶ tonic::Status (the one mapping of causes to codes)
//! ```
//!
//! This is the only module that knows protobuf. It enforces no rule of the register: it parses,
//! calls `app`, and renders. Its only state is transport's: the permits of open server streams
//! and the write budget's bytes in flight (`budget.rs`).

pub mod auth;
mod budget;
pub mod codec;
pub mod convert;
mod status;

use std::future::Future;
use std::pin::Pin;

use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::app::{audit, At, Register, Writer};
use crate::domain::{
    parse_date, Command, HouseholdId, RegionCode, RegionPrefix, Status as HouseholdStatus,
};
use crate::error::Error;
use crate::pb;
use crate::pb::audit_log_server::{AuditLog, AuditLogServer};
use crate::pb::registry_server::{Registry, RegistryServer};
use crate::pb::rolls_server::{Rolls, RollsServer};
use convert::FromProto;

/// The most households or events one streamed page may hold.
pub const MAX_PAGE: usize = 10_000;
/// The page size when a request names none.
pub const DEFAULT_PAGE: usize = 1_000;
/// Households per streamed message of a roster.
const ROSTER_CHUNK: usize = 100;
/// The largest message a client of ours (the demo's loader, the load generator) sends or
/// accepts; the server's own limit is [`Limits::max_request_bytes`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What the server accepts from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request message decoded (larger: `RESOURCE_EXHAUSTED`).
    pub max_request_bytes: usize,
    /// The most server streams (subscriptions, rosters, log reads, diffs) open at once
    /// (more: `RESOURCE_EXHAUSTED`). Each buffers a bounded number of messages.
    pub max_streams: usize,
    /// The most bytes of write requests (as sent) being decoded, decided and committed at once;
    /// further writes wait, read but undecoded, until bytes come back (see `budget.rs`).
    pub max_write_bytes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 32 * 1024 * 1024,
            max_streams: 1024,
            max_write_bytes_in_flight: 6 * 1024 * 1024,
        }
    }
}

/// tonic answers an oversized request with OUT_OF_RANGE; gRPC's convention (and this API's) is
/// RESOURCE_EXHAUSTED, with the limit named.
fn oversized_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let oversized = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if oversized {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "the request is larger than the server accepts (max_request_bytes); send fewer commands per batch",
            ),
        );
    }
    response
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A response stream that holds a stream permit until it is dropped (finished or cancelled).
fn holding<T: 'static>(
    permit: tokio::sync::OwnedSemaphorePermit,
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
) -> ResponseStream<T> {
    Box::pin(stream.map(move |item| {
        let _held = &permit;
        item
    }))
}

/// Serves the register on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight calls finish, and closes the register (its last commit is durable when this
/// returns).
pub async fn serve(
    listener: TcpListener,
    register: Register,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with(listener, register, Options::default(), shutdown).await
}

/// How the server is exposed: limits, authentication, TLS.
#[derive(Debug, Clone)]
pub struct Options {
    pub limits: Limits,
    pub auth: auth::Authentication,
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            auth: auth::Authentication::Off,
            tls: None,
        }
    }
}

/// [`serve`], with options.
pub async fn serve_with(
    listener: TcpListener,
    register: Register,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let limits = options.limits;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RegistryServer<Api>>().await;
    health.set_serving::<RollsServer<Api>>().await;
    health.set_serving::<AuditLogServer<Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Io(format!("cannot build the reflection service: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Io(format!("cannot build the reflection service: {e}")))?;
    let api = Api {
        register: register.clone(),
        auth: options.auth.clone(),
        streams: std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_streams)),
        limits,
    };
    // Streams must end before tonic can finish its graceful shutdown: tell the register first.
    let stopper = register.clone();
    let shutdown = async move {
        shutdown.await;
        stopper.begin_shutdown();
    };
    let max = limits.max_request_bytes;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls.clone() {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::Io(format!("the TLS configuration is not usable: {e}")))?;
    }
    let result = builder
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_resource_exhausted,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(budget::WriteBudget::new(
            RegistryServer::new(api.clone()).max_decoding_message_size(max),
            limits.max_write_bytes_in_flight,
            max,
        ))
        .add_service(RollsServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(AuditLogServer::new(api).max_decoding_message_size(max))
        // No Nagle: answers are small and each one is awaited by a client.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| Error::Io(format!("the gRPC server failed: {e}")));
    register.close().await;
    result
}

/// The three services, over one register.
#[derive(Clone)]
pub struct Api {
    register: Register,
    auth: auth::Authentication,
    limits: Limits,
    /// One permit per open server stream.
    streams: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Api {
    /// A permit for one more server stream, or `RESOURCE_EXHAUSTED` naming the limit.
    fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Error::TooLarge(format!(
                "the server has {} streams open, its limit (max_streams); close one or retry later",
                self.limits.max_streams
            ))
            .into()
        })
    }

    /// Who writes what, parsed from a write request, which is let go here: the decoded message
    /// is not held while the write waits for its commit (see `budget.rs` for why that matters).
    fn parse<T>(
        &self,
        request: Request<T>,
        commands: impl FnOnce(&T) -> Result<Vec<Command>, Status>,
    ) -> Result<(Writer, Vec<Command>), Status> {
        let writer = writer(&self.auth.principal(&request)?)?;
        let commands = commands(request.get_ref())?;
        Ok((writer, commands))
    }

    /// Appends one parsed command.
    async fn write<T: convert::WriteRequest>(
        &self,
        request: Request<T>,
    ) -> Result<Option<pb::Receipt>, Status> {
        let (writer, commands) = self.parse(request, |r| Ok(vec![convert::command(r)?]))?;
        let mut receipts = self.register.append_as(writer, commands).await?;
        let receipt = receipts
            .pop()
            .ok_or_else(|| Status::internal("the writer answered no receipt"))?;
        Ok(Some(convert::receipt(&receipt)))
    }

    /// A batch's commands, each parsed, every violation reported at once.
    fn batch(&self, request: &pb::AppendBatchRequest) -> Result<Vec<Command>, Status> {
        let mut violations = Vec::new();
        let batch = &request.commands;
        let mut commands = Vec::with_capacity(batch.len());
        let max = self.register.config().max_batch;
        if batch.len() > max {
            return Err(Error::TooLarge(format!(
                "a batch holds at most {max} commands (max_batch), this one has {}",
                batch.len()
            ))
            .into());
        }
        for (i, command) in batch.iter().enumerate() {
            match convert::batch_command(command) {
                Ok(command) => commands.push(command),
                Err(error) => match error.within(&format!("commands[{i}]")) {
                    Error::InvalidInput(v) => violations.extend(v),
                    other => return Err(other.into()),
                },
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidInput(violations).into());
        }
        // Borrowed and foldhash-ed: a copy and a SipHash of every request_id showed in the
        // profile of a batch load.
        let mut seen: foldhash::HashMap<&str, usize> =
            foldhash::HashMapExt::with_capacity(commands.len());
        for (i, command) in commands.iter().enumerate() {
            if let Some(request_id) = command.request_id.as_deref() {
                if let Some(first) = seen.insert(request_id, i) {
                    return Err(Error::invalid(
                        format!("commands[{i}].request_id"),
                        format!("'{request_id}' is also the request_id of commands[{first}]"),
                    )
                    .into());
                }
            }
        }
        Ok(commands)
    }
}

#[tonic::async_trait]
impl Registry for Api {
    async fn identify(
        &self,
        request: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::IdentifyResponse>, Status> {
        let receipt = self.write(request).await?;
        Ok(Response::new(pb::IdentifyResponse { receipt }))
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        let receipt = self.write(request).await?;
        Ok(Response::new(pb::AdjustResponse { receipt }))
    }

    async fn exit(
        &self,
        request: Request<pb::ExitRequest>,
    ) -> Result<Response<pb::ExitResponse>, Status> {
        let receipt = self.write(request).await?;
        Ok(Response::new(pb::ExitResponse { receipt }))
    }

    async fn relapse(
        &self,
        request: Request<pb::RelapseRequest>,
    ) -> Result<Response<pb::RelapseResponse>, Status> {
        let receipt = self.write(request).await?;
        Ok(Response::new(pb::RelapseResponse { receipt }))
    }

    async fn correct(
        &self,
        request: Request<pb::CorrectRequest>,
    ) -> Result<Response<pb::CorrectResponse>, Status> {
        let receipt = self.write(request).await?;
        Ok(Response::new(pb::CorrectResponse { receipt }))
    }

    async fn append_batch(
        &self,
        request: Request<pb::AppendBatchRequest>,
    ) -> Result<Response<pb::AppendBatchResponse>, Status> {
        let (writer, commands) = self.parse(request, |r| self.batch(r))?;
        let receipts = self.register.append_as(writer, commands).await?;
        Ok(Response::new(pb::AppendBatchResponse {
            receipts: convert::receipts(&receipts),
        }))
    }
}

/// The writer a principal writes as.
fn writer(principal: &auth::Principal) -> Result<Writer, Status> {
    Ok(Writer {
        actor: principal.name.clone(),
        scope: principal.write_scope()?,
    })
}

/// An event as `principal` may see it.
fn shown(principal: &auth::Principal, mut event: pb::Event) -> pb::Event {
    if !principal.pii {
        auth::mask_event(&mut event);
    }
    event
}

fn household_id(text: &str) -> Result<HouseholdId, Status> {
    HouseholdId::parse(text).map_err(|e| Error::invalid("household_id", e).into())
}

fn region_prefix(text: &str) -> Result<RegionPrefix, Status> {
    RegionPrefix::parse(text).map_err(|e| Error::invalid("region_prefix", e).into())
}

fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// A roster page token: `region_code/household_id` of the last household sent.
fn page_token(token: &str) -> Result<Option<(RegionCode, HouseholdId)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || -> Status {
        Error::invalid(
            "page_token",
            "is not a token this server gave; pass next_page_token unchanged",
        )
        .into()
    };
    let (region, id) = token.split_once('/').ok_or_else(invalid)?;
    let region = RegionCode::parse(region).map_err(|_| invalid())?;
    let id = HouseholdId::parse(id).map_err(|_| invalid())?;
    Ok(Some((region, id)))
}

#[tonic::async_trait]
impl Rolls for Api {
    async fn get_household(
        &self,
        request: Request<pb::GetHouseholdRequest>,
    ) -> Result<Response<pb::GetHouseholdResponse>, Status> {
        let principal = self.auth.principal(&request)?;
        let request = request.get_ref();
        let id = household_id(&request.household_id)?;
        let at = convert::point_in_time("at", request.at.as_ref())?;
        let view = self.register.household(&id, at)?;
        principal.may_read_household(view.state.region_code)?;
        let mut household = convert::household(&id, &view);
        if !principal.pii {
            auth::mask_household(&mut household);
        }
        Ok(Response::new(pb::GetHouseholdResponse {
            household: Some(household),
            known_at_seq: view.known_at,
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let principal = self.auth.principal(&request)?;
        let id = household_id(&request.get_ref().household_id)?;
        let now = self.register.household(&id, At::NOW)?;
        principal.may_read_household(now.state.region_code)?;
        let entries = self.register.history(&id)?;
        Ok(Response::new(pb::GetHistoryResponse {
            events: entries
                .iter()
                .map(|entry| shown(&principal, convert::history_entry(entry)))
                .collect(),
        }))
    }

    type ListRosterStream = ResponseStream<pb::ListRosterResponse>;

    async fn list_roster(
        &self,
        request: Request<pb::ListRosterRequest>,
    ) -> Result<Response<Self::ListRosterStream>, Status> {
        let principal = self.auth.principal(&request)?;
        let request = request.into_inner();
        let prefix = region_prefix(&request.region_prefix)?;
        principal.may_read_region(prefix, false)?;
        let mut statuses = Vec::new();
        for (i, raw) in request.statuses.iter().enumerate() {
            statuses.push(
                HouseholdStatus::from_proto(*raw)
                    .map_err(|e| Error::invalid(format!("statuses[{i}]"), e))?,
            );
        }
        if statuses.is_empty() {
            statuses.push(HouseholdStatus::OnRoll);
        }
        let at = convert::point_in_time("at", request.at.as_ref())?;
        let after = page_token(&request.page_token)?;
        let page = self.register.roster(
            prefix,
            &statuses,
            at,
            after.as_ref(),
            page_size(request.page_size),
        )?;
        let next_page_token = page
            .next
            .map(|(region, id)| format!("{region}/{id}"))
            .unwrap_or_default();
        let known_at_seq = page.known_at;
        let entries: Vec<pb::RosterEntry> = page
            .households
            .iter()
            .map(|(id, snapshot)| convert::roster_entry(id, snapshot))
            .collect();
        let mut messages: Vec<pb::ListRosterResponse> = entries
            .chunks(ROSTER_CHUNK)
            .map(|chunk| pb::ListRosterResponse {
                households: chunk.to_vec(),
                next_page_token: String::new(),
                known_at_seq,
            })
            .collect();
        match messages.last_mut() {
            Some(last) => last.next_page_token = next_page_token,
            None => messages.push(pb::ListRosterResponse {
                households: Vec::new(),
                next_page_token,
                known_at_seq,
            }),
        }
        Ok(Response::new(holding(
            self.stream_permit()?,
            tokio_stream::iter(messages.into_iter().map(Ok)),
        )))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let principal = self.auth.principal(&request)?;
        let request = request.get_ref();
        let prefix = region_prefix(&request.region_prefix)?;
        principal.may_read_region(prefix, true)?;
        let at = convert::point_in_time("at", request.at.as_ref())?;
        let (stats, known_at) = self.register.stats(prefix, at)?;
        Ok(Response::new(convert::stats(prefix, &stats, known_at)))
    }

    type DiffRostersStream = ResponseStream<pb::DiffRostersResponse>;

    async fn diff_rosters(
        &self,
        request: Request<pb::DiffRostersRequest>,
    ) -> Result<Response<Self::DiffRostersStream>, Status> {
        let principal = self.auth.principal(&request)?;
        let request = request.get_ref();
        let prefix = region_prefix(&request.region_prefix)?;
        principal.may_read_region(prefix, false)?;
        let from = convert::point_in_time("from", request.from.as_ref())?;
        let to = convert::point_in_time("to", request.to.as_ref())?;
        let (changes, from_known_at_seq, to_known_at_seq) = self.register.diff(prefix, from, to)?;
        let changes: Vec<pb::RosterChange> = changes.iter().map(convert::roster_change).collect();
        let mut messages: Vec<pb::DiffRostersResponse> = changes
            .chunks(ROSTER_CHUNK)
            .map(|chunk| pb::DiffRostersResponse {
                changes: chunk.to_vec(),
                from_known_at_seq,
                to_known_at_seq,
            })
            .collect();
        if messages.is_empty() {
            messages.push(pb::DiffRostersResponse {
                changes: Vec::new(),
                from_known_at_seq,
                to_known_at_seq,
            });
        }
        Ok(Response::new(holding(
            self.stream_permit()?,
            tokio_stream::iter(messages.into_iter().map(Ok)),
        )))
    }

    async fn get_flows(
        &self,
        request: Request<pb::GetFlowsRequest>,
    ) -> Result<Response<pb::GetFlowsResponse>, Status> {
        let principal = self.auth.principal(&request)?;
        let request = request.get_ref();
        let prefix = region_prefix(&request.region_prefix)?;
        principal.may_read_region(prefix, true)?;
        let from = parse_date(&request.from_date).map_err(|e| Error::invalid("from_date", e))?;
        let to = parse_date(&request.to_date).map_err(|e| Error::invalid("to_date", e))?;
        let known_at = convert::known_at("known_at", request.known_at.as_ref())?;
        // Flows read every stream under the prefix from the log: off the async threads.
        let register = self.register.clone();
        let (flows, known) =
            tokio::task::spawn_blocking(move || register.flows(prefix, from, to, known_at))
                .await
                .map_err(|e| Status::internal(format!("the flows task failed: {e}")))??;
        Ok(Response::new(convert::flows(&flows, known)))
    }
}

#[tonic::async_trait]
impl AuditLog for Api {
    async fn get_head(
        &self,
        request: Request<pb::GetHeadRequest>,
    ) -> Result<Response<pb::GetHeadResponse>, Status> {
        self.auth.principal(&request)?;
        let head = self.register.head();
        Ok(Response::new(pb::GetHeadResponse {
            seq: head.seq,
            hash: head.hash.to_vec(),
        }))
    }

    type SubscribeStream = ResponseStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = self.auth.principal(&request)?;
        let request = request.into_inner();
        let region = if request.region_prefix.is_empty() {
            None
        } else {
            Some(region_prefix(&request.region_prefix)?)
        };
        principal.may_read_log(region)?;
        let mut kinds = std::collections::BTreeSet::new();
        for (i, raw) in request.kinds.iter().enumerate() {
            let kind = match pb::EventKind::try_from(*raw) {
                Ok(pb::EventKind::Identify) => "identify",
                Ok(pb::EventKind::Adjust) => "adjust",
                Ok(pb::EventKind::Exit) => "exit",
                Ok(pb::EventKind::Relapse) => "relapse",
                Ok(pb::EventKind::Correct) => "correct",
                _ => {
                    return Err(Error::invalid(
                        format!("kinds[{i}]"),
                        format!("{raw} is not an event kind"),
                    )
                    .into())
                }
            };
            kinds.insert(kind);
        }
        let permit = self.stream_permit()?;
        let receiver = self
            .register
            .subscribe(request.from_seq, audit::Filter { region, kinds });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(move |item| {
            item.map(|recorded| pb::SubscribeResponse {
                event: Some(shown(&principal, convert::event(&recorded))),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(holding(permit, stream)))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        self.auth.principal(&request)?.may_read_log(None)?;
        let request = request.get_ref();
        let report = self
            .register
            .verify_chain(request.from_seq, request.to_seq)
            .await?;
        let (first_bad_seq, problem) = report.broken.clone().unwrap_or_default();
        Ok(Response::new(pb::VerifyChainResponse {
            ok: report.broken.is_none(),
            checked: report.checked,
            verified_seq: report.verified.seq,
            verified_hash: report.verified.hash.to_vec(),
            first_bad_seq,
            problem,
        }))
    }

    type ReadEventsStream = ResponseStream<pb::ReadEventsResponse>;

    async fn read_events(
        &self,
        request: Request<pb::ReadEventsRequest>,
    ) -> Result<Response<Self::ReadEventsStream>, Status> {
        let principal = self.auth.principal(&request)?;
        principal.may_read_log(None)?;
        let request = request.into_inner();
        let permit = self.stream_permit()?;
        let events = self
            .register
            .events(request.from_seq.max(1), page_size(request.limit))?;
        Ok(Response::new(holding(
            permit,
            tokio_stream::iter(events.into_iter().map(move |recorded| {
                Ok(pb::ReadEventsResponse {
                    event: Some(shown(&principal, convert::event(&recorded))),
                })
            })),
        )))
    }
}

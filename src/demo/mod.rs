//! The Baota District demo: a realistic register history, loaded through the public API, and
//! a report that answers the seed's questions from it.
//!
//! ```text
//!   baota::generate(seed) ──commands──▶ load() ──AppendBatch──▶ server ──▶ figures() / report()
//!   (pure, deterministic)               (gRPC, like any county system)   (GetStats, GetFlows,
//!                                                                          ListRoster, DiffRosters)
//! ```
//!
//! This module is a client of the API: it writes and reads only through gRPC, and knows
//! nothing of the store's insides.

pub mod baota;
pub mod report;

use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::api::convert;
use crate::pb;
use crate::pb::registry_client::RegistryClient;
use baota::DataSet;

/// Commands per `AppendBatch`: large enough to amortize the commit, small enough to stay well
/// under the request size limit.
pub const BATCH: usize = 2_000;

/// What loading did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Events appended now (0 if the data set was already there).
    pub appended: u64,
    pub elapsed: Duration,
    /// The head after loading.
    pub head: u64,
}

/// Why the demo could not load its data set.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the store already holds {head} events that are not the Baota data set (event {seq} is '{found}', expected '{expected}'); use an empty directory")]
    Foreign {
        head: u64,
        seq: u64,
        found: String,
        expected: String,
    },
    #[error("the server refused batch {batch}: {status}")]
    Refused { batch: usize, status: tonic::Status },
    #[error("the server failed: {0}")]
    Server(#[from] tonic::Status),
}

/// Loads the data set through `AppendBatch`, unless it is there already. A store that holds a
/// prefix of it (an interrupted load) is completed; a store that holds anything else is left
/// alone.
pub async fn load(channel: Channel, data: &DataSet) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let mut audit = pb::audit_log_client::AuditLogClient::new(channel.clone());
    let head = audit
        .get_head(pb::GetHeadRequest {})
        .await?
        .into_inner()
        .seq;
    if head > 0 {
        // The last event must be the data set's event at the same position.
        let event = audit
            .read_events(pb::ReadEventsRequest {
                from_seq: head,
                limit: 1,
            })
            .await?
            .into_inner()
            .message()
            .await?
            .and_then(|m| m.event)
            .map(|e| e.request_id)
            .unwrap_or_default();
        let expected = data
            .commands
            .get(head as usize - 1)
            .and_then(|c| c.request_id.clone())
            .unwrap_or_default();
        if event != expected {
            return Err(LoadError::Foreign {
                head,
                seq: head,
                found: event,
                expected,
            });
        }
    }
    let mut registry =
        RegistryClient::new(channel).max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES);
    let remaining = &data.commands[head as usize..];
    for (batch, chunk) in remaining.chunks(BATCH).enumerate() {
        let request = pb::AppendBatchRequest {
            commands: chunk.iter().map(convert::command_message).collect(),
        };
        registry
            .append_batch(request)
            .await
            .map_err(|status| LoadError::Refused { batch, status })?;
    }
    let head_after = audit
        .get_head(pb::GetHeadRequest {})
        .await?
        .into_inner()
        .seq;
    Ok(LoadReport {
        appended: head_after - head,
        elapsed: started.elapsed(),
        head: head_after,
    })
}

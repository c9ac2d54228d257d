//! The write budget: how many bytes of write requests the server works on at once.
//!
//! A decoded write costs far more memory than its bytes on the wire: the protobuf message, the
//! domain commands, the events, their JSON bodies and the staged states, each of them a handful
//! of allocations, held from the moment tonic decodes the request until its commit is answered.
//! Without a bound, a provincial system that opens a hundred uploads of 10,000 commands at once
//! would have all of them decoded and queued together, and the server's memory would follow.
//!
//! So every `Registry` call passes through this gate first:
//!
//! ```text
//!   HTTP/2 stream ──▶ read the one gRPC message whole ──▶ wait for its size ──▶ tonic decodes,
//!                     (5-byte prefix: flag, length)        in budget bytes       app commits,
//!                                                                                 answers
//!                                                        ◀── bytes returned when answered ──┘
//! ```
//!
//! A request is weighed by its message's length on the wire, and waits (in arrival order) until
//! that many bytes of the budget are free; it returns them when it has been answered. A message
//! larger than the whole budget waits until nothing else is in flight and then runs alone, so
//! that the budget never refuses what `max_request_bytes` accepts. The message is read whole
//! *before* the wait, so that a client sending slowly holds none of the budget while it sends;
//! what waits is the wire bytes, not the decoded request.
//!
//! The gate does not parse protobuf and refuses nothing: a message whose prefix announces more
//! than `max_request_bytes`, a truncated one, or a broken stream is handed on at once,
//! unweighed, for tonic to refuse with the usual status.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;

/// gRPC's message prefix: one byte of flags, then the message's length as a big-endian u32.
const PREFIX: usize = 5;

/// A service whose calls share one budget of bytes in flight.
#[derive(Clone)]
pub struct WriteBudget<S> {
    inner: S,
    budget: Budget,
    /// The largest message tonic accepts: larger ones are not weighed.
    max_message: usize,
}

impl<S> WriteBudget<S> {
    /// Wraps `inner` with a budget of `bytes` (at least 1) in flight at once.
    pub fn new(inner: S, bytes: usize, max_message: usize) -> Self {
        Self {
            inner,
            budget: Budget::new(bytes),
            max_message,
        }
    }
}

/// The bytes in flight, as a fair semaphore: waiters are admitted in arrival order, so a large
/// message is not passed over forever by small ones.
#[derive(Clone)]
struct Budget {
    free: Arc<Semaphore>,
    /// The whole budget, in bytes (at most `u32::MAX`, the most one wait can ask for).
    capacity: u32,
}

impl Budget {
    fn new(bytes: usize) -> Self {
        let capacity = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        Self {
            free: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// Waits until `weight` bytes (the whole budget, if more) are free, and holds them.
    async fn admit(&self, weight: usize) -> Option<OwnedSemaphorePermit> {
        if weight == 0 {
            return None;
        }
        let bytes = u32::try_from(weight).unwrap_or(u32::MAX).min(self.capacity);
        if self.free.available_permits() < bytes as usize {
            tracing::debug!(
                message_bytes = weight,
                free = self.free.available_permits(),
                "a write waits for the write budget"
            );
        }
        Some(
            self.free
                .clone()
                .acquire_many_owned(bytes)
                .await
                .expect("the write budget's semaphore is never closed"),
        )
    }
}

impl<S: NamedService> NamedService for WriteBudget<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for WriteBudget<S>
where
    S: Service<http::Request<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The service that was polled ready is the one to call; a fresh clone takes its place.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let (budget, max_message) = (self.budget.clone(), self.max_message);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let message = read_message(body, max_message).await;
            let _held = budget.admit(message.weight).await;
            inner
                .call(http::Request::from_parts(parts, message.body))
                .await
        })
    }
}

/// A request body whose message has been read off the wire.
struct Message {
    /// The message's length with its prefix; 0 when tonic will refuse it unread.
    weight: usize,
    /// The same body: what was read, then whatever is left.
    body: Body,
}

/// Reads the body until its first gRPC message is in whole (or the body ends, breaks, or
/// announces a message over `max_message`), and returns it replayable.
async fn read_message(mut rest: Body, max_message: usize) -> Message {
    let mut read: Vec<Result<Frame<Bytes>, Status>> = Vec::new();
    let mut prefix = Vec::with_capacity(PREFIX);
    let mut received = 0;
    let mut length = None;
    let complete = loop {
        if let Some(length) = length {
            if received >= length {
                break true;
            }
        }
        let frame = match rest.frame().await {
            None => break false,
            Some(Err(status)) => {
                read.push(Err(status));
                break false;
            }
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            received += data.len();
            let missing = PREFIX - prefix.len();
            prefix.extend(data.iter().take(missing));
            if length.is_none() && prefix.len() == PREFIX {
                let announced = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                let announced = usize::try_from(announced).unwrap_or(usize::MAX);
                if announced > max_message {
                    read.push(Ok(frame));
                    break false;
                }
                length = Some(PREFIX + announced);
            }
        }
        read.push(Ok(frame));
    };
    let weight = match length {
        Some(length) if complete => length,
        _ => 0,
    };
    let replay = tokio_stream::iter(read).chain(BodyStream::new(rest));
    Message {
        weight,
        body: Body::new(StreamBody::new(replay)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One gRPC message of `length` bytes, prefix included, cut into frames of `frame` bytes.
    fn message(length: usize, frame: usize) -> Vec<Bytes> {
        let payload = length - PREFIX;
        let mut bytes = vec![0u8];
        bytes.extend((payload as u32).to_be_bytes());
        bytes.extend((0..payload).map(|i| (i % 251) as u8));
        bytes.chunks(frame).map(Bytes::copy_from_slice).collect()
    }

    fn body(frames: Vec<Bytes>) -> Body {
        Body::new(StreamBody::new(tokio_stream::iter(
            frames.into_iter().map(|f| Ok::<_, Status>(Frame::data(f))),
        )))
    }

    async fn bytes_of(body: Body) -> Result<Vec<u8>, Status> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_message_is_weighed_by_its_length_and_replayed_unchanged() {
        // (what the client sends, the weight expected)
        let truncated: Vec<Bytes> = message(100, 7).into_iter().take(3).collect();
        let cases: Vec<(&str, Vec<Bytes>, usize)> = vec![
            ("one frame", message(100, 100), 100),
            ("a prefix split over frames", message(100, 2), 100),
            ("one byte a frame", message(40, 1), 40),
            ("an empty message", message(PREFIX, 5), PREFIX),
            ("no body at all", vec![], 0),
            (
                "a prefix cut short",
                vec![Bytes::from_static(&[0, 0, 0])],
                0,
            ),
            ("a message cut short", truncated, 0),
            ("a message over max_message", message(2_000, 64), 0),
            (
                "a second message after the first",
                [message(50, 8), message(30, 8)].concat(),
                50,
            ),
        ];
        for (name, frames, weight) in cases {
            let sent = frames.concat();
            let message = read_message(body(frames), 1_000).await;
            assert_eq!(message.weight, weight, "{name}");
            assert_eq!(bytes_of(message.body).await.unwrap(), sent, "{name}");
        }
    }

    #[tokio::test]
    async fn a_broken_stream_is_handed_on_broken() {
        let frames = message(100, 10)
            .into_iter()
            .take(2)
            .map(|f| Ok(Frame::data(f)));
        let broken = frames.chain([Err(Status::cancelled("the client went away"))]);
        let message = read_message(
            Body::new(StreamBody::new(tokio_stream::iter(broken))),
            1_000,
        )
        .await;
        assert_eq!(message.weight, 0);
        let status = bytes_of(message.body).await.unwrap_err();
        assert_eq!(status.message(), "the client went away");
    }

    /// Polls a future once: its output if it is ready now.
    fn now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        match Pin::new(future).poll(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    #[test]
    fn waiters_are_admitted_in_arrival_order_as_bytes_come_back() {
        let budget = Budget::new(1_000);
        let first = now(&mut Box::pin(budget.admit(400))).expect("room for 400");
        let second = now(&mut Box::pin(budget.admit(400))).expect("room for 400 more");
        let mut third = Box::pin(budget.admit(400));
        let mut small = Box::pin(budget.admit(100));
        let mut large = Box::pin(budget.admit(5_000));
        assert!(now(&mut third).is_none(), "only 200 bytes are free");
        assert!(
            now(&mut small).is_none(),
            "100 would fit, but waits behind the 400"
        );
        drop(first);
        let third = now(&mut third).expect("400 came back");
        let small = now(&mut small).expect("and 100 fit after it");
        assert!(
            now(&mut large).is_none(),
            "more than the budget waits for all of it"
        );
        assert!(
            now(&mut Box::pin(budget.admit(0))).is_some(),
            "nothing weighed waits for nothing"
        );
        drop((second, third));
        assert!(now(&mut large).is_none(), "100 bytes are still held");
        drop(small);
        let large = now(&mut large).expect("the whole budget is free");
        assert_eq!(budget.free.available_permits(), 0);
        drop(large);
        assert_eq!(budget.free.available_permits(), 1_000);
    }

    /// Calls that record the bytes in flight while each of them yields a few times.
    #[derive(Clone, Default)]
    struct Recorder {
        in_flight: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Service<http::Request<Body>> for Recorder {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                let bytes = bytes_of(request.into_body())
                    .await
                    .unwrap_or_default()
                    .len();
                let now = this.in_flight.fetch_add(bytes, Ordering::SeqCst) + bytes;
                this.most.fetch_max(now, Ordering::SeqCst);
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                this.in_flight.fetch_sub(bytes, Ordering::SeqCst);
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    /// Runs calls of the given message lengths at once through a budget; returns the most
    /// bytes the inner service held at one time.
    async fn most_in_flight(budget: usize, lengths: &[usize]) -> usize {
        let recorder = Recorder::default();
        let gate = WriteBudget::new(recorder.clone(), budget, 1 << 20);
        let calls = lengths.iter().map(|&length| {
            let mut gate = gate.clone();
            tokio::spawn(async move {
                let request = http::Request::new(body(message(length, 16)));
                gate.call(request).await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            tokio::time::timeout(std::time::Duration::from_secs(30), call)
                .await
                .expect("no call waits forever")
                .expect("a call panicked")
                .expect("infallible");
        }
        assert_eq!(recorder.in_flight.load(Ordering::SeqCst), 0);
        recorder.most.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_share_the_budget_and_a_larger_message_runs_alone() {
        // (budget, message lengths, the most that may be in flight at once)
        let cases: Vec<(usize, Vec<usize>, usize)> = vec![
            (1_000, vec![400; 12], 800),
            (1_000, vec![300, 300, 300, 300, 100, 100], 1_000),
            (1_000, vec![400, 2_500, 400, 2_500, 400], 2_500),
            (1, vec![50, 60, 70], 70),
        ];
        for (budget, lengths, bound) in cases {
            let most = most_in_flight(budget, &lengths).await;
            assert!(
                most <= bound,
                "budget {budget}, {lengths:?}: {most} in flight"
            );
        }
    }
}

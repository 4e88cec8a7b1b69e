//! [`NatsTransport`]: live sync over NATS JetStream (feature `nats`). The async client and a
//! one-worker tokio runtime live inside the adapter; callers stay synchronous.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt as _;
use nodus_fabric::VersionVector;
use nodus_policy::TenantId;

use super::{
    Delivery, DiffTransport, MAX_BATCH_BYTES, SignedBatch, Subscription, TransportError,
    tenant_token,
};

/// Where and how a [`NatsTransport`] connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// The server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The deployment's stream (one per deployment), e.g. `NODUS`.
    pub stream: String,
    /// The subject prefix: tenant `t` publishes on `<prefix>.<t>` (a tenant id outside
    /// `A-Z a-z 0-9 _ -` is written `x<hex>`).
    pub subject_prefix: String,
    /// How long the server waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// How long the stream keeps a batch (`0`: for ever). Peers that come back later than this
    /// catch up by asking the authors (their status).
    pub max_age: Duration,
    /// How long one publish or acknowledgement may take before it fails.
    pub op_timeout: Duration,
}

impl NatsConfig {
    /// A configuration for `url` with stream `NODUS`, subjects `nodus.<tenant>`, an
    /// acknowledgement wait of 5 s, a retention of 7 days and a 5 s operation timeout.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            stream: "NODUS".into(),
            subject_prefix: "nodus".into(),
            ack_wait: Duration::from_secs(5),
            max_age: Duration::from_secs(7 * 86_400),
            op_timeout: Duration::from_secs(5),
        }
    }

    /// With another stream name and subject prefix (one per deployment, or per test run).
    #[must_use]
    pub fn stream(mut self, stream: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        self.stream = stream.into();
        self.subject_prefix = subject_prefix.into();
        self
    }

    /// With another acknowledgement wait.
    #[must_use]
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(format!("nats {what}: {e}"))
}

/// A [`DiffTransport`] over NATS JetStream: one stream per deployment, one subject per tenant, a
/// durable pull consumer per subscribing node and tenant (acknowledgement explicit, sent only
/// once the batch is applied). Each publish waits for JetStream's acknowledgement and carries
/// the batch id as `Nats-Msg-Id` (the server drops a repeat within its duplicate window; the
/// receiver's event log drops any other). JetStream acknowledges before its write reaches disk
/// by default: the sender's own event log is what keeps events until peers report them applied.
pub struct NatsTransport {
    rt: Arc<tokio::runtime::Runtime>,
    /// Always `Some` but in `drop` (the client must be dropped inside its runtime).
    js: Option<jetstream::Context>,
    config: NatsConfig,
}

impl Drop for NatsTransport {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        drop(self.js.take());
    }
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    /// Connects and makes sure the stream exists (subjects `<prefix>.>`, file storage).
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when the server cannot be reached or refuses the stream.
    pub fn connect(config: NatsConfig) -> Result<Self, TransportError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nodus-nats")
            .enable_all()
            .build()
            .map_err(|e| unavailable("runtime", e))?;
        let js = rt.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(config.op_timeout)
                .connect(config.url.as_str())
                .await
                .map_err(|e| unavailable("connect", e))?;
            let js = jetstream::new(client);
            js.get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![format!("{}.>", config.subject_prefix)],
                max_age: config.max_age,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("stream", e))?;
            Ok::<_, TransportError>(js)
        })?;
        Ok(NatsTransport {
            rt: Arc::new(rt),
            js: Some(js),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// Deletes the stream and every consumer on it (tests, decommissioning).
    ///
    /// # Errors
    /// [`TransportError::Unavailable`].
    pub fn delete_stream(&self) -> Result<(), TransportError> {
        let js = self.js()?;
        self.rt.block_on(async {
            js.delete_stream(&self.config.stream)
                .await
                .map(|_| ())
                .map_err(|e| unavailable("delete stream", e))
        })
    }

    fn js(&self) -> Result<&jetstream::Context, TransportError> {
        self.js.as_ref().ok_or(TransportError::Closed)
    }

    fn subject(&self, tenant: &TenantId) -> String {
        format!("{}.{}", self.config.subject_prefix, tenant_token(tenant))
    }
}

/// A durable consumer's name for a subscriber and tenant: `A-Z a-z 0-9 _ -` only.
fn durable_name(subscriber: &str, tenant: &TenantId) -> String {
    let clean: String = subscriber
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{clean}_{}", tenant_token(tenant))
}

impl DiffTransport for NatsTransport {
    fn publish(&self, tenant: &TenantId, batch: &SignedBatch) -> Result<(), TransportError> {
        let size = batch.as_bytes().len();
        if size > MAX_BATCH_BYTES {
            return Err(TransportError::TooLarge {
                size,
                limit: MAX_BATCH_BYTES,
            });
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", batch.id().as_str());
        let subject = self.subject(tenant);
        let payload = batch.as_bytes().to_vec();
        let timeout = self.config.op_timeout;
        let js = self.js()?;
        self.rt.block_on(async {
            let ack = tokio::time::timeout(timeout, async {
                js.publish_with_headers(subject, headers, payload.into())
                    .await
                    .map_err(|e| unavailable("publish", e))?
                    .await
                    .map_err(|e| unavailable("publish acknowledgement", e))
            })
            .await
            .map_err(|_| unavailable("publish", "timed out"))?;
            ack.map(|_| ())
        })
    }

    fn subscribe(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        from: &VersionVector,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        let name = durable_name(subscriber, tenant);
        let subject = self.subject(tenant);
        let timeout = self.config.op_timeout;
        let js = self.js()?;
        let messages = self.rt.block_on(async {
            tokio::time::timeout(timeout, async {
                let stream = js
                    .get_stream(&self.config.stream)
                    .await
                    .map_err(|e| unavailable("stream", e))?;
                let consumer = stream
                    .get_or_create_consumer(
                        &name,
                        pull::Config {
                            durable_name: Some(name.clone()),
                            filter_subject: subject,
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ack_wait: self.config.ack_wait,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| unavailable("consumer", e))?;
                consumer
                    .stream()
                    .max_messages_per_batch(256)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(10))
                    .messages()
                    .await
                    .map_err(|e| unavailable("consumer stream", e))
            })
            .await
            .map_err(|_| unavailable("subscribe", "timed out"))?
        })?;
        Ok(Box::new(NatsSubscription {
            rt: self.rt.clone(),
            messages: Some(messages),
            from: from.clone(),
            started_ms: now_ms(),
            next_token: 0,
            unacked: HashMap::new(),
            timeout,
        }))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

struct NatsSubscription {
    rt: Arc<tokio::runtime::Runtime>,
    /// Always `Some` but in `drop` (the stream must be dropped inside its runtime).
    messages: Option<pull::Stream>,
    /// The subscriber's version vector when it subscribed: event batches it covers are
    /// acknowledged without delivery.
    from: VersionVector,
    started_ms: u64,
    next_token: u64,
    unacked: HashMap<u64, jetstream::Message>,
    timeout: Duration,
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        drop(self.messages.take());
        self.unacked.clear();
    }
}

impl NatsSubscription {
    fn ack_message(&self, m: &jetstream::Message) -> Result<(), TransportError> {
        let timeout = self.timeout;
        self.rt.block_on(async {
            tokio::time::timeout(timeout, m.ack())
                .await
                .map_err(|_| unavailable("ack", "timed out"))?
                .map_err(|e| unavailable("ack", e))
        })
    }
}

impl Subscription for NatsSubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(messages) = self.messages.as_mut() else {
                return Err(TransportError::Closed);
            };
            let got = self
                .rt
                .block_on(async { tokio::time::timeout_at(deadline, messages.next()).await });
            let m = match got {
                Err(_) => return Ok(None),
                Ok(None) => return Err(TransportError::Closed),
                Ok(Some(Err(e))) => return Err(unavailable("consumer", e)),
                Ok(Some(Ok(m))) => m,
            };
            let batch = SignedBatch::from_bytes(m.payload.to_vec());
            let old_status = batch
                .peek()
                .is_ok_and(|h| h.is_status && h.time_ms < self.started_ms);
            if old_status
                || (!batch.peek().is_ok_and(|h| h.is_status) && batch.covered_by(&self.from))
            {
                // History the subscriber already has, or a status from before it came: done.
                self.ack_message(&m)?;
                continue;
            }
            let redelivered = m.info().is_ok_and(|i| i.delivered > 1);
            let token = self.next_token;
            self.next_token += 1;
            self.unacked.insert(token, m);
            return Ok(Some(Delivery {
                batch,
                token,
                redelivered,
            }));
        }
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        match self.unacked.remove(&delivery.token) {
            Some(m) => self.ack_message(&m),
            None => Ok(()),
        }
    }
}

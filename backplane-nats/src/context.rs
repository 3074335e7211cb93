//! What a node's tasks share: its connection, its JetStream context, the stream, and a
//! signal for every time the connection dropped.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
// async-nats's error messages name no credentials.
use backplane_core::node::backend_error;
use backplane_core::{BackplaneError, Jitter, NodeId, lock};
use tokio::sync::watch;

use crate::options::{NatsCredentials, NatsOptions, Storage};

/// Room kept under the server's `max_payload` for a chunk's headers.
const HEADER_ROOM: usize = 1024;

/// This backplane's `backplane` label in metrics.
pub(crate) const KIND: &str = "nats";

/// A node's identity, settings and connection, shared by its tasks.
pub(crate) struct NodeContext {
    /// This node's id, stamped on what it publishes and used to drop its own echoes.
    pub(crate) node: NodeId,
    /// The settings it runs with.
    pub(crate) options: NatsOptions,
    /// The connection (async-nats reconnects it by itself, forever).
    pub(crate) client: async_nats::Client,
    /// JetStream on that connection: publish acknowledgements, stream and consumer API.
    pub(crate) jetstream: jetstream::Context,
    /// Bumped every time the connection dropped: deliveries to a push consumer may
    /// have been lost with it, so readers recreate their consumers.
    pub(crate) disconnects: watch::Receiver<u64>,
    /// Signs what this node writes and verifies what it reads (with a cluster secret).
    pub(crate) codec: backplane_core::EnvelopeCodec,
    /// The node's reconnects and when its readers last heard from the server.
    pub(crate) receive_metrics: backplane_core::metrics::ReceiveMetrics,
}

impl NodeContext {
    /// Connect as `node`.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Backend`] naming what failed (unreachable, refused credentials,
    /// TLS) and the redacted URL.
    pub(crate) async fn connect(
        node: NodeId,
        options: NatsOptions,
    ) -> Result<Self, BackplaneError> {
        let (bump, disconnects) = watch::channel(0u64);
        let bump = Arc::new(bump);
        let backoff = options.node.reconnect_backoff;
        let jitter = Mutex::new(Jitter::new(node));
        let mut connect = async_nats::ConnectOptions::new()
            .name(format!("{}-{node}", options.node.client_name))
            .connection_timeout(options.node.command_timeout)
            .request_timeout(Some(options.node.command_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                let random = lock(&jitter).next_fraction();
                backoff.delay(attempts.saturating_sub(1).min(30) as u32, random)
            })
            .event_callback(move |event| {
                let bump = bump.clone();
                async move {
                    if let async_nats::Event::Disconnected = event {
                        bump.send_modify(|count| *count += 1);
                    }
                    tracing::debug!(%node, %event, "[Listener] connection event");
                }
            });
        connect = match &options.credentials {
            NatsCredentials::None => connect,
            NatsCredentials::UserPassword { user, password } => {
                connect.user_and_password(user.clone(), password.clone())
            }
            NatsCredentials::Token(token) => connect.token(token.clone()),
            #[cfg(feature = "nkeys")]
            NatsCredentials::NKey(seed) => connect.nkey(seed.clone()),
            #[cfg(feature = "nkeys")]
            NatsCredentials::CredsFile(path) => connect
                .credentials_file(path)
                .await
                .map_err(|error| backend_error("reading the NATS .creds file", error))?,
            #[cfg(not(feature = "nkeys"))]
            NatsCredentials::NKey(_) | NatsCredentials::CredsFile(_) => {
                return Err(BackplaneError::Config(
                    "NKey and .creds credentials need backplane-nats's cargo feature `nkeys`"
                        .into(),
                ));
            }
        };
        if options.require_tls {
            connect = connect.require_tls(true);
        }
        if let Some(roots) = &options.root_certificates {
            connect = connect.add_root_certificates(roots.clone());
        }
        if let Some((cert, key)) = &options.client_certificate {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
        let client = connect.connect(options.url()).await.map_err(|error| {
            BackplaneError::backend(format!(
                "connecting to NATS at {}: {} (check the URL, that the server runs, the credentials and TLS settings)",
                options.redacted_url(),
                error.kind()
            ))
        })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(options.ack_timeout)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let context = Self {
            node,
            codec: backplane_core::EnvelopeCodec::new(options.cluster_secret.clone()),
            receive_metrics: backplane_core::metrics::ReceiveMetrics::new(KIND),
            options,
            client,
            jetstream,
            disconnects,
        };
        context.ensure_stream().await?;
        Ok(context)
    }

    /// The stream's name: the prefix.
    pub(crate) fn stream_name(&self) -> &str {
        &self.options.prefix
    }

    /// Create the stream if it does not exist (a fresh server, or one restarted with
    /// memory storage). An existing stream keeps its settings.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Backend`] if JetStream refuses (not enabled, no permission,
    /// out of resources).
    pub(crate) async fn ensure_stream(&self) -> Result<(), BackplaneError> {
        let options = &self.options;
        let max_age = options.max_age.unwrap_or(Duration::ZERO);
        let config = stream::Config {
            name: self.stream_name().to_owned(),
            description: Some("SignalR backplane envelopes (backplane-nats)".into()),
            subjects: vec![format!("{}.>", options.prefix)],
            max_age,
            max_bytes: options
                .max_bytes
                .map_or(-1, |b| b.min(i64::MAX as u64) as i64),
            max_messages: options
                .max_messages
                .map_or(-1, |m| m.min(i64::MAX as u64) as i64),
            discard: stream::DiscardPolicy::Old,
            storage: match options.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            num_replicas: options.replicas,
            duplicate_window: match options.max_age {
                Some(age) => options.duplicate_window.min(age),
                None => options.duplicate_window,
            },
            ..stream::Config::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map(drop)
            .map_err(|error| {
                backend_error(
                    "creating the JetStream stream (is JetStream enabled on the server, and may this user use $JS.API?)",
                    error,
                )
            })
    }

    /// The largest chunk: the server's `max_payload` less room for headers.
    pub(crate) fn chunk_bytes(&self) -> usize {
        let max_payload = self.client.server_info().max_payload;
        max_payload.saturating_sub(HEADER_ROOM).max(HEADER_ROOM)
    }
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContext")
            .field("node", &self.node)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

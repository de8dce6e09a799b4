//! Clients of the control plane's API: the generated tonic clients with the bearer token
//! attached to every call.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use weft_control::{client, proto::ListPluginsRequest};
//!
//! let mut clients = client::connect("http://127.0.0.1:18000", "the token").await?;
//! let plugins = clients.registry.list(ListPluginsRequest {}).await?.into_inner().plugins;
//! # let _ = plugins;
//! # Ok(())
//! # }
//! ```

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue, errors::InvalidMetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::proto::{
    DiscoveryRequest, Snapshot, discovery_client::DiscoveryClient, registry_client::RegistryClient,
    resources_client::ResourcesClient,
};

/// An interceptor adding `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// The interceptor for `token`; fails if the token is not printable ASCII.
    pub fn new(token: &str) -> Result<Self, InvalidMetadataValue> {
        Ok(Self(format!("Bearer {token}").parse()?))
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry the token.
pub type Authenticated = InterceptedService<Channel, BearerToken>;

/// The three services' clients over one connection.
#[derive(Debug, Clone)]
pub struct Clients {
    /// `weft.control.v1.Registry`.
    pub registry: RegistryClient<Authenticated>,
    /// `weft.control.v1.Resources`.
    pub resources: ResourcesClient<Authenticated>,
    /// `weft.control.v1.Discovery`.
    pub discovery: DiscoveryClient<Authenticated>,
}

impl Clients {
    /// Clients over an open `channel`, presenting `token`.
    pub fn new(channel: Channel, token: BearerToken) -> Self {
        Self {
            registry: RegistryClient::with_interceptor(channel.clone(), token.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            resources: ResourcesClient::with_interceptor(channel.clone(), token.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            discovery: DiscoveryClient::with_interceptor(channel, token)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// Opens `Discovery.Subscribe` as `node`, which runs resource `version` (0: none yet):
    /// the sender for the ACKs and NACKs to come, and the snapshots the control plane pushes.
    pub async fn subscribe(
        &mut self,
        node: &str,
        version: u64,
    ) -> Result<(mpsc::Sender<DiscoveryRequest>, tonic::Streaming<Snapshot>), Status> {
        let (requests, outbound) = mpsc::channel(4);
        requests
            .send(DiscoveryRequest {
                node: node.to_owned(),
                version_info: version,
                response_nonce: String::new(),
                error_detail: String::new(),
            })
            .await
            .map_err(|_| Status::internal("the subscription's request queue closed"))?;
        let snapshots = self
            .discovery
            .subscribe(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        Ok((requests, snapshots))
    }
}

/// The largest message the clients accept (a snapshot of many resources can pass the
/// 4 MiB default).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A failure to connect.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The token cannot be sent as metadata.
    #[error("the token is not printable ASCII")]
    Token(#[from] InvalidMetadataValue),
    /// The URL is invalid or the control plane is unreachable.
    #[error("cannot reach the control plane at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// Connects to the control plane at `url` (e.g. `http://127.0.0.1:18000`) with `token`.
pub async fn connect(url: &str, token: &str) -> Result<Clients, ClientError> {
    let token = BearerToken::new(token)?;
    let error = |source| ClientError::Connect {
        url: url.to_owned(),
        source,
    };
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(error)?
        .connect()
        .await
        .map_err(error)?;
    Ok(Clients::new(channel, token))
}

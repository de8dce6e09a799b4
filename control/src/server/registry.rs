//! The `Registry` gRPC service: streamed publish, list, get, delete, and fetch by digest.

use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{discovery::Hub, status};
use crate::{
    proto::{
        self, DeletePluginRequest, FetchRequest, GetPluginRequest, ListPluginsReply,
        ListPluginsRequest, ModuleChunk, PluginVersions, PublishChunk, PublishReply, ReloadReply,
        ReloadRequest,
    },
    registry::Registry,
    store::ModuleVersion,
};

/// The largest module a publish accepts.
pub const MAX_MODULE_BYTES: usize = 256 * 1024 * 1024;

/// How many bytes each `ModuleChunk` of a fetch carries.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The `Registry` gRPC service.
pub(crate) struct RegistryService {
    pub(crate) registry: Registry,
    pub(crate) hub: Arc<Hub>,
}

/// The chunks of one fetched module.
type ChunkStream = tokio_stream::Iter<std::vec::IntoIter<Result<ModuleChunk, Status>>>;

#[tonic::async_trait]
impl proto::registry_server::Registry for RegistryService {
    async fn publish(
        &self,
        request: Request<Streaming<PublishChunk>>,
    ) -> Result<Response<PublishReply>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "empty upload: the first chunk must carry `name` and `version`",
            )
        })?;
        if first.name.is_empty() || first.version.is_empty() {
            return Err(Status::invalid_argument(
                "the first chunk must carry the plugin's `name` and `version`",
            ));
        }
        let (name, version, mut bytes) = (first.name, first.version, first.data);
        while let Some(chunk) = chunks.message().await? {
            if bytes.len() + chunk.data.len() > MAX_MODULE_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "{name}@{version} refused: modules are limited to {} MiB",
                    MAX_MODULE_BYTES / (1024 * 1024)
                )));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let registry = self.registry.clone();
        let published = status::blocking(move || {
            registry
                .publish(&name, &version, &bytes)
                .map_err(status::registry)
        })
        .await?;
        if published.moved_plugins {
            self.hub.changed(published.resource_version);
        }
        let module = &published.version;
        tracing::info!(
            name = %module.name, version = %module.version, sha256 = %module.sha256,
            size = module.size, created = published.created, "module published"
        );
        Ok(Response::new(PublishReply {
            module: Some(module_version(&published.version)),
            created: published.created,
            resource_version: published.resource_version,
        }))
    }

    async fn list(
        &self,
        _request: Request<ListPluginsRequest>,
    ) -> Result<Response<ListPluginsReply>, Status> {
        let registry = self.registry.clone();
        let plugins = status::blocking(move || registry.list().map_err(status::registry)).await?;
        Ok(Response::new(ListPluginsReply {
            plugins: plugins
                .into_iter()
                .map(|plugin| PluginVersions {
                    name: plugin.name,
                    versions: plugin.versions.iter().map(module_version).collect(),
                })
                .collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<GetPluginRequest>,
    ) -> Result<Response<proto::ModuleVersion>, Status> {
        let GetPluginRequest { name, version } = request.into_inner();
        let registry = self.registry.clone();
        let found = status::blocking(move || {
            registry
                .get(&name, version.as_deref())
                .map_err(status::registry)
        })
        .await?;
        Ok(Response::new(module_version(&found)))
    }

    async fn delete(
        &self,
        request: Request<DeletePluginRequest>,
    ) -> Result<Response<proto::ModuleVersion>, Status> {
        let DeletePluginRequest { name, version } = request.into_inner();
        let registry = self.registry.clone();
        let deleted =
            status::blocking(move || registry.delete(&name, &version).map_err(status::registry))
                .await?;
        tracing::info!(name = %deleted.name, version = %deleted.version, "module deleted");
        Ok(Response::new(module_version(&deleted)))
    }

    async fn reload(
        &self,
        request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadReply>, Status> {
        let name = request.into_inner().name;
        let registry = self.registry.clone();
        let reloaded =
            status::blocking(move || registry.reload(&name).map_err(status::registry)).await?;
        self.hub.changed(reloaded.resource_version);
        let module = &reloaded.version;
        tracing::info!(
            name = %module.name, version = %module.version, generation = reloaded.generation,
            resource_version = reloaded.resource_version, "plugin reload requested"
        );
        Ok(Response::new(ReloadReply {
            module: Some(module_version(module)),
            version: reloaded.resource_version,
            generation: reloaded.generation,
            plugins: reloaded.plugins,
        }))
    }

    type FetchStream = ChunkStream;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let sha256 = request.into_inner().sha256;
        if sha256.len() != 64
            || !sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(Status::invalid_argument(format!(
                "`{sha256}` is not a sha256 digest (64 lowercase hex digits)"
            )));
        }
        let registry = self.registry.clone();
        let bytes =
            status::blocking(move || registry.module(&sha256).map_err(status::registry)).await?;
        Ok(Response::new(tokio_stream::iter(chunk(&bytes))))
    }
}

/// Splits a module into fetch chunks; the first carries the total size. An empty module
/// (never stored, but harmless) is one empty chunk.
fn chunk(bytes: &[u8]) -> Vec<Result<ModuleChunk, Status>> {
    let size = bytes.len() as u64;
    if bytes.is_empty() {
        return vec![Ok(ModuleChunk {
            data: Vec::new(),
            size,
        })];
    }
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| {
            Ok(ModuleChunk {
                data: data.to_vec(),
                size: if i == 0 { size } else { 0 },
            })
        })
        .collect()
}

/// A stored version record on the wire.
fn module_version(version: &ModuleVersion) -> proto::ModuleVersion {
    proto::ModuleVersion {
        name: version.name.clone(),
        version: version.version.clone(),
        sha256: version.sha256.clone(),
        size: version.size,
        published_at_unix_ms: version.published_at_ms,
    }
}

// The stream type must be `Send + 'static` for tonic.
const _: fn() = || {
    fn assert_stream<S: Stream + Send + 'static>() {}
    assert_stream::<ChunkStream>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_split_into_1_mib_chunks_and_the_first_carries_the_size() {
        let bytes = vec![7u8; CHUNK_BYTES * 2 + 10];
        let chunks: Vec<ModuleChunk> = chunk(&bytes).into_iter().flatten().collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].size, bytes.len() as u64);
        assert_eq!(chunks[1].size, 0);
        assert_eq!(chunks[2].data.len(), 10);
        let joined: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
        assert_eq!(joined, bytes);
    }
}

//! The `Resources` gRPC service: apply, get, list and delete of the YAML kinds. Every accepted
//! change is announced to discovery, which pushes the new snapshot to every proxy.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{discovery::Hub, status};
use crate::{
    proto::{
        self, ApplyReply, ApplyRequest, ChangeAction, DeleteResourceReply, DeleteResourceRequest,
        GetResourceRequest, ListResourcesReply, ListResourcesRequest,
    },
    resources::{Action, Resources, canonical_kind},
    store::{self, RESOURCE_VERSION, Store, StoredResource},
};

/// The `Resources` gRPC service.
pub(crate) struct ResourcesService {
    pub(crate) resources: Resources,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hub: Arc<Hub>,
}

#[tonic::async_trait]
impl proto::resources_server::Resources for ResourcesService {
    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyReply>, Status> {
        let yaml = request.into_inner().yaml;
        let resources = self.resources.clone();
        let applied =
            status::blocking(move || resources.apply(&yaml).map_err(status::resources)).await?;
        self.hub.changed(applied.version);
        tracing::info!(
            version = applied.version,
            documents = applied.changes.len(),
            "applied"
        );
        Ok(Response::new(ApplyReply {
            version: applied.version,
            changes: applied
                .changes
                .into_iter()
                .map(|change| proto::Change {
                    kind: change.kind,
                    name: change.name,
                    action: match change.action {
                        Action::Created => ChangeAction::Created,
                        Action::Updated => ChangeAction::Updated,
                        Action::Unchanged => ChangeAction::Unchanged,
                    }
                    .into(),
                })
                .collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<GetResourceRequest>,
    ) -> Result<Response<proto::Resource>, Status> {
        let GetResourceRequest { kind, name } = request.into_inner();
        let resources = self.resources.clone();
        let found =
            status::blocking(move || resources.get(&kind, &name).map_err(status::resources))
                .await?;
        Ok(Response::new(resource(found)))
    }

    async fn list(
        &self,
        request: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesReply>, Status> {
        let kind = request
            .into_inner()
            .kind
            .filter(|kind| !kind.is_empty())
            .map(|kind| canonical_kind(&kind).map_err(status::resources))
            .transpose()?;
        let store = self.store.clone();
        let (version, found) = status::blocking(move || {
            store::read(&*store, |txn| {
                Ok((txn.counter(RESOURCE_VERSION)?, txn.resources(kind)?))
            })
            .map_err(status::store)
        })
        .await?;
        Ok(Response::new(ListResourcesReply {
            resources: found.into_iter().map(resource).collect(),
            version,
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<DeleteResourceReply>, Status> {
        let DeleteResourceRequest { kind, name } = request.into_inner();
        let resources = self.resources.clone();
        let (version, kind, name) = status::blocking(move || {
            let version = resources.delete(&kind, &name).map_err(status::resources)?;
            Ok((version, kind, name))
        })
        .await?;
        self.hub.changed(version);
        tracing::info!(version, kind = %kind, name = %name, "deleted");
        Ok(Response::new(DeleteResourceReply { version }))
    }
}

fn resource(stored: StoredResource) -> proto::Resource {
    proto::Resource {
        kind: stored.kind,
        name: stored.name,
        yaml: stored.yaml,
    }
}

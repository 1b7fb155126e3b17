//! The node's images: what the runtime says about them (ImageStatus, ListImages), and the
//! pulled-image records kept in step with them (each pull recorded, removed images and
//! expired records forgotten, the images present at the first start noted as preloaded).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use hyper::Response;
use prost::Message as _;
use regcred_cri_api::runtime::v1::{PullImageResponse, RemoveImageRequest};
use tonic::Code;

use super::grpc::{self, ProxyBody};
use super::metrics::ProxyMetrics;
use super::records::{PullRecords, RecordsError};
use super::runtime::RequestHead;
use super::upstream::{Upstream, response_message};

/// Whether `reference` is an image ID (`sha256:` and 64 hex digits), as containerd
/// answers a pull and kubelet names an image on the node.
fn is_image_id(reference: &str) -> bool {
    reference
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An image a pull brought: its ID, and the other reference the runtime named it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PulledImage {
    pub(crate) id: String,
    pub(crate) alias: Option<String>,
}

impl PulledImage {
    pub(super) fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            alias: None,
        }
    }

    pub(crate) fn key(&self) -> super::records::ImageKey<'_> {
        super::records::ImageKey {
            id: &self.id,
            alias: self.alias.as_deref(),
        }
    }

    /// Whether `reference` (what a CreateContainer named) is this image.
    pub(super) fn is(&self, reference: &str) -> bool {
        self.id == reference || self.alias.as_deref() == Some(reference)
    }

    pub(super) fn shown(&self) -> &str {
        &self.id
    }
}

/// The image reference a PullImage response carries.
pub(crate) fn pulled_ref(response: &Response<ProxyBody>) -> Option<String> {
    let message = response_message(response)?;
    let pulled = PullImageResponse::decode(&message[..]).ok()?;
    (!pulled.image_ref.is_empty()).then_some(pulled.image_ref)
}

/// The pulled-image records as the handlers keep them in step with the node: `None`
/// records when the checks at container creation are off (nothing is recorded then).
#[derive(Debug)]
pub(crate) struct NodeImages {
    records: Option<Arc<PullRecords>>,
    metrics: Arc<ProxyMetrics>,
}

impl NodeImages {
    pub(crate) fn new(records: Option<Arc<PullRecords>>, metrics: Arc<ProxyMetrics>) -> Self {
        Self { records, metrics }
    }

    /// Logs and counts a records write that failed; the record is kept in memory, and
    /// private decisions are refused until a write succeeds (see `verify::durable`).
    pub(crate) fn keep(&self, written: Result<(), RecordsError>) {
        if let Err(err) = written {
            self.metrics.records_write_failed();
            tracing::error!(error = %err,
                "cannot write the pulled-image records; private images are refused until \
                 they can be written");
        }
        if let Some(records) = &self.records {
            self.metrics.records_unwritten(records.unwritten());
        }
    }

    /// Records a successful pull: `credential` is the hash and Secret it was made with,
    /// `None` for a pull without credentials.
    pub(crate) async fn record_pull(
        &self,
        upstream: &Upstream,
        response: &Response<ProxyBody>,
        image: &str,
        credential: Option<(&str, &str)>,
    ) {
        let Some(records) = &self.records else {
            return;
        };
        let Some(pulled) = pulled_image(upstream, response).await else {
            return;
        };
        self.keep(match credential {
            Some((hash, secret)) => records.credentialed(pulled.key(), image, hash, secret),
            None => records.public(pulled.key(), image),
        });
    }

    /// RemoveImage: forwarded; when it succeeds, the image's records are dropped.
    pub(crate) async fn remove_image(
        &self,
        upstream: &Upstream,
        head: RequestHead,
        body: Bytes,
    ) -> Response<ProxyBody> {
        let records = match &self.records {
            Some(records) if !records.is_empty() => records,
            _ => return upstream.forward(&head, body).await,
        };
        let image = grpc::single_message(&body)
            .and_then(|m| RemoveImageRequest::decode(&m[..]).ok())
            .and_then(|r| r.image)
            .map(|i| i.image)
            .unwrap_or_default();
        let id = if image.starts_with("sha256:") {
            Some(image.clone())
        } else {
            upstream.image_id(&head, &image).await
        };
        let answer = match upstream.attempt(&head, body).await {
            Ok(answer) => answer,
            Err(unavailable) => return unavailable,
        };
        if answer.code == Code::Ok
            && let Some(id) = id
        {
            match records.remove(&id) {
                Ok(true) => tracing::info!(image, id, "image removed; its pull records dropped"),
                Ok(false) => {}
                Err(err) => tracing::error!(error = %err, "cannot write the pulled-image records"),
            }
        }
        answer.response
    }

    /// Notes the images on the node as the preloaded ones when the records do not know
    /// them yet (the first start with these records); whether they are known now. Until
    /// they are, no image counts as preloaded.
    pub(crate) async fn ensure_preloaded(&self, upstream: &Upstream) -> bool {
        let Some(records) = &self.records else {
            return true;
        };
        if records.preloaded_known() {
            return true;
        }
        let Some(listed) = upstream.list_images().await else {
            tracing::warn!(
                "cannot list the runtime's images: which images are preloaded is not known \
                 yet, so none counts as preloaded until they can be listed"
            );
            return false;
        };
        let present: BTreeSet<String> = listed.into_iter().map(|i| i.id).collect();
        match records.note_preloaded(&present) {
            Ok(true) => tracing::info!(
                preloaded = records.preloaded_len(),
                "the images on the node now are the preloaded ones (first start with these \
                 records); any image that comes later without a regcred pull is verified"
            ),
            Ok(false) => {}
            Err(err) => self.keep(Err(err)),
        }
        true
    }

    /// Forgets the records of images no longer on the node and credential records past
    /// their lifetime, and at the first start notes the preloaded images (at start; the
    /// runtime may not be up yet, then the preloaded images are noted at the first
    /// decision).
    pub(crate) async fn prune(&self, upstream: &Upstream) {
        let Some(records) = &self.records else {
            return;
        };
        if !self.ensure_preloaded(upstream).await || records.is_empty() {
            return;
        }
        let Some(listed) = upstream.list_images().await else {
            tracing::warn!("cannot list the runtime's images; pulled-image records not pruned");
            return;
        };
        let present = listed.into_iter().map(|i| i.id).collect();
        match records.retain(&present) {
            Ok(forgotten) => tracing::info!(
                images = records.len(),
                forgotten,
                "pulled-image records checked against the runtime's images"
            ),
            Err(err) => self.keep(Err(err)),
        }
    }
}

/// The image a successful PullImage `response` brought: its reference, and its ID from
/// ImageStatus when the reference is not one (CRI-O answers with a repository digest,
/// containerd with the ID). `None` when the response names nothing.
pub(crate) async fn pulled_image(
    upstream: &Upstream,
    response: &Response<ProxyBody>,
) -> Option<PulledImage> {
    let reference = pulled_ref(response)?;
    if is_image_id(&reference) {
        return Some(PulledImage::named(&reference));
    }
    let head = RequestHead::unary(regcred_cri_api::methods::IMAGE_STATUS);
    match upstream.image_id(&head, &reference).await {
        Some(id) if !id.is_empty() => Some(PulledImage {
            id,
            alias: Some(reference),
        }),
        _ => {
            tracing::warn!(reference = %reference,
                "the runtime answered the pull with a reference it does not resolve to \
                 an image ID; recorded under that reference");
            Some(PulledImage::named(&reference))
        }
    }
}

//! One file on its way from the index into S3, hashed as it streams: held in memory up to one
//! part, then sent by multipart upload. An upload becomes an object only when it is finished
//! (one `PutObject`, or `CompleteMultipartUpload`), which happens only once the whole file has
//! been hashed and the caller found the hash pinned; otherwise it is aborted and nothing is
//! visible. A large file is never held whole: at most a part in the buffer and one in flight.

use object_store::path::Path;
use object_store::{
    Attribute, Attributes, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};

use super::{SHA256_METADATA, Wheelhouse};
use crate::error::Result;

/// Parts of a multipart upload in flight at once (each [`Wheelhouse::part_size`] bytes).
const PARTS_IN_FLIGHT: usize = 1;

pub(super) struct Upload<'a> {
    house: &'a Wheelhouse,
    path: Path,
    /// The hash the index page gives: recorded from the start of a multipart upload, whose
    /// metadata cannot be set at its end.
    promised: Option<String>,
    buffer: Vec<u8>,
    multipart: Option<WriteMultipart>,
    hasher: Sha256,
    size: u64,
}

impl<'a> Upload<'a> {
    pub(super) fn new(house: &'a Wheelhouse, path: Path, promised: Option<String>) -> Self {
        Upload {
            house,
            path,
            promised,
            buffer: Vec::new(),
            multipart: None,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Take the next bytes of the file.
    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if let Some(multipart) = &mut self.multipart {
            multipart
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| self.house.s3_error("uploading", &self.path, e))?;
            multipart.write(chunk);
            return Ok(());
        }
        self.buffer.extend_from_slice(chunk);
        if self.buffer.len() > self.house.part_size {
            let options = PutMultipartOptions {
                attributes: metadata(self.promised.as_deref()),
                ..PutMultipartOptions::default()
            };
            let upload = self
                .house
                .store
                .put_multipart_opts(&self.path, options)
                .await
                .map_err(|e| self.house.s3_error("starting the upload of", &self.path, e))?;
            let mut multipart = WriteMultipart::new_with_chunk_size(upload, self.house.part_size);
            multipart.write(&std::mem::take(&mut self.buffer));
            self.multipart = Some(multipart);
        }
        Ok(())
    }

    /// The SHA-256 (lowercase hex) of the bytes written so far.
    pub(super) fn sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Make the object visible, recording `sha256` (the bytes' hash) where it still can;
    /// returns its size.
    pub(super) async fn finish(self, sha256: &str) -> Result<u64> {
        let (house, path) = (self.house, &self.path);
        match self.multipart {
            Some(multipart) => {
                multipart
                    .finish()
                    .await
                    .map_err(|e| house.s3_error("completing the upload of", path, e))?;
            }
            None => {
                let options = PutOptions {
                    attributes: metadata(Some(sha256)),
                    ..PutOptions::default()
                };
                let payload = PutPayload::from(self.buffer);
                house
                    .store
                    .put_opts(path, payload, options)
                    .await
                    .map_err(|e| house.s3_error("writing", path, e))?;
            }
        }
        Ok(self.size)
    }

    /// Drop what was sent: a multipart upload is aborted (its parts deleted), a buffer never
    /// left. A failed abort leaves parts that no object shows (a bucket lifecycle rule for
    /// incomplete uploads removes them).
    pub(super) async fn abort(self) {
        if let Some(multipart) = self.multipart
            && let Err(e) = multipart.abort().await
        {
            tracing::warn!(key = %self.path, "aborting an upload: {}", self.house.s3_error("aborting", &self.path, e));
        }
    }
}

/// `x-amz-meta-sha256` when the hash is known.
fn metadata(sha256: Option<&str>) -> Attributes {
    let mut attributes = Attributes::new();
    if let Some(sha256) = sha256 {
        attributes.insert(
            Attribute::Metadata(SHA256_METADATA.into()),
            sha256.to_string().into(),
        );
    }
    attributes
}

/// The hash a stored object's metadata records, if it records one.
pub(super) fn recorded(attributes: &Attributes) -> Option<String> {
    attributes
        .get(&Attribute::Metadata(SHA256_METADATA.into()))
        .map(|v| v.as_ref().to_ascii_lowercase())
        .filter(|h| super::layout::is_sha256(h))
}

//! The volumes the webhook adds to a pod, and mounts of them.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{BIN_VOLUME, CACHE_VOLUME, SITE_PACKAGES_VOLUME, SNAPSHOT_VOLUME, WORK_VOLUME};
use crate::crd::{InstallSpec, WorkspaceRequirements};

/// Size limit of the binaries volume (the static binary and uv: ~60 MB).
const BIN_SIZE_LIMIT: &str = "256Mi";

/// The binaries, site-packages, snapshot and work volumes, and the download cache when the
/// administrator named a claim. `size_limit` bounds site-packages and work.
pub(super) fn volumes(
    resource: &WorkspaceRequirements,
    size_limit: Option<Quantity>,
    cache_claim: Option<&str>,
) -> Vec<Volume> {
    let empty_dir = |name: &str, limit: Option<Quantity>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: limit,
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut volumes = vec![
        empty_dir(BIN_VOLUME, Some(Quantity(BIN_SIZE_LIMIT.into()))),
        empty_dir(SITE_PACKAGES_VOLUME, size_limit.clone()),
        Volume {
            name: SNAPSHOT_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: resource.snapshot_name(),
                // A missing snapshot must not keep the pod from starting: Redis may serve.
                optional: Some(true),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir(WORK_VOLUME, size_limit),
    ];
    if let Some(claim) = cache_claim {
        volumes.push(Volume {
            name: CACHE_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// `spec.install.sizeLimit` as a quantity; empty means no limit, and so does a value that is not
/// a positive quantity (with a warning: the pod is better off unbounded than not injected).
pub(super) fn size_limit(install: &InstallSpec, warnings: &mut Vec<String>) -> Option<Quantity> {
    match install.size_limit.trim() {
        "" => None,
        q if crate::spec::parse_quantity(q).is_ok_and(|v| v.nano > 0) => {
            Some(Quantity(q.to_string()))
        }
        q => {
            warnings.push(format!(
                "spec.install.sizeLimit {q:?} is not a positive Kubernetes quantity; the site-packages volume has no size limit"
            ));
            None
        }
    }
}

/// The PersistentVolumeClaim for the installer's download cache, when one is named.
pub(super) fn cache_claim(install: &InstallSpec) -> Option<&str> {
    install
        .cache_volume
        .as_ref()
        .map(|c| c.claim_name.trim())
        .filter(|c| !c.is_empty())
}

pub(super) fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

//! What differs between the Kubernetes client types the crate builds with: k8s-openapi's
//! `v1_33` (shipped) and `v1_37` (the newest, checked in CI: `--features k8s-v1_37`). From
//! 1.37's types on, a Deployment's, a ReplicaSet's and a StatefulSet's `spec` is required (no `Option`), and a
//! workload condition's `type`/`status` are optional. Code reads them through these two traits,
//! which answer the same on both, so no `cfg` is needed at the call sites.

use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, StatefulSetSpec};

/// A field that is an `Option<T>` in some Kubernetes versions and a plain `T` in others.
pub trait Present<T> {
    fn present(&self) -> Option<&T>;
}

impl<T> Present<T> for Option<T> {
    fn present(&self) -> Option<&T> {
        self.as_ref()
    }
}

impl Present<DeploymentSpec> for DeploymentSpec {
    fn present(&self) -> Option<&DeploymentSpec> {
        Some(self)
    }
}

impl Present<ReplicaSetSpec> for ReplicaSetSpec {
    fn present(&self) -> Option<&ReplicaSetSpec> {
        Some(self)
    }
}

impl Present<StatefulSetSpec> for StatefulSetSpec {
    fn present(&self) -> Option<&StatefulSetSpec> {
        Some(self)
    }
}

/// A text field that is a `String` in some Kubernetes versions and an `Option<String>` in
/// others; absent reads as empty.
pub trait Text {
    fn text(&self) -> &str;
}

impl Text for String {
    fn text(&self) -> &str {
        self
    }
}

impl Text for Option<String> {
    fn text(&self) -> &str {
        self.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_and_plain_fields_read_alike() {
        let spec = DeploymentSpec::default();
        assert!(Present::<DeploymentSpec>::present(&spec).is_some());
        assert!(Some(spec).present().is_some());
        assert!(None::<StatefulSetSpec>.present().is_none());
        assert_eq!("True".to_string().text(), "True");
        assert_eq!(Some("True".to_string()).text(), "True");
        assert_eq!(None::<String>.text(), "");
    }
}

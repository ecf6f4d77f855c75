//! cert-manager mode: serve mounted certificate files, reloaded when they change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::resolver::CertResolver;

/// Load `cert`/`key` now and whenever their content changes (checked every `interval`), until
/// `shutdown`. A missing or broken pair is logged; the previous certificate keeps serving.
pub(crate) async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    resolver: Arc<CertResolver>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A failure that stays the same is logged once, not at every interval.
    let mut last_error = String::new();
    loop {
        let loaded = match (tokio::fs::read(&cert).await, tokio::fs::read(&key).await) {
            (Ok(c), Ok(k)) => resolver.set_pem(&c, &k).map_err(|e| e.to_string()),
            (Err(e), _) => Err(format!("cannot read {}: {e}", cert.display())),
            (_, Err(e)) => Err(format!("cannot read {}: {e}", key.display())),
        };
        match loaded {
            Ok(true) => {
                last_error.clear();
                info!(cert = %cert.display(), "serving the webhook certificate from files (reloaded on change)");
            }
            Ok(false) => last_error.clear(),
            Err(e) if e != last_error => {
                warn!(error = %e, "webhook certificate files not usable; keeping the current certificate");
                last_error = e;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

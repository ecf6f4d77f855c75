//! CacheWarmed: Bifrost's Redis key holds the payload. Reconciles write it when it is missing,
//! different or past half its TTL; between reconciles a watchdog checks each warmed key with one
//! `TTL` command and triggers a reconcile when it is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{info, warn};

use super::context::{Context, secret_value};
use super::status::{Draft, RETRY, now_rfc3339};
use crate::cache::{Cache, CacheConfig, Payload};
use crate::crd::{ConditionType, RedisCache, WorkspaceRequirements};
use crate::error::{Error, Result};

/// How often the watchdog checks that each warmed Redis key still exists (one `TTL` command:
/// a flushed or restarted Redis is re-warmed within this period, not at the next refresh).
const CACHE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The warm step's memory: Redis connections by (URL, key, TTL), reused across reconciles, and
/// the keys the watchdog checks between them.
#[derive(Default)]
pub(super) struct Warmth {
    connections: tokio::sync::Mutex<HashMap<String, Cache>>,
    watched: Mutex<HashMap<ObjectRef<WorkspaceRequirements>, Watched>>,
}

/// A warmed Redis key: its connection and configured TTL.
struct Watched {
    cache: Cache,
    ttl: u64,
}

impl Warmth {
    fn watch(&self, oref: ObjectRef<WorkspaceRequirements>, watched: Watched) {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(oref, watched);
    }

    /// Stop watching this resource's Redis key (it is no longer warmed from this resource).
    pub(super) fn unwatch(&self, oref: &ObjectRef<WorkspaceRequirements>) {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(oref);
    }
}

/// CacheWarmed: Redis holds the payload (or why not); the watchdog is told which key to check.
pub(super) async fn check_cache(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    draft: &mut Draft,
) {
    let conditions = &mut draft.conditions;
    let ns = obj.namespace().unwrap_or_default();
    let oref = ObjectRef::from_obj(obj);
    match obj.spec.cache.as_ref().and_then(|c| c.redis.as_ref()) {
        Some(redis) => {
            match connect_and_warm(ctx, &ns, redis, payload).await {
                Ok((w, cache)) => {
                    if let Warmed::Written(before) = w {
                        draft.status.cache_warmed_at = Some(now_rfc3339());
                        ctx.metrics.redis_warm(true);
                        info!(key = %redis.key, hash = %payload.hash, before, "Redis warmed");
                        ctx.publish(
                            obj,
                            EventType::Normal,
                            "CacheWarmed",
                            format!(
                                "Redis key {} holds sha256 {} (it held {before})",
                                redis.key,
                                &payload.hash[..12]
                            ),
                            "WarmCache",
                        )
                        .await;
                    }
                    ctx.memory::<Warmth>().watch(
                        oref.clone(),
                        Watched {
                            cache,
                            ttl: redis.ttl_seconds,
                        },
                    );
                    ctx.clear_warning(obj, "RedisUnreachable");
                    let ttl = redis.ttl_seconds;
                    conditions.set(
                        ConditionType::CacheWarmed,
                        true,
                        "RedisWarmed",
                        &format!("Redis key {} holds the content (TTL {ttl} s, refreshed before half of it)", redis.key),
                    );
                    draft.recheck_within(Duration::from_secs((ttl / 4).max(30)));
                }
                Err(e) => {
                    ctx.memory::<Warmth>().unwatch(&oref);
                    ctx.metrics.redis_warm(false);
                    let message = e.to_string();
                    warn!(error = %message, "Redis warm failed");
                    conditions.set(ConditionType::CacheWarmed, false, e.reason(), &message);
                    ctx.warn_once(obj, "RedisUnreachable", message, "WarmCache")
                        .await;
                    draft.recheck_within(RETRY);
                }
            }
        }
        None => {
            ctx.memory::<Warmth>().unwatch(&oref);
            conditions.set(
                ConditionType::CacheWarmed,
                true,
                "NotConfigured",
                "no Redis cache configured",
            )
        }
    }
}

/// Make this resource's Redis hold `payload`; returns the connection for the watchdog.
/// Connections are reused across reconciles; one that fails is dropped and replaced at once
/// (a multiplexed connection does not reconnect by itself) — other resources' connections
/// are left alone.
async fn connect_and_warm(
    ctx: &Context,
    ns: &str,
    redis: &RedisCache,
    payload: &Payload,
) -> Result<(Warmed, Cache)> {
    let url = secret_value(
        &ctx.client,
        ns,
        &redis.url_secret_ref.name,
        &redis.url_secret_ref.key,
    )
    .await?;
    let id = format!("{url}\u{0}{}\u{0}{}", redis.key, redis.ttl_seconds);
    let connections = &ctx.memory::<Warmth>().connections;
    let cached = connections.lock().await.get(&id).cloned();
    if let Some(cache) = cached {
        match warm(&cache, payload).await {
            Ok(w) => return Ok((w, cache)),
            // A restarted Redis leaves the multiplexed connection dead: reconnect once
            // before reporting a failure.
            Err(e) => {
                connections.lock().await.remove(&id);
                tracing::debug!(error = %e, "cached Redis connection failed; reconnecting");
            }
        }
    }
    let cache = Cache::connect(CacheConfig {
        key: redis.key.clone(),
        ttl: Duration::from_secs(redis.ttl_seconds),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        attempts: 1,
        ..CacheConfig::new(url)
    })
    .await?;
    let warmed = warm(&cache, payload).await?;
    connections.lock().await.insert(id, cache.clone());
    Ok((warmed, cache))
}

/// What Redis ended up holding after [`warm`]; `Written` says what the key held before.
enum Warmed {
    Written(&'static str),
    AlreadyFresh,
}

/// Make Redis hold the payload: write when missing, different, corrupt, or past half its TTL.
async fn warm(cache: &Cache, payload: &Payload) -> Result<Warmed> {
    let ttl = cache.config().ttl.as_secs();
    let before = match cache.get().await {
        Ok(None) => "nothing (the key was missing)",
        Ok(Some(c)) if c.hash != payload.hash => "another hash",
        Ok(Some(_)) => {
            let remaining = cache.ttl().await?.unwrap_or(0);
            if remaining > ttl / 2 {
                return Ok(Warmed::AlreadyFresh);
            }
            "this content, with less than half its TTL left"
        }
        Err(Error::CachePayload { .. }) => "an unusable value", // overwrite with a good one
        Err(e) => return Err(e),
    };
    cache.put_payload(payload).await?;
    Ok(Warmed::Written(before))
}

/// Between reconciles, check every warmed Redis key with one cheap `TTL` command: a key that is
/// gone (FLUSHALL, a restart without persistence, eviction), past half its TTL, or unreachable
/// triggers a reconcile at once, which rewrites it or reports `CacheWarmed=False`. The value is
/// not read here; reconciles do that at their own pace. Each round also drops the gauges of
/// resources that are gone, the other leftover of a deleted resource.
pub(super) async fn watch_caches(
    ctx: Arc<Context>,
    resources: Store<WorkspaceRequirements>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<WorkspaceRequirements>>,
) {
    let mut tick = tokio::time::interval(CACHE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Gauges of resources that are gone: a reconcile that finished after the deletion (its
        // event already removed them) may have set them again.
        ctx.metrics
            .retain_resources(|ns, name| resources.get(&ObjectRef::new(name).within(ns)).is_some());
        let warmth = ctx.memory::<Warmth>();
        let entries: Vec<_> = warmth
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(oref, w)| (oref.clone(), w.cache.clone(), w.ttl))
            .collect();
        for (oref, cache, ttl) in entries {
            if resources.get(&oref).is_none() {
                warmth.unwatch(&oref);
                continue;
            }
            let left = cache.ttl().await;
            if matches!(left, Ok(Some(s)) if s > ttl / 2) {
                continue;
            }
            info!(resource = %oref, key = %cache.key(), ttl = ?left, "Redis key missing, expiring or unreachable; re-warming");
            warmth.unwatch(&oref);
            if trigger.unbounded_send(oref).is_err() {
                return;
            }
        }
    }
}

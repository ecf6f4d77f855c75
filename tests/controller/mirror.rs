//! The mirror: the database row and its NOTIFY trigger feed `spec.content`; nothing is written
//! before the first sync.

use super::*;

async fn bifrost_row(pg: &PgServer, content: &str) {
    let pool = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
    common::services::write_bifrost_row(&pool, content).await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_mirror_follows_the_row_and_survives_an_outage() {
    let op = Scenario::start("mirror", &[]).await;
    let pg = PgServer::start();
    assert_ok_cli(&["migrate"], &pg.url("postgres"));
    bifrost_row(&pg, "requests==2.32.3\n").await;
    let db_url = pg
        .url("postgres")
        .replace("postgresql://", "postgresql+asyncpg://");
    op.secret("db", "url", &db_url).await;
    op.wsreq(
        "default",
        json!({
            "source": {"database": {"urlSecretRef": {"name": "db", "key": "url"}, "pollIntervalSeconds": 60}},
            "cache": op.cache(),
        }),
    )
    .await;
    // No workload is labelled: everything but that is done (issue 15: it is not Ready).
    let obj = op
        .wait("default", "Ready", "False", Some("NoWorkloads"))
        .await;
    assert_eq!(obj.spec.content, "requests==2.32.3\n");
    // The migration installed the trigger: nothing to warn about.
    assert!(
        !condition(&obj, "Synced").unwrap().2.contains("NOTIFY"),
        "{:?}",
        condition(&obj, "Synced")
    );
    assert!(obj.status.unwrap().last_synced_from_database.is_some());

    let new = "requests==2.32.3\nflask==3.0.3\n";
    notify_brings_the_row(&op, &pg, new).await;
    a_row_over_the_limit_is_refused(&op, &pg, new).await;

    // Database down: content kept, Synced=False with the reason.
    pg.stop();
    let obj = op.wait("default", "Synced", "False", None).await;
    assert_eq!(obj.spec.content, new, "content was not kept");
    let (reason, message) = says(&obj, "Synced", "False", &[]);
    assert!(reason.starts_with("Database"), "{reason}: {message}");
    says(&obj, "Ready", "False", &[]);

    // Back up: recovers, and a change made meanwhile arrives.
    pg.start_again();
    let newer = "requests==2.32.3\nflask==3.0.3\nnumpy\n";
    bifrost_row(&pg, newer).await;
    wait_for("recovery", Duration::from_secs(30), || async {
        let obj = op.get("default").await;
        (obj.spec.content == newer && condition(&obj, "Synced").is_some_and(|c| c.0 == "True"))
            .then_some(())
    })
    .await;
}

/// Bifrost updates the row with plain SQL: NOTIFY brings it well before the 60 s poll.
async fn notify_brings_the_row(op: &Scenario, pg: &PgServer, new: &str) {
    bifrost_row(pg, new).await;
    wait_for("spec follows the row", Duration::from_secs(10), || async {
        (op.get("default").await.spec.content == new).then_some(())
    })
    .await;
    wait_for("Redis follows the row", Duration::from_secs(10), || async {
        (op.cached().await? == Payload::new(new).to_json()).then_some(())
    })
    .await;
    let managers: Vec<String> = op
        .get("default")
        .await
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"bifrost-requirements-mirror".to_string()),
        "{managers:?}"
    );
}

/// Bifrost writes a row over the one content limit: refused as every door refuses it, in the
/// same words; the resource keeps its content and Redis its payload.
async fn a_row_over_the_limit_is_refused(op: &Scenario, pg: &PgServer, new: &str) {
    let huge = format!("# {}\n", "x".repeat(300 * 1024));
    bifrost_row(pg, &huge).await;
    let obj = op
        .wait("default", "Synced", "False", Some("TooLarge"))
        .await;
    assert_eq!(obj.spec.content, new, "content was not kept");
    let limit = bifrost_requirements::limit::exceeded(huge.len());
    says(&obj, "Synced", "False", &[&limit]);
    assert_eq!(op.cached().await, Some(Payload::new(new).to_json()));
    bifrost_row(pg, new).await;
    op.wait("default", "Synced", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_notify_trigger_is_said_in_synced_and_an_event() {
    let op = Scenario::start("notrigger", &[]).await;
    let db = common::services::fresh_database().await;
    assert_ok_cli(&["migrate"], &db);
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    // Bifrost's own table, without our migration's trigger.
    sqlx::query("DROP TRIGGER bifrost_requirements_notify ON workspace_files")
        .execute(&pool)
        .await
        .unwrap();
    common::services::write_bifrost_row(&pool, "requests\n").await;
    pool.close().await;
    op.secret("db", "url", &db).await;
    let spec = json!({"source": {"database": {"urlSecretRef": {"name": "db", "key": "url"}, "pollIntervalSeconds": 7}}});
    op.wsreq("default", spec).await;
    let obj = op.wait("default", "Synced", "True", None).await;
    assert_eq!(obj.spec.content, "requests\n");
    says(
        &obj,
        "Synced",
        "True",
        &[
            "no NOTIFY trigger: changes arrive by polling every 7 s",
            "bifrost-requirements migrate",
        ],
    );
    wait_for("a NotifyTriggerMissing Warning", T, || async {
        let events = op.events();
        (events.matches("NotifyTriggerMissing").count() >= 1).then_some(())
    })
    .await;
}

fn assert_ok_cli(args: &[&str], db: &str) {
    let out = common::cli(args, &[("DATABASE_URL", db)]);
    common::assert_ok(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_resource_writes_nothing_before_its_first_sync() {
    let op = Scenario::start("unsynced", &[]).await;
    // Bifrost already cached its requirements; the database Secret is missing.
    let bifrost_value = Payload::new("requests==2.32.3\n").to_json();
    redis_set(&redis_url(), &op.key, &bifrost_value).await;
    op.wsreq(
        "default",
        json!({
            "source": {"database": {"urlSecretRef": {"name": "missing", "key": "url"}}},
            "cache": op.cache(),
            "rollout": {"debounceSeconds": 0},
        }),
    )
    .await;
    op.deployment("worker", "default", 1).await;
    let obj = op.wait("default", "Synced", "False", None).await;
    says(&obj, "Synced", "False", &["missing"]);
    assert_eq!(
        says(&obj, "CacheWarmed", "Unknown", &[]).0,
        "WaitingForDatabase"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        op.cached().await.as_deref(),
        Some(bifrost_value.as_str()),
        "Redis was overwritten"
    );
    let cms = op.api::<ConfigMap>();
    assert!(cms.get_opt("default-requirements").await.unwrap().is_none());
    assert_eq!(
        op.deployment_hash("worker").await,
        None,
        "rolled out empty content"
    );
}

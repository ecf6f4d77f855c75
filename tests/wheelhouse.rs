//! `wheelhouse::Wheelhouse` against the real S3 test server (moto, credentials enforced) and a
//! real package index of wheels built here: a lock's files copied once, then installed by uv
//! from the wheelhouse alone with the index down; tampered objects, old wheelhouses and wrong
//! credentials as a pod and the operator meet them.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bifrost_requirements::lock::{Interpreter, Lock};
use bifrost_requirements::requirements::content_hash;
use bifrost_requirements::s3::S3Config;
use bifrost_requirements::shutdown::{Stop, StopHandle, stop_pair};
use bifrost_requirements::wheelhouse::{Fetcher, MANIFEST, Wheelhouse};
use common::index::{Index, normalize, path_with_real_uv, real_uv, show_lock_args};
use common::lock_world::database_holding;
use common::s3::{raw, shared};
use common::wheels::{Wheel, import};
use common::{assert_ok, cli, stdout};
use object_store::path::Path as Key;
use object_store::{Attribute, ObjectStore, ObjectStoreExt};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A wheelhouse under a prefix no other test uses, as the writer user.
fn house() -> (Wheelhouse, S3Config, String) {
    let prefix = format!("tests/{}/wheelhouse", uuid::Uuid::new_v4().simple());
    let config = shared().config("unused");
    (Wheelhouse::new(&config, &prefix).unwrap(), config, prefix)
}

fn fetcher(index: &Index) -> Fetcher {
    Fetcher::new(&[index.url()], vec![], TIMEOUT).unwrap()
}

fn running() -> (StopHandle, Stop) {
    stop_pair()
}

/// A lock of `wheels` on `index`, as the controller renders one; its text and SHA-256.
fn lock_of(index: &Index, index_url: &str, wheels: &[Wheel]) -> (String, String) {
    let body: String = wheels
        .iter()
        .map(|w| {
            format!(
                "{}=={} \\\n    --hash=sha256:{}\n    # via -r requirements.txt\n",
                normalize(&w.name),
                w.version,
                index.sha256(w)
            )
        })
        .collect();
    let text = Lock {
        content_hash: content_hash(""),
        interpreter: Interpreter {
            version: "3.11".into(),
            platform: "x86_64-manylinux_2_28".into(),
        },
        index_urls: vec![index_url.to_string()],
        only_binary: true,
        body,
    }
    .render();
    let sha = content_hash(&text);
    (text, sha)
}

/// The lock the operator's resolver writes for `content` on `index`
/// (`requirements show --lock`); its text and SHA-256.
async fn resolved(index: &Index, content: &str) -> (String, String) {
    let db_url = database_holding(content).await;
    let cache = tempfile::tempdir().unwrap();
    let args = show_lock_args(&index.url(), cache.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let path = path_with_real_uv();
    let out = cli(&args, &[("DATABASE_URL", &db_url), ("PATH", &path)]);
    assert_ok(&out);
    let text = stdout(&out);
    let sha = content_hash(&text);
    (text, sha)
}

/// The object `<prefix>/<sha>/<name>` through a plain client: its bytes and recorded hash.
async fn object(config: &S3Config, key: &str) -> Option<(Vec<u8>, Option<String>)> {
    let (store, _) = raw(config);
    match store.get(&Key::from(key)).await {
        Ok(got) => {
            let recorded = got
                .attributes
                .get(&Attribute::Metadata("sha256".into()))
                .map(|v| AsRef::<str>::as_ref(v).to_string());
            Some((got.bytes().await.unwrap().to_vec(), recorded))
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("GetObject {key}: {e}"),
    }
}

/// Requests the index logged for files (not pages).
fn file_requests(index: &Index) -> usize {
    index.log().lines().filter(|l| l.contains(".whl")).count()
}

fn wheels() -> Vec<Wheel> {
    vec![
        Wheel::new("bifrost_t_wh_app", "1.0").requires("bifrost_t_wh_dep"),
        Wheel::new("bifrost_t_wh_dep", "2.0"),
    ]
}

#[tokio::test]
async fn a_lock_is_copied_once_and_installed_from_the_wheelhouse_with_the_index_down() {
    let index = Index::start(&wheels());
    let (text, sha) = resolved(&index, "bifrost_t_wh_app==1.0\n").await;
    let (house, config, prefix) = house();
    let (_handle, stop) = running();
    assert_eq!(house.manifest(&sha).await.unwrap(), None);

    let filled = house
        .fill(&text, &sha, &fetcher(&index), &stop)
        .await
        .unwrap();
    assert_eq!(
        (filled.files, filled.copied, filled.reused),
        (2, 2, 0),
        "{filled:?}"
    );
    let manifest = house.manifest(&sha).await.unwrap().expect("complete");
    assert_eq!(manifest.lock_sha256, sha);
    for w in wheels() {
        let entry = manifest
            .files
            .iter()
            .find(|f| f.name == w.file_name())
            .unwrap();
        let published = std::fs::read(index.path_of(&w)).unwrap();
        assert_eq!(
            (entry.sha256.as_str(), entry.size),
            (index.sha256(&w).as_str(), published.len() as u64)
        );
        let stored = object(&config, &format!("{prefix}/{sha}/{}", w.file_name())).await;
        assert_eq!(stored, Some((published, Some(index.sha256(&w)))));
    }

    // Again: one listing and one read, nothing asked of the index.
    let asked = index.log().lines().count();
    let again = house
        .fill(&text, &sha, &fetcher(&index), &stop)
        .await
        .unwrap();
    assert!(again.was_complete && again.copied == 0, "{again:?}");
    assert_eq!(index.log().lines().count(), asked);
    // Without its manifest: the stored files are kept, none downloaded again.
    let (store, _) = raw(&config);
    store
        .delete(&Key::from(format!("{prefix}/{sha}/{MANIFEST}")))
        .await
        .unwrap();
    let files_asked = file_requests(&index);
    let refill = house
        .fill(&text, &sha, &fetcher(&index), &stop)
        .await
        .unwrap();
    assert_eq!(
        (refill.copied, refill.reused, refill.was_complete),
        (0, 2, false)
    );
    assert_eq!(file_requests(&index), files_asked);

    drop(index);
    let dir = tempfile::tempdir().unwrap();
    let got = house
        .download(&text, &sha, &dir.path().join("wheels"))
        .await
        .unwrap();
    assert_eq!(got.files.len(), 2);
    let target = dir.path().join("site");
    uv_install(&dir.path().join("wheels"), &text, &target);
    assert_eq!(import(&target, "bifrost_t_wh_app").as_deref(), Ok("1.0"));
    assert_eq!(import(&target, "bifrost_t_wh_dep").as_deref(), Ok("2.0"));
}

/// `uv pip install --no-index --find-links wheels --no-deps --require-hashes -r lock` into
/// `target`: what a pod runs, no index anywhere.
fn uv_install(wheels: &Path, lock: &str, target: &Path) {
    let lock_file = wheels.parent().unwrap().join("requirements.lock");
    std::fs::write(&lock_file, lock).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(real_uv())
        .args([
            "pip",
            "install",
            "--no-config",
            "--python",
            "python3",
            "--no-index",
        ])
        .arg("--find-links")
        .arg(wheels)
        .args(["--no-deps", "--require-hashes", "--target"])
        .arg(target)
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("-r")
        .arg(&lock_file)
        .output()
        .unwrap();
    assert_ok(&out);
}

#[tokio::test]
async fn a_tampered_object_is_refused_naming_it_and_not_kept() {
    // A local version puts a `+` in the file name (and `%2B` in the index's link).
    let wheels = vec![
        Wheel::new("bifrost_t_wh_local", "1.0+cpu"),
        Wheel::new("bifrost_t_wh_dep", "2.0"),
    ];
    let index = Index::start(&wheels);
    let (text, sha) = lock_of(&index, &index.url(), &wheels);
    let (house, config, prefix) = house();
    let (_handle, stop) = running();
    house
        .fill(&text, &sha, &fetcher(&index), &stop)
        .await
        .unwrap();
    let fine = tempfile::tempdir().unwrap();
    house.download(&text, &sha, fine.path()).await.unwrap();
    let local = wheels[0].file_name();
    assert_eq!(
        std::fs::read(fine.path().join(&local)).unwrap(),
        std::fs::read(index.path_of(&wheels[0])).unwrap()
    );

    let name = wheels[1].file_name();
    let key = Key::from(format!("{prefix}/{sha}/{name}"));
    let (mut bytes, _) = object(&config, key.as_ref()).await.unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let (store, _) = raw(&config);
    store.put(&key, bytes.into()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let e = house.download(&text, &sha, dir.path()).await.unwrap_err();
    assert_eq!(e.reason(), "BadWheelhouse", "{e}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("not kept"),
        "{e}"
    );
    assert!(!dir.path().join(&name).exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "{left:?}"
    );
}

#[tokio::test]
async fn prune_removes_an_old_unkept_wheelhouse_and_keeps_kept_and_recent_ones() {
    let wheels = vec![
        Wheel::new("bifrost_t_wh_prune", "1.0"),
        Wheel::new("bifrost_t_wh_prune", "2.0"),
    ];
    let index = Index::start(&wheels);
    let (kept, kept_sha) = lock_of(&index, &index.url(), &wheels[..1]);
    let (old, old_sha) = lock_of(&index, &index.url(), &wheels[1..]);
    let (house, config, prefix) = house();
    let (_handle, stop) = running();
    for text in [&kept, &old] {
        house
            .fill(text, &content_hash(text), &fetcher(&index), &stop)
            .await
            .unwrap();
    }
    let keep: HashSet<String> = [kept_sha.clone()].into();

    let young = house.prune(&keep, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        (young.kept.clone(), young.recent.clone()),
        (vec![kept_sha.clone()], vec![old_sha.clone()])
    );
    assert!(young.removed.is_empty());

    let pruned = house.prune(&keep, Duration::ZERO).await.unwrap();
    assert_eq!(
        (pruned.removed.clone(), pruned.kept.clone()),
        (vec![old_sha.clone()], vec![kept_sha.clone()])
    );
    assert_eq!(house.manifest(&old_sha).await.unwrap(), None);
    assert!(house.manifest(&kept_sha).await.unwrap().is_some());
    let (store, _) = raw(&config);
    let folder = Key::from(format!("{prefix}/{old_sha}"));
    let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&folder)))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn wrong_credentials_are_a_clear_error_without_the_secret() {
    let server = shared();
    let secret = "not-the-secret-at-all-0123456789";
    let wrong = S3Config::new(common::s3::BUCKET)
        .with_endpoint(server.endpoint())
        .with_credentials(&server.writer.access_key_id, secret);
    let nobody = S3Config::new(common::s3::BUCKET)
        .with_endpoint(server.endpoint())
        .with_credentials(
            &server.nobody.access_key_id,
            &server.nobody.secret_access_key,
        );
    let sha = "a".repeat(64);
    for (config, secret, says) in [
        (&wrong, secret, "SignatureDoesNotMatch"),
        (
            &nobody,
            server.nobody.secret_access_key.as_str(),
            "AccessDenied",
        ),
    ] {
        let house = Wheelhouse::new(config, "tests/denied").unwrap();
        let e = house.manifest(&sha).await.unwrap_err();
        let message = e.to_string();
        assert_eq!(e.reason(), "AccessDenied", "{message}");
        assert!(message.contains(says), "{message}");
        assert!(
            message.contains(&format!("tests/denied/{sha}/{MANIFEST}")),
            "{message}"
        );
        assert!(!message.contains(secret), "{message}");
        assert!(!format!("{house:?}").contains(secret));
    }
}

#[tokio::test]
async fn a_large_wheel_goes_by_multipart_upload_and_a_private_index_by_its_credentials() {
    // 8 MiB of 6-bit characters, about 6 MiB once deflated: more than one 5 MiB part.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..8 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % 64) as usize])
        })
        .collect();
    let wheels =
        vec![Wheel::new("bifrost_t_wh_big", "1.0").extra(&format!("DATA = \"{noise}\"\n"))];
    let index = Index::start(&wheels);
    index.require_credentials("reader", "s3cret!");
    let url = index.url_with_credentials("reader", "s3cret!");
    let (text, sha) = lock_of(&index, &url, &wheels);
    let size = std::fs::metadata(index.path_of(&wheels[0])).unwrap().len();
    assert!(size > 5 * 1024 * 1024, "{size} bytes is one part");
    let (house, _, prefix) = house();
    let house = house.with_part_size(5 * 1024 * 1024);
    let (_handle, stop) = running();
    let fetcher = Fetcher::new(&[url], vec![], TIMEOUT).unwrap();
    let filled = house.fill(&text, &sha, &fetcher, &stop).await.unwrap();
    assert_eq!((filled.copied, filled.bytes_copied), (1, size));
    let key = format!("{prefix}/{sha}/{}", wheels[0].file_name());
    let requests = shared().requests_for(&key);
    let count = |method: &str| requests.iter().filter(|(m, _)| m == method).count();
    assert_eq!(
        (count("POST"), count("PUT")),
        (2, 2),
        "initiate, two parts, complete: {requests:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    house.download(&text, &sha, dir.path()).await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join(wheels[0].file_name())).unwrap(),
        std::fs::read(index.path_of(&wheels[0])).unwrap()
    );
}

//! Fill, download and prune as they should go.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

const ANY: &str = "goodpkg-1.0-py3-none-any.whl";
const WIN: &str = "goodpkg-1.0-py3-none-win_amd64.whl";
const OTHER_LINUX: &str = "other-2.0-py3-none-manylinux_2_28_x86_64.whl";
const OTHER_MAC: &str = "other-2.0-py3-none-macosx_11_0_arm64.whl";

/// An index serving goodpkg 1.0 on a PEP 691 page (hashes given) and other 2.0 on a plain
/// listing (no hashes), each with a file of another platform the lock does not pin.
struct World {
    index: Server,
    any: Vec<u8>,
    other: Vec<u8>,
    text: String,
    sha: String,
}

async fn world() -> World {
    let index = Server::start().await;
    let (any, win) = (b"any wheel".to_vec(), b"windows wheel".to_vec());
    let (other, mac) = (b"other linux".to_vec(), b"other mac".to_vec());
    let files = |name: &str| format!("{}files/{name}", index.url());
    index.json_page(
        "goodpkg",
        &[
            (WIN, &files(WIN), Some(&sha_hex(&win))),
            (ANY, &files(ANY), Some(&sha_hex(&any))),
            ("goodpkg-0.9-py3-none-any.whl", &files("old.whl"), None),
        ],
    );
    index.html_page(
        "other",
        &[
            &format!("../files/{OTHER_MAC}"),
            &format!("../files/{OTHER_LINUX}"),
        ],
    );
    for (name, bytes) in [
        (ANY, &any),
        (WIN, &win),
        (OTHER_LINUX, &other),
        (OTHER_MAC, &mac),
    ] {
        index.serve(
            &format!("/files/{name}"),
            "application/octet-stream",
            bytes.clone(),
        );
    }
    let (text, sha) = lock(
        &index.url(),
        &[
            ("goodpkg", "1.0", &[&sha_hex(&any)]),
            ("other", "2.0", &[&sha_hex(&other)]),
        ],
    );
    World {
        index,
        any,
        other,
        text,
        sha,
    }
}

#[tokio::test]
async fn a_fill_copies_the_pinned_files_then_the_manifest_and_a_second_copies_nothing() {
    let w = world().await;
    let house = house();
    let fetcher = fetcher(&w.index.url(), &[]);
    let (_handle, stop) = running();
    assert_eq!(house.manifest(&w.sha).await.unwrap(), None);

    let filled = house.fill(&w.text, &w.sha, &fetcher, &stop).await.unwrap();
    assert_eq!((filled.files, filled.copied, filled.reused), (2, 2, 0));
    assert_eq!(filled.bytes_copied, (w.any.len() + w.other.len()) as u64);
    let manifest = house.manifest(&w.sha).await.unwrap().expect("complete");
    let entries: Vec<(&str, &str, u64)> = manifest
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.sha256.as_str(), f.size))
        .collect();
    let (any_sha, other_sha) = (sha_hex(&w.any), sha_hex(&w.other));
    assert_eq!(
        entries,
        vec![
            (ANY, any_sha.as_str(), w.any.len() as u64),
            (OTHER_LINUX, other_sha.as_str(), w.other.len() as u64),
        ]
    );
    assert_eq!(stored_bytes(&house, &w.sha, ANY).await, Some(w.any.clone()));
    assert_eq!(
        objects(&house).await,
        [ANY, MANIFEST, OTHER_LINUX].map(|n| format!("wh/{}/{n}", w.sha))
    );
    // The page's hash keeps the Windows wheel from being fetched at all.
    assert_eq!(w.index.asked(&format!("/files/{WIN}")), 0);

    let before = w.index.seen().len();
    let again = house.fill(&w.text, &w.sha, &fetcher, &stop).await.unwrap();
    assert!(again.was_complete, "{again:?}");
    assert_eq!((again.files, again.copied, again.reused), (2, 0, 2));
    assert_eq!(
        w.index.seen().len(),
        before,
        "a complete wheelhouse asks nothing of the index"
    );
}

#[tokio::test]
async fn files_already_stored_are_not_copied_again() {
    let w = world().await;
    let house = house();
    let fetcher = fetcher(&w.index.url(), &[]);
    let (_handle, stop) = running();
    house.fill(&w.text, &w.sha, &fetcher, &stop).await.unwrap();
    house.forget(&w.sha).await.unwrap();

    let files_before = w
        .index
        .seen()
        .iter()
        .filter(|(p, _)| p.starts_with("/files/"))
        .count();
    let filled = house.fill(&w.text, &w.sha, &fetcher, &stop).await.unwrap();
    assert_eq!(
        (filled.files, filled.copied, filled.reused),
        (2, 0, 2),
        "{filled:?}"
    );
    let files_after = w
        .index
        .seen()
        .iter()
        .filter(|(p, _)| p.starts_with("/files/"))
        .count();
    assert_eq!(files_before, files_after, "no file was downloaded again");
    assert!(house.manifest(&w.sha).await.unwrap().is_some());
}

#[tokio::test]
async fn a_stored_file_with_other_bytes_is_copied_again() {
    let w = world().await;
    let house = house();
    // Left by someone else under the right name, without our metadata: read back, not pinned.
    put(&house, &w.sha, ANY, b"something else").await;
    let (_handle, stop) = running();
    let filled = house
        .fill(&w.text, &w.sha, &fetcher(&w.index.url(), &[]), &stop)
        .await
        .unwrap();
    assert_eq!((filled.copied, filled.reused), (2, 0));
    assert_eq!(stored_bytes(&house, &w.sha, ANY).await, Some(w.any.clone()));
}

#[tokio::test]
async fn a_download_checks_every_byte_and_keeps_nothing_that_differs() {
    let w = world().await;
    let house = house();
    let (_handle, stop) = running();
    let dir = tempfile::tempdir().unwrap();
    let e = house
        .download(&w.text, &w.sha, dir.path())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "WheelhouseIncomplete", "{e}");
    assert!(e.to_string().contains(&house.location(&w.sha)), "{e}");

    house
        .fill(&w.text, &w.sha, &fetcher(&w.index.url(), &[]), &stop)
        .await
        .unwrap();
    drop(w.index);
    let got = house.download(&w.text, &w.sha, dir.path()).await.unwrap();
    assert_eq!(
        got.files,
        vec![dir.path().join(ANY), dir.path().join(OTHER_LINUX)]
    );
    assert_eq!(got.bytes, (w.any.len() + w.other.len()) as u64);
    assert_eq!(std::fs::read(dir.path().join(ANY)).unwrap(), w.any);

    // Same size, one byte changed.
    let mut tampered = w.other.clone();
    tampered[0] ^= 1;
    put(&house, &w.sha, OTHER_LINUX, &tampered).await;
    let fresh = tempfile::tempdir().unwrap();
    let e = house
        .download(&w.text, &w.sha, fresh.path())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "BadWheelhouse", "{e}");
    assert!(e.to_string().contains(OTHER_LINUX), "{e}");
    assert!(e.to_string().contains(&sha_hex(&tampered)), "{e}");
    let left: Vec<String> = std::fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!left.iter().any(|n| n.contains("other")), "{left:?}");

    // Another size: refused before a byte is written.
    put(&house, &w.sha, OTHER_LINUX, b"short").await;
    let e = house
        .download(&w.text, &w.sha, fresh.path())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("5 bytes stored"), "{e}");
}

#[tokio::test]
async fn a_manifest_that_leaves_a_pin_without_a_file_is_refused_naming_it() {
    let w = world().await;
    let house = house();
    let (_handle, stop) = running();
    house
        .fill(&w.text, &w.sha, &fetcher(&w.index.url(), &[]), &stop)
        .await
        .unwrap();
    let mut manifest = house.manifest(&w.sha).await.unwrap().unwrap();
    manifest.files.retain(|f| f.name == ANY);
    put(&house, &w.sha, MANIFEST, &manifest.render()).await;
    let dir = tempfile::tempdir().unwrap();
    let e = house
        .download(&w.text, &w.sha, dir.path())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "BadWheelhouse", "{e}");
    assert!(e.to_string().contains("other==2.0"), "{e}");

    // The operator's next fill sees it is not complete and fills it again.
    let filled = house
        .fill(&w.text, &w.sha, &fetcher(&w.index.url(), &[]), &stop)
        .await
        .unwrap();
    assert!(!filled.was_complete);
    assert_eq!((filled.files, filled.copied), (2, 0));
    house.download(&w.text, &w.sha, dir.path()).await.unwrap();
}

#[tokio::test]
async fn large_files_go_by_multipart_upload_and_only_when_pinned() {
    let index = Server::start().await;
    let big: Vec<u8> = (0..40_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let url = format!("{}files/{ANY}", index.url());
    index.json_page("goodpkg", &[(ANY, &url, Some(&sha_hex(&big)))]);
    index.serve(
        &format!("/files/{ANY}"),
        "application/octet-stream",
        big.clone(),
    );
    let (text, sha) = lock(&index.url(), &[("goodpkg", "1.0", &[&sha_hex(&big)])]);
    let mut house = house();
    house.part_size = 16 * 1024;
    let (_handle, stop) = running();
    let fetcher = fetcher(&index.url(), &[]);
    house.fill(&text, &sha, &fetcher, &stop).await.unwrap();
    assert_eq!(stored_bytes(&house, &sha, ANY).await, Some(big.clone()));

    // Other bytes under the same name, on a page without hashes: the upload is aborted.
    let mut other = big.clone();
    other[100_000] ^= 1;
    index.html_page("goodpkg", &[&url]);
    index.serve(&format!("/files/{ANY}"), "application/octet-stream", other);
    let fresh = self::house();
    let e = fresh.fill(&text, &sha, &fetcher, &stop).await.unwrap_err();
    assert_eq!(e.reason(), "PackageIndexError", "{e}");
    assert!(e.to_string().contains("goodpkg==1.0"), "{e}");
    assert_eq!(objects(&fresh).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_stopped_fill_leaves_the_wheelhouse_incomplete() {
    let w = world().await;
    let house = house();
    let (handle, stop) = running();
    handle.stop();
    let e = house
        .fill(&w.text, &w.sha, &fetcher(&w.index.url(), &[]), &stop)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "WheelhouseIncomplete", "{e}");
    assert!(e.to_string().contains("stopped"), "{e}");
    assert_eq!(house.manifest(&w.sha).await.unwrap(), None);
}

#[tokio::test]
async fn prune_removes_unkept_folders_past_their_grace_manifest_first() {
    let house = house();
    let [a, b, c] = ["a", "b", "c"].map(|x| x.repeat(64));
    for sha in [&a, &b, &c] {
        put(&house, sha, ANY, b"x").await;
        put(&house, sha, MANIFEST, b"{}").await;
    }
    // Not a lock's folder: not ours.
    house
        .store
        .put(&"wh/notes/readme".into(), PutPayload::from_static(b"x"))
        .await
        .unwrap();
    let keep: HashSet<String> = [format!("sha256:{}", a.to_uppercase())].into();

    let recent = house.prune(&keep, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(recent.removed, Vec::<String>::new());
    assert_eq!(
        (recent.kept.clone(), recent.recent.clone()),
        (vec![a.clone()], vec![b.clone(), c.clone()])
    );

    let keep: HashSet<String> = [a.clone(), c.clone()].into();
    let pruned = house.prune(&keep, Duration::ZERO).await.unwrap();
    assert_eq!(pruned.removed, vec![b.clone()]);
    assert_eq!(pruned.kept, vec![a.clone(), c.clone()]);
    let left = objects(&house).await;
    assert!(!left.iter().any(|o| o.contains(&b)), "{left:?}");
    assert!(
        left.contains(&format!("wh/{a}/{ANY}")) && left.contains(&"wh/notes/readme".into()),
        "{left:?}"
    );
}

//! What others wrote, refused: prefixes, manifests, index pages, bytes, locks.

use super::*;

const ANY: &str = "goodpkg-1.0-py3-none-any.whl";

#[test]
fn prefixes_are_plain_key_folders_outside_bifrost_s_own() {
    for (given, want) in [
        (
            "bifrost-requirements/wheelhouse",
            "bifrost-requirements/wheelhouse",
        ),
        ("wh/", "wh"),
        ("a.b_c-d/e", "a.b_c-d/e"),
    ] {
        assert_eq!(layout::prefix(given).as_deref(), Ok(want), "{given}");
    }
    for (given, says) in [
        ("", "empty"),
        ("/", "empty"),
        ("/wh", "starts with '/'"),
        ("wh/../x", "\"..\" segment"),
        ("./wh", "\".\" segment"),
        ("wh//x", "empty segment"),
        ("wh x", "' '"),
        ("wh?x", "'?'"),
        ("wh\n", "'\\n'"),
        ("_repo/wh", "_repo/"),
        ("_repo", "_repo/"),
    ] {
        let e = layout::prefix(given).unwrap_err();
        assert!(e.contains(says), "{given:?}: {e}");
    }
    assert!(
        layout::prefix(&"a".repeat(257))
            .unwrap_err()
            .contains("over the limit")
    );
    let config = S3Config::new("bifrost-test").with_endpoint("http://127.0.0.1:9");
    let e = Wheelhouse::new(&config, "../up").unwrap_err();
    assert_eq!(e.reason(), "InvalidConfiguration");
    assert!(e.to_string().contains("\"../up\""), "{e}");
    let ok = Wheelhouse::new(&config, DEFAULT_PREFIX).unwrap();
    assert_eq!(
        ok.location(&"A".repeat(64)),
        format!("s3://bifrost-test/{DEFAULT_PREFIX}/{}/", "a".repeat(64))
    );
}

fn manifest_json(sha: &str, files: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"lockSha256": sha, "files": files, "writtenAt": "2026-01-02T03:04:05Z"})
        .to_string()
        .into_bytes()
}

#[test]
fn a_manifest_names_only_plain_files_with_whole_hashes() {
    let sha = "c".repeat(64);
    let good = manifest_json(
        &sha,
        serde_json::json!([{"name": ANY, "sha256": "A".repeat(64), "size": 3}]),
    );
    let m = Manifest::parse(&good, &sha).unwrap();
    assert_eq!(m.files[0].sha256, "a".repeat(64), "hashes are lowercased");
    assert_eq!(Manifest::parse(&m.render(), &sha).unwrap(), m);

    let entry =
        |name: &str, sha256: &str| serde_json::json!([{"name": name, "sha256": sha256, "size": 1}]);
    let hex = "d".repeat(64);
    for (files, says) in [
        (entry("../x.whl", &hex), "'/'"),
        (entry("/x.whl", &hex), "'/'"),
        (entry("a/b.whl", &hex), "'/'"),
        (entry("..", &hex), "starts with '.'"),
        (entry(".hidden.whl", &hex), "starts with '.'"),
        (entry("x\\y.whl", &hex), "'\\\\'"),
        (entry("x\u{0}.whl", &hex), "'\\0'"),
        (entry("manifest.json", &hex), "manifest's own name"),
        (entry("", &hex), "empty"),
        (entry(&"x".repeat(300), &hex), "over 255"),
        (entry(ANY, &"d".repeat(63)), "not 64 hex digits"),
        (entry(ANY, &"g".repeat(64)), "not 64 hex digits"),
        (
            entry(ANY, &format!("sha256:{}", "d".repeat(57))),
            "not 64 hex digits",
        ),
        (
            serde_json::json!([{"name": ANY, "sha256": hex, "size": 1}, {"name": ANY, "sha256": hex, "size": 1}]),
            "listed twice",
        ),
        (
            serde_json::json!([{"name": ANY, "sha256": hex, "size": 1u64 << 40}]),
            "over the limit",
        ),
        (
            serde_json::json!([{"name": ANY, "size": 1}]),
            "missing field `sha256`",
        ),
        (serde_json::json!({"a": 1}), "not a manifest"),
    ] {
        let e = Manifest::parse(&manifest_json(&sha, files.clone()), &sha).unwrap_err();
        assert!(e.contains(says), "{files}: {e}");
    }
    for (bytes, says) in [
        (b"not json".to_vec(), "not a manifest"),
        (b"".to_vec(), "not a manifest"),
        (
            manifest_json(&"e".repeat(64), serde_json::json!([])),
            "not of",
        ),
        (
            serde_json::json!({"lockSha256": sha, "files": [], "writtenAt": "yesterday"})
                .to_string()
                .into_bytes(),
            "writtenAt",
        ),
        (
            vec![b' '; MAX_MANIFEST_BYTES as usize + 1],
            "over the limit",
        ),
    ] {
        let e = Manifest::parse(&bytes, &sha).unwrap_err();
        assert!(
            e.contains(says),
            "{}: {e}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
    }
}

#[tokio::test]
async fn a_hostile_manifest_in_storage_is_an_error_naming_what_is_wrong() {
    let house = house();
    let sha = "c".repeat(64);
    let hex = "d".repeat(64);
    put(
        &house,
        &sha,
        MANIFEST,
        &manifest_json(
            &sha,
            serde_json::json!([{"name": "../../etc/x", "sha256": hex, "size": 1}]),
        ),
    )
    .await;
    let e = house.manifest(&sha).await.unwrap_err();
    assert_eq!(e.reason(), "BadWheelhouse", "{e}");
    assert!(
        e.to_string().contains("manifest.json") && e.to_string().contains("../../etc/x"),
        "{e}"
    );

    put(&house, &sha, MANIFEST, &vec![b' '; 2 * 1024 * 1024]).await;
    let e = house.manifest(&sha).await.unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");

    let e = house.manifest("not-a-sha").await.unwrap_err();
    assert_eq!(e.reason(), "InvalidConfiguration", "{e}");
}

#[tokio::test]
async fn index_links_to_other_origins_or_the_disk_are_refused_naming_them() {
    let index = Server::start().await;
    let elsewhere = Server::start().await;
    let bytes = b"wheel".to_vec();
    let (text, sha) = lock(&index.url(), &[("goodpkg", "1.0", &[&sha_hex(&bytes)])]);
    let house = house();
    let (_handle, stop) = running();
    let foreign = format!("{}files/{ANY}", elsewhere.url());
    elsewhere.serve(
        &format!("/files/{ANY}"),
        "application/octet-stream",
        bytes.clone(),
    );
    for (links, says) in [
        (
            vec![foreign.clone()],
            vec![foreign.as_str(), "another origin"],
        ),
        (vec![format!("file:///tmp/{ANY}")], vec!["file://", ANY]),
        (
            vec![
                format!("../files/evil-1.0-py3-none-any.whl"),
                format!("../files/goodpkg-1.1-py3-none-any.whl"),
            ],
            vec!["goodpkg==1.0", "no index lists a file of this release"],
        ),
    ] {
        let links: Vec<&str> = links.iter().map(String::as_str).collect();
        index.html_page("goodpkg", &links);
        let e = house
            .fill(&text, &sha, &fetcher(&index.url(), &[]), &stop)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "PackageIndexError", "{e}");
        for word in says {
            assert!(e.to_string().contains(word), "{word:?} not in {e}");
        }
    }
    assert_eq!(
        elsewhere.asked(&format!("/files/{ANY}")),
        0,
        "nothing was fetched elsewhere"
    );
    assert_eq!(objects(&house).await, Vec::<String>::new());

    // The same origin, allowed: fetched from there.
    index.html_page("goodpkg", &[&foreign]);
    let filled = house
        .fill(
            &text,
            &sha,
            &fetcher(&index.url(), &[elsewhere.origin()]),
            &stop,
        )
        .await
        .unwrap();
    assert_eq!(filled.copied, 1);
}

#[tokio::test]
async fn bytes_that_are_not_the_pinned_ones_are_refused_and_never_stored() {
    let index = Server::start().await;
    let (good, bad) = (b"the pinned wheel".to_vec(), b"a tampered wheel".to_vec());
    let url = format!("{}files/{ANY}", index.url());
    index.serve(
        &format!("/files/{ANY}"),
        "application/octet-stream",
        bad.clone(),
    );
    let (text, sha) = lock(&index.url(), &[("goodpkg", "1.0", &[&sha_hex(&good)])]);
    let house = house();
    let (_handle, stop) = running();
    let fetcher = fetcher(&index.url(), &[]);

    // The page says the pinned hash, the file is other bytes.
    index.json_page("goodpkg", &[(ANY, &url, Some(&sha_hex(&good)))]);
    let e = house.fill(&text, &sha, &fetcher, &stop).await.unwrap_err();
    assert_eq!(e.reason(), "PackageIndexError", "{e}");
    for word in [ANY, "refused, not stored", &sha_hex(&bad)] {
        assert!(e.to_string().contains(word), "{word:?} not in {e}");
    }
    // The page gives no hash: the bytes are not among the pin's.
    index.html_page("goodpkg", &[&url]);
    let e = house.fill(&text, &sha, &fetcher, &stop).await.unwrap_err();
    assert!(e.to_string().contains("none of the index's files"), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("{ANY} (sha256:{})", sha_hex(&bad))),
        "{e}"
    );
    assert_eq!(objects(&house).await, Vec::<String>::new());
}

#[tokio::test]
async fn index_credentials_go_to_its_origin_only_and_never_into_a_message() {
    let index = Server::start().await;
    let files = Server::start().await;
    let bytes = b"private wheel".to_vec();
    let with_credentials = format!("http://reader:s3cret%21@127.0.0.1:{}/", index.port);
    index.html_page("goodpkg", &[&format!("{}files/{ANY}", files.url())]);
    files.serve(
        &format!("/files/{ANY}"),
        "application/octet-stream",
        bytes.clone(),
    );
    let (text, sha) = lock(
        &with_credentials,
        &[("goodpkg", "1.0", &[&sha_hex(&bytes)])],
    );
    assert!(
        !text.contains("s3cret"),
        "the lock shows the index redacted"
    );
    let fetcher = Fetcher::new(
        std::slice::from_ref(&with_credentials),
        vec![files.origin()],
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(!format!("{fetcher:?}").contains("s3cret"));
    let (_handle, stop) = running();
    house().fill(&text, &sha, &fetcher, &stop).await.unwrap();
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("reader:s3cret!")
    );
    assert_eq!(index.seen(), vec![("/goodpkg/".to_string(), Some(basic))]);
    assert_eq!(files.seen(), vec![(format!("/files/{ANY}"), None)]);

    // A failure names the index, never its password.
    index.answer("/goodpkg/", 403, "text/plain", "s3cret! denied");
    let e = house()
        .fill(&text, &sha, &fetcher, &stop)
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("403") && message.contains("reader:***@"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn the_lock_must_be_the_one_named_and_read_from_its_own_indexes() {
    let index = Server::start().await;
    let (text, sha) = lock(&index.url(), &[("goodpkg", "1.0", &[&"a".repeat(64)])]);
    let house = house();
    let (_handle, stop) = running();
    let e = house
        .fill(&text, &"b".repeat(64), &fetcher(&index.url(), &[]), &stop)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the lock named"), "{e}");
    let e = house
        .fill(
            &text,
            &sha,
            &fetcher("http://127.0.0.1:9/simple/", &[]),
            &stop,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the lock's own indexes"), "{e}");
    let (unhashed, unhashed_sha) = lock(&index.url(), &[("goodpkg", "1.0", &[])]);
    let e = house
        .fill(&unhashed, &unhashed_sha, &fetcher(&index.url(), &[]), &stop)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pins no sha256 hash"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = house
        .download(
            "not a lock",
            &crate::requirements::content_hash("not a lock"),
            dir.path(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "InvalidContent", "{e}");
}

#[tokio::test]
async fn an_unreachable_index_says_so_and_a_fetcher_takes_only_http_indexes() {
    let (text, sha) = lock(
        "http://127.0.0.1:9/",
        &[("goodpkg", "1.0", &[&"a".repeat(64)])],
    );
    let (_handle, stop) = running();
    let e = house()
        .fill(&text, &sha, &fetcher("http://127.0.0.1:9/", &[]), &stop)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "IndexUnreachable", "{e}");
    for bad in [
        "file:///srv/simple",
        "ftp://x/",
        "http://x/simple?token=1",
        "not a url",
    ] {
        let e = Fetcher::new(
            &[bad.to_string()],
            vec![],
            std::time::Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "InvalidConfiguration", "{bad}: {e}");
    }
    assert!(Fetcher::new(&[], vec![], std::time::Duration::from_secs(1)).is_err());
}

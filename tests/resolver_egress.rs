//! No fetch past the allow-list, resolver side: uv resolves through the operator's own proxy
//! (`bifrost_requirements::egress`), which forwards only to the index URLs it was given. An
//! allowed index that redirects (301/302/307/308) to a second index on another port leads
//! nowhere: `requirements show --lock` fails naming the refused request, and the second index
//! sees no request. Through the same proxy, an allowed index resolves as before. Real uv, a real
//! PostgreSQL for the stored requirements.txt, indexes on loopback.

mod common;

use common::index::{Index, normalize, path_with_real_uv};
use common::lock_world::database_holding;
use common::redirect::Redirector;
use common::wheels::Wheel;
use common::{assert_ok, cli, stderr, stdout};

const GOOD: &str = "bifrost_t_egress";

fn show_lock(db_url: &str, index_url: &str, cache: &std::path::Path) -> std::process::Output {
    show_lock_trusting(db_url, index_url, cache, None)
}

/// [`show_lock`] by an operator whose environment trusts `ca` (`SSL_CERT_FILE`).
fn show_lock_trusting(
    db_url: &str,
    index_url: &str,
    cache: &std::path::Path,
    ca: Option<&std::path::Path>,
) -> std::process::Output {
    let path = path_with_real_uv();
    let args = common::index::show_lock_args(index_url, cache);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ca = ca.map(|c| c.to_str().expect("utf-8 path").to_string());
    let mut env = vec![("DATABASE_URL", db_url), ("PATH", path.as_str())];
    if let Some(ca) = &ca {
        env.push(("SSL_CERT_FILE", ca));
    }
    cli(&args, &env)
}

#[tokio::test]
async fn an_index_cannot_lead_the_resolver_to_another_origin() {
    let db_url = database_holding(&format!("{GOOD}==1.0\n")).await;
    let elsewhere = Index::start(&[Wheel::new(GOOD, "1.0")]);
    let dir = tempfile::tempdir().unwrap();

    // The other index itself is fine: allowed, it resolves through the proxy.
    let direct = show_lock(&db_url, &elsewhere.url(), &dir.path().join("direct"));
    assert_ok(&direct);
    assert!(
        stdout(&direct).contains(&format!("{}==1.0", normalize(GOOD))),
        "{}",
        stdout(&direct)
    );
    let fetched = elsewhere.log().lines().count();
    assert!(fetched > 0, "the allowed index was not asked");

    for status in [301, 302, 307, 308] {
        let redirector = Redirector::start(status, elsewhere.url().trim_end_matches('/'));
        let cache = dir.path().join(format!("cache-{status}"));
        let out = show_lock(&db_url, &format!("{}/", redirector.url()), &cache);
        let err = stderr(&out);
        assert!(!out.status.success(), "{status}: {}", stdout(&out));
        assert!(err.contains("not among its index URLs"), "{status}: {err}");
        assert!(
            err.contains(elsewhere.url().trim_end_matches('/')),
            "{status}: {err}"
        );
        assert!(
            redirector.requests() > 0,
            "{status}: the allowed index was never asked"
        );
        assert_eq!(
            elsewhere.log().lines().count(),
            fetched,
            "{status}: the other index was asked:\n{}",
            elsewhere.log()
        );
    }
}

/// uv reads a `file://` link of an index page from the operator's own disk (no request is
/// made): through the proxy, an index page with such a link is refused, and the resolution
/// fails naming it instead of locking that file.
#[tokio::test]
async fn an_index_page_cannot_point_the_resolver_at_a_local_file() {
    let index = Index::start(&[]);
    a_page_linking_to_a_local_file_is_refused(&index, None).await;
}

/// The same page over HTTPS: the proxy ends uv's TLS with a CA of its own and reads the page.
#[tokio::test]
async fn an_https_index_page_cannot_point_the_resolver_at_a_local_file() {
    let index = Index::start_https(&[]);
    a_page_linking_to_a_local_file_is_refused(&index, Some(&index.ca_file())).await;
}

async fn a_page_linking_to_a_local_file_is_refused(index: &Index, ca: Option<&std::path::Path>) {
    const LOCAL: &str = "bifrost_t_local";
    let db_url = database_holding(&format!("{LOCAL}==1.0\n")).await;
    let disk = tempfile::tempdir().unwrap();
    let wheel = Wheel::new(LOCAL, "1.0").build(disk.path());
    let project = index.root().join(normalize(LOCAL));
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("index.html"),
        format!(
            "<html><body><a href=\"file://{}\">{}</a></body></html>\n",
            wheel.display(),
            wheel.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = show_lock_trusting(&db_url, &index.url(), &dir.path().join("cache"), ca);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "the local file was locked: {}",
        stdout(&out)
    );
    assert!(err.contains("file://"), "{err}");
    assert!(err.contains(&normalize(LOCAL)), "the page is named: {err}");
    assert!(
        index.log().contains(&format!("/{}/", normalize(LOCAL))),
        "the page was fetched from the index:\n{}",
        index.log()
    );
}

/// An HTTPS index resolves through the proxy that reads inside its TLS: uv trusts the proxy's
/// CA, the proxy checks the index against what the operator trusts. An index the operator does
/// not trust is not reached past its handshake, whatever uv would have said.
#[tokio::test]
async fn an_https_index_resolves_when_the_operator_trusts_it() {
    const NAME: &str = "bifrost_t_tls";
    let db_url = database_holding(&format!("{NAME}==1.0\n")).await;
    let index = Index::start_https(&[Wheel::new(NAME, "1.0")]);
    let dir = tempfile::tempdir().unwrap();

    let out = show_lock_trusting(
        &db_url,
        &index.url(),
        &dir.path().join("a"),
        Some(&index.ca_file()),
    );
    assert_ok(&out);
    let hash = index.sha256(&Wheel::new(NAME, "1.0"));
    assert!(
        stdout(&out).contains(&format!("{}==1.0", normalize(NAME))) && stdout(&out).contains(&hash),
        "{}",
        stdout(&out)
    );
    assert!(
        index.log().contains(".whl"),
        "the wheel came from the index:\n{}",
        index.log()
    );

    let before = index.log().lines().filter(|l| l.contains("GET")).count();
    let untrusted = show_lock(&db_url, &index.url(), &dir.path().join("b"));
    assert!(!untrusted.status.success(), "{}", stdout(&untrusted));
    assert_eq!(
        index.log().lines().filter(|l| l.contains("GET")).count(),
        before,
        "an index the operator does not trust was asked:\n{}",
        index.log()
    );
}

use super::*;

fn base() -> Url {
    Url::parse("http://127.0.0.1:8080/simple/goodpkg/").unwrap()
}

#[test]
fn html_anchors_resolve_against_the_page_with_their_hashes() {
    let sha = "a".repeat(64);
    let html = format!(
        "<!DOCTYPE html><html><body>\n\
         <a href=\"goodpkg-1.0-py3-none-any.whl#sha256={sha}\">goodpkg-1.0-py3-none-any.whl</a>\n\
         <A HREF='../../files/goodpkg-1.0.tar.gz#md5=00' data-requires-python=\"&gt;=3.8\">x</A>\n\
         <a\thref=https://files.example/g/goodpkg-1.1-py3-none-any.whl>y</a>\n\
         <a data-x=\"1 > 0\" href=\"goodpkg-1.2-py3-none-any.whl?a=1&amp;b=2\">z</a>\n\
         <abbr href=\"not-a-link.whl\">no</abbr><a>no href</a>\n\
         </body></html>"
    );
    let files = files(html.as_bytes(), "text/html; charset=utf-8", &base()).unwrap();
    let got: Vec<(&str, String, Option<&str>)> = files
        .iter()
        .map(|f| {
            let url = f.url.as_ref().unwrap().to_string();
            (f.name.as_str(), url, f.sha256.as_deref())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "goodpkg-1.0-py3-none-any.whl",
                format!(
                    "http://127.0.0.1:8080/simple/goodpkg/goodpkg-1.0-py3-none-any.whl#sha256={sha}"
                ),
                Some(sha.as_str())
            ),
            (
                "goodpkg-1.0.tar.gz",
                "http://127.0.0.1:8080/files/goodpkg-1.0.tar.gz#md5=00".into(),
                None
            ),
            (
                "goodpkg-1.1-py3-none-any.whl",
                "https://files.example/g/goodpkg-1.1-py3-none-any.whl".into(),
                None
            ),
            (
                "goodpkg-1.2-py3-none-any.whl",
                "http://127.0.0.1:8080/simple/goodpkg/goodpkg-1.2-py3-none-any.whl?a=1&b=2".into(),
                None
            ),
        ]
    );
}

#[test]
fn a_folder_listing_percent_encodes_and_a_file_link_is_kept_for_the_caller_to_refuse() {
    let html = "<ul><li><a href=\"my%2Bpkg-1.0-py3-none-any.whl\">my+pkg</a></li>\
                <li><a href=\"file:///etc/goodpkg-1.0-py3-none-any.whl\">f</a></li></ul>";
    let files = files(html.as_bytes(), "text/html", &base()).unwrap();
    assert_eq!(files[0].name, "my+pkg-1.0-py3-none-any.whl");
    assert_eq!(files[1].name, "goodpkg-1.0-py3-none-any.whl");
    assert_eq!(files[1].url.as_ref().unwrap().scheme(), "file");
}

#[test]
fn pep_691_json_gives_names_urls_and_hashes() {
    let sha = "B".repeat(64);
    let json = format!(
        r#"{{"meta": {{"api-version": "1.1"}}, "name": "goodpkg", "files": [
            {{"filename": "goodpkg-1.0-py3-none-any.whl", "url": "https://files.example/x/goodpkg-1.0-py3-none-any.whl",
              "hashes": {{"sha256": "{sha}"}}, "yanked": false}},
            {{"filename": "goodpkg-1.0.tar.gz", "url": "../../f/goodpkg-1.0.tar.gz", "hashes": {{"sha256": "short"}}}},
            {{"filename": "goodpkg-0.9.tar.gz", "url": "goodpkg-0.9.tar.gz"}}
        ]}}"#
    );
    let files = files(
        json.as_bytes(),
        "application/vnd.pypi.simple.v1+json",
        &base(),
    )
    .unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[0].sha256.as_deref(), Some("b".repeat(64).as_str()));
    assert_eq!(files[1].sha256, None, "a malformed hash is no hash");
    assert_eq!(
        files[1].url.as_ref().unwrap().as_str(),
        "http://127.0.0.1:8080/f/goodpkg-1.0.tar.gz"
    );
    let e = super::files(
        b"{\"files\": 3}",
        "application/vnd.pypi.simple.v1+json",
        &base(),
    )
    .unwrap_err();
    assert!(e.contains("not PEP 691 JSON"), "{e}");
}

#[test]
fn entities_decode_and_broken_ones_stay() {
    assert_eq!(unescape("a&amp;b&#38;c&#x26;d&lt;"), "a&b&c&d<");
    assert_eq!(unescape("a&b;c&bogus;&"), "a&b;c&bogus;&");
    assert_eq!(unescape("&#xD800;ü&"), "&#xD800;ü&");
}

#[test]
fn hostile_markup_never_panics() {
    for html in [
        "<a",
        "<a ",
        "<a href",
        "<a href=",
        "<a href='",
        "<a href=\"x",
        "<a\u{e9} href=x>",
        "<a href=é>",
    ] {
        let _ = files(html.as_bytes(), "text/html", &base());
    }
    assert_eq!(hrefs("<a href=é>"), vec!["é".to_string()]);
}

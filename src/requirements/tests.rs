use super::*;

#[test]
fn hash_matches_python_hashlib() {
    // Values printed by python3: hashlib.sha256(s.encode()).hexdigest()
    assert_eq!(
        content_hash("requests==2.32.3\n"),
        "4b8183101fd19f071771805a42a31fbb234a7961921fdb8b783a279755a1b5d5"
    );
    assert_eq!(
        content_hash("é\r\n"),
        "64da669b12bbeda0ca8f2840891bd8834e5b8206f24c7703e20ac1d472612b0e"
    );
    assert_eq!(
        content_hash(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn prefixed_hashes_compare_equal() {
    let h = content_hash("x");
    assert!(hashes_equal(&format!("sha256:{h}"), &h));
    assert!(hashes_equal(&h.to_uppercase(), &h));
    assert!(hash_matches("x", &format!("sha256:{h}")));
    assert!(!hash_matches("y", &h));
}

#[test]
fn each_requirement_alone_keeps_every_option_line_and_its_own_hashes() {
    let file = RequirementsFile::parse(
        "# tools\n--index-url https://idx.example/simple\nFlask_Login==0.6 --hash=sha256:aa\n\
         --only-binary :all:\nrequests>=2  # http\n",
    );
    let each = file.installer_texts_each();
    let names: Vec<_> = each.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["flask-login", "requests"]);
    assert_eq!(each[0].spec, "Flask_Login==0.6");
    assert_eq!(
        each[0].text,
        "--index-url=https://idx.example/simple\nFlask_Login==0.6 --hash=sha256:aa\n\
         --only-binary=:all:\n"
    );
    assert_eq!(
        each[1].text,
        "--index-url=https://idx.example/simple\n--only-binary=:all:\nrequests>=2\n"
    );
    assert!(
        RequirementsFile::parse("# none\n-i https://x/\n")
            .installer_texts_each()
            .is_empty()
    );
}

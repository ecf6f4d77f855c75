use super::*;
use crate::lock::entries;

fn pins(body: &str) -> Vec<Pinned> {
    entries::parse(body).unwrap()
}

const REAL: &str = "dd";
const OTHER: &str = "cc";

fn h(byte: &str) -> String {
    format!("sha256:{}", byte.repeat(32))
}

fn lock_with(byte: &str) -> Vec<Pinned> {
    pins(&format!(
        "evil==1.0 \\\n    --hash={}\n    # via goodpkg\ngoodpkg==1.0 \\\n    --hash={}\n    # via -r requirements.txt\n",
        h("ee"),
        h(byte)
    ))
}

#[test]
fn a_locked_hash_among_the_users_passes() {
    let content = RequirementsFile::parse(&format!("goodpkg==1.0 --hash={}\n", h(REAL)));
    assert_eq!(check(&content, &lock_with(REAL)), Ok(()));
    // Upper case and the `--hash algo:hex` spelling are the same pin.
    let spaced = format!(
        "goodpkg==1.0 --hash {}\n",
        h(REAL).to_uppercase().replace("SHA256", "sha256")
    );
    assert_eq!(
        check(&RequirementsFile::parse(&spaced), &lock_with(REAL)),
        Ok(())
    );
}

#[test]
fn an_index_file_the_user_did_not_pin_is_refused_naming_the_line_and_its_hash() {
    let content = RequirementsFile::parse(&format!(
        "# pinned\ngoodpkg==1.0 --hash={}  # the real wheel\n",
        h(REAL)
    ));
    let err = check(&content, &lock_with(OTHER)).unwrap_err();
    assert!(
        err.starts_with(&format!("line 2: `goodpkg==1.0 --hash={}`", h(REAL))),
        "{err}"
    );
    assert!(
        err.contains(&format!("the index's goodpkg==1.0 has {}", h(OTHER))),
        "{err}"
    );
}

#[test]
fn every_locked_file_must_be_pinned_not_just_one() {
    let content = RequirementsFile::parse(&format!("goodpkg==1.0 --hash={}\n", h(REAL)));
    let both = pins(&format!(
        "goodpkg==1.0 \\\n    --hash={} \\\n    --hash={}\n    # via -r requirements.txt\n",
        h(REAL),
        h(OTHER)
    ));
    let err = check(&content, &both).unwrap_err();
    assert!(
        err.contains(&h(OTHER)) && !err.contains(&format!("has {}", h(REAL))),
        "{err}"
    );
    let all = RequirementsFile::parse(&format!(
        "goodpkg==1.0 --hash={} --hash={}\n",
        h(OTHER),
        h(REAL)
    ));
    assert_eq!(check(&all, &both), Ok(()));
}

#[test]
fn unhashed_requirements_and_absent_pins_constrain_nothing() {
    let content = RequirementsFile::parse(&format!(
        "goodpkg==1.0\nwinonly==1.0 ; sys_platform == 'win32' --hash={}\n",
        h(REAL)
    ));
    assert_eq!(check(&content, &lock_with(OTHER)), Ok(()));
}

#[test]
fn a_pin_without_hashes_does_not_keep_a_users_pin() {
    let content = RequirementsFile::parse(&format!("goodpkg==1.0 --hash={}\n", h(REAL)));
    let err = check(&content, &pins("goodpkg==1.0\n")).unwrap_err();
    assert!(
        err.contains("the lock records no hash for goodpkg==1.0"),
        "{err}"
    );
}

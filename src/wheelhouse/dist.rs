//! Which project and version a distribution file is, from its name alone: an index page lists
//! every release of a project (and a hostile one may list other projects' files), a pin wants
//! one version of one project.

use std::str::FromStr;

use pep508_rs::pep440_rs::Version;

use crate::requirements::normalize_name;

/// The extensions of files a pin can be installed from: wheels and the sdists pip and uv build.
const SDIST_SUFFIXES: [&str; 2] = [".tar.gz", ".zip"];

/// Whether `file` is a distribution of project `name` (normalized) at `version`: a wheel
/// `name-version(-build)?-py-abi-platform.whl` or an sdist `name-version.tar.gz` / `.zip` (whose
/// name may hold `-`: every split is tried). Versions compare as PEP 440 says (`1.0` is `1.0.0`).
pub(super) fn is_file_of(file: &str, name: &str, version: &Version) -> bool {
    if let Some(stem) = file.strip_suffix(".whl") {
        let parts: Vec<&str> = stem.split('-').collect();
        return matches!(parts.len(), 5 | 6)
            && same_name(parts[0], name)
            && same_version(parts[1], version);
    }
    let Some(stem) = SDIST_SUFFIXES.iter().find_map(|s| file.strip_suffix(s)) else {
        return false;
    };
    stem.match_indices('-')
        .any(|(at, _)| same_name(&stem[..at], name) && same_version(&stem[at + 1..], version))
}

fn same_name(given: &str, normalized: &str) -> bool {
    normalize_name(given).is_ok_and(|n| n == normalized)
}

fn same_version(given: &str, version: &Version) -> bool {
    Version::from_str(given).is_ok_and(|v| &v == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::from_str(s).unwrap()
    }

    #[test]
    fn wheels_and_sdists_of_the_pinned_release_only() {
        let one = v("1.0");
        for file in [
            "goodpkg-1.0-py3-none-any.whl",
            "GoodPkg-1.0.0-py3-none-any.whl",
            "goodpkg-1.0-1build-cp311-cp311-manylinux_2_28_x86_64.whl",
            "goodpkg-1.0.tar.gz",
            "goodpkg-1.0.zip",
        ] {
            assert!(is_file_of(file, "goodpkg", &one), "{file}");
        }
        assert!(is_file_of(
            "my_pkg-2.1-py3-none-any.whl",
            "my-pkg",
            &v("2.1")
        ));
        assert!(is_file_of("my-pkg-2.1.tar.gz", "my-pkg", &v("2.1")));
        for file in [
            "goodpkg-1.1-py3-none-any.whl",
            "evil-1.0-py3-none-any.whl",
            "goodpkg2-1.0-py3-none-any.whl",
            "goodpkg-1.0-py3-any.whl",
            "goodpkg-1.0.egg",
            "goodpkg-1.0.tar.bz2",
            "goodpkg-1.0",
            "",
            "-1.0.tar.gz",
            "goodpkg-.tar.gz",
        ] {
            assert!(!is_file_of(file, "goodpkg", &one), "{file}");
        }
    }
}

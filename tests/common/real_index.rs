//! A folder of downloaded distributions (a real package set, `real_packages.rs`) served as a
//! PEP 503 index by the same server as the tests' own wheels (`index.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use super::index::Index;
use super::real_packages::{project_of, sha256sums};

impl Index {
    /// An index of the distributions in `dir` (a flat folder, as `pip download` writes it),
    /// listening on `host` (127.0.0.1, or the node bridge's 10.244.0.1 for pods).
    ///
    /// Each file is symlinked into its project's folder, so serving 300 MB copies nothing, and
    /// each project page lists its files with `#sha256=` as PyPI's pages do, from the folder's
    /// `SHA256SUMS` when it has one (a resolver then hashes nothing it does not download).
    pub fn serve_dir(host: &str, dir: &Path) -> Index {
        let index = Index::start_on(host, &[]);
        let sums = sha256sums(dir);
        let mut projects: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let name = entry.expect("a folder entry").file_name();
            let name = name.to_str().expect("a UTF-8 file name").to_string();
            if [".whl", ".tar.gz", ".zip"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                projects.entry(project_of(&name)).or_default().push(name);
            }
        }
        assert!(
            !projects.is_empty(),
            "{} holds no distribution",
            dir.display()
        );
        for (project, mut files) in projects {
            let folder = index.root().join(&project);
            std::fs::create_dir_all(&folder).expect("create the project folder");
            files.sort();
            for file in &files {
                std::os::unix::fs::symlink(dir.join(file), folder.join(file))
                    .unwrap_or_else(|e| panic!("link {file} into the index: {e}"));
            }
            if files.iter().all(|f| sums.contains_key(f)) {
                let links: String = files
                    .iter()
                    .map(|f| format!("<a href=\"{f}#sha256={}\">{f}</a><br>\n", sums[f]))
                    .collect();
                let page = format!("<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n");
                std::fs::write(folder.join("index.html"), page).expect("write the project page");
            }
        }
        index
    }
}

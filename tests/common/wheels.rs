//! Tiny real wheels, built in the test, so installs need no package index.
//!
//! A wheel is a zip holding the module and a `.dist-info` folder with `METADATA`, `WHEEL` and
//! `RECORD` (each file's urlsafe-base64 SHA-256 and size). Install them with
//! `--no-index --find-links <dir>`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One pure-Python wheel: module `name` with `VERSION = "<version>"`.
#[derive(Debug, Clone)]
pub struct Wheel {
    pub name: String,
    pub version: String,
    pub requires: Vec<String>,
    /// The compatibility tag of its file name and `WHEEL` (`py3-none-any` unless set).
    pub tag: String,
    /// Python appended to the module after `VERSION` (another body, same file name).
    pub extra: String,
}

impl Wheel {
    pub fn new(name: &str, version: &str) -> Self {
        Wheel {
            name: name.into(),
            version: version.into(),
            requires: Vec::new(),
            tag: "py3-none-any".into(),
            extra: String::new(),
        }
    }

    /// Another compatibility tag, e.g. `py3-none-win_amd64` (a wheel no Linux worker can use).
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }

    /// Append `code` to the module: the same file name with other bytes (a tampered wheel).
    pub fn extra(mut self, code: &str) -> Self {
        self.extra.push_str(code);
        self
    }

    /// `<name>-<version>-<tag>.whl`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.whl", self.name, self.version, self.tag)
    }

    /// Add a `Requires-Dist` (a PEP 508 requirement).
    pub fn requires(mut self, req: &str) -> Self {
        self.requires.push(req.into());
        self
    }

    /// Write [`Self::file_name`] into `dir`; returns its path.
    pub fn build(&self, dir: &Path) -> PathBuf {
        let dist_info = format!("{}-{}.dist-info", self.name, self.version);
        let mut metadata = format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\nSummary: bifrost-requirements test wheel\n",
            self.name, self.version
        );
        for r in &self.requires {
            metadata.push_str(&format!("Requires-Dist: {r}\n"));
        }
        let files: Vec<(String, String)> = vec![
            (
                format!("{}/__init__.py", self.name),
                format!("VERSION = \"{}\"\n{}", self.version, self.extra),
            ),
            (format!("{dist_info}/METADATA"), metadata),
            (
                format!("{dist_info}/WHEEL"),
                format!(
                    "Wheel-Version: 1.0\nGenerator: bifrost-requirements-tests\nRoot-Is-Purelib: true\nTag: {}\n",
                    self.tag
                ),
            ),
        ];
        let mut record = String::new();
        for (path, body) in &files {
            record.push_str(&format!(
                "{path},sha256={},{}\n",
                urlsafe_b64_nopad(&Sha256::digest(body.as_bytes())),
                body.len()
            ));
        }
        record.push_str(&format!("{dist_info}/RECORD,,\n"));

        let path = dir.join(self.file_name());
        let file = std::fs::File::create(&path).expect("create wheel");
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in files
            .iter()
            .chain(std::iter::once(&(format!("{dist_info}/RECORD"), record)))
        {
            zip.start_file(name.as_str(), options).expect("zip entry");
            zip.write_all(body.as_bytes()).expect("zip write");
        }
        zip.finish().expect("finish wheel");
        path
    }
}

/// A folder of wheels: the test's private "index" for `--find-links`.
pub struct Wheelhouse {
    dir: tempfile::TempDir,
}

impl Wheelhouse {
    pub fn new(wheels: &[Wheel]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bifrost-wheels-")
            .tempdir()
            .expect("tempdir");
        for w in wheels {
            w.build(dir.path());
        }
        Wheelhouse { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }
}

/// A source distribution `<name>-1.0.tar.gz` written into `dir`: PKG-INFO, `pyproject` as its
/// pyproject.toml and `files` (name, text) beside them; returns its path.
pub fn sdist(dir: &Path, name: &str, pyproject: &str, files: &[(&str, &str)]) -> PathBuf {
    let src = tempfile::tempdir().expect("tempdir");
    let folder = format!("{name}-1.0");
    let root = src.path().join(&folder);
    std::fs::create_dir(&root).expect("sdist folder");
    let pkg_info = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
    let all = [
        ("PKG-INFO", pkg_info.as_str()),
        ("pyproject.toml", pyproject),
    ];
    for (file, text) in all.iter().chain(files) {
        std::fs::write(root.join(file), text).expect("sdist file");
    }
    let archive = dir.join(format!("{folder}.tar.gz"));
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(src.path())
        .arg("-czf")
        .arg(&archive)
        .arg(&folder)
        .status()
        .expect("run tar");
    assert!(st.success(), "tar");
    archive
}

/// `import module; print(module.VERSION)` with `PYTHONPATH=target`, as a worker would: the
/// version of the test wheel it imports, or python's error.
pub fn import(target: &Path, module: &str) -> Result<String, String> {
    let out = std::process::Command::new("python3")
        .args([
            "-s",
            "-c",
            &format!("import {module}; print({module}.VERSION)"),
        ])
        .env("PYTHONPATH", target)
        .output()
        .expect("run python3");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `base64.urlsafe_b64encode(bytes).rstrip(b"=")`, as RECORD wants it.
fn urlsafe_b64_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out
}

//! Steps the S3 CLI tests take on [`super::s3::World`]: an object put the way Bifrost does, and
//! `requirements set --file` of a file holding given text.
#![allow(dead_code)]

use std::process::Output;

use super::s3::{World, bifrost_put};

impl World {
    /// A fresh world whose object holds `bytes`, put the way Bifrost does.
    pub async fn holding(bytes: &[u8]) -> World {
        let w = World::new();
        bifrost_put(&w.s3, bytes).await;
        w
    }

    /// `requirements set --file F`, F a file holding `content`.
    pub fn set_file(&self, content: &str) -> Output {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("requirements.txt");
        std::fs::write(&file, content).unwrap();
        self.run(
            &["requirements", "set", "--file", file.to_str().unwrap()],
            &[],
        )
    }
}

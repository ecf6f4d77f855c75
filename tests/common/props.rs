//! Generated-input tests: seeds are fixed (and printed) so a failure reproduces.
#![allow(dead_code)]

use proptest::test_runner::{Config, RngSeed, TestRunner};

/// A runner of `cases` cases from `seed`, announced as `what`.
pub fn runner(cases: u32, seed: u64, what: &str) -> TestRunner {
    eprintln!("{what}: {cases} cases, seed {seed}");
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    })
}

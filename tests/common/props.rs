//! Generated inputs with proptest: one runner, seeds fixed and printed.
#![allow(dead_code)]

use proptest::strategy::Just;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// A runner of `cases` cases from `seed`, announced as `what`. Seeds are fixed (and printed) so a
/// failure reproduces; every crasher becomes a named case.
pub fn runner(cases: u32, seed: u64, what: &str) -> TestRunner {
    eprintln!("{what}: {cases} cases, seed {seed}");
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    })
}

/// The one string `s`, as a strategy of `String`s (`Just(s.to_string())`).
pub fn just(s: &'static str) -> Just<String> {
    Just(s.to_string())
}

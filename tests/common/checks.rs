//! What a finished command said: its exit code and the words its stderr must hold. One home for
//! the `assert_eq!(code, ..); assert!(stderr.contains(..))` pair the CLI tests repeat.
#![allow(dead_code)]

use std::process::Output;

use super::stderr;

/// Every one of `words` is in `out`'s stderr.
#[track_caller]
pub fn assert_says(out: &Output, words: &[&str]) {
    let err = stderr(out);
    for word in words {
        assert!(err.contains(word), "{word:?} not in stderr:\n{err}");
    }
}

/// `out` exited with `code` and its stderr holds every one of `words`.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32, words: &[&str]) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    assert_says(out, words);
}

/// The strings of a JSON array (panics on anything else).
pub fn strings(list: &serde_json::Value) -> Vec<&str> {
    let list = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    list.iter().map(|s| s.as_str().unwrap()).collect()
}

/// The `field` of each object of a JSON array, as strings.
pub fn fields<'a>(list: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    let list = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    list.iter().map(|o| o[field].as_str().unwrap()).collect()
}

/// `out` succeeded (its streams shown when not) and its stderr holds every one of `words`.
#[track_caller]
pub fn assert_ok_says(out: &Output, words: &[&str]) {
    super::assert_ok(out);
    assert_says(out, words);
}

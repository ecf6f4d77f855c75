//! The CLI mends the S3 object it refuses to read (issue 26): an object that is not UTF-8, or is
//! over the content limit (256 KiB) or the 1 MiB an S3 read takes. `requirements set` replaces
//! it whole; `requirements remove` takes the named packages' lines out of its bytes and writes
//! the rest byte for byte, only when that is a file `set` would accept; `requirements add`
//! refuses it. Every refusal names what is wrong and where, and the command that mends it, and
//! leaves the object byte for byte (same ETag) and Redis as they were. The real binary against
//! moto (credentials enforced) and a real Redis.

mod common;

use std::process::Output;

use bifrost_requirements::limit::{MAX_CONTENT_BYTES, exceeded};
use bifrost_requirements::s3::{MAX_MEND_BYTES, MAX_OBJECT_BYTES};
use common::checks::{assert_exit, assert_ok_says};
use common::s3::{World, bifrost_put, stored};
use common::{assert_ok, stderr};

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// `requirements COMMAND` (its words split at spaces) failed with `code`, wrote nothing (the
/// object has the same bytes and ETag) and left Redis alone; its message holds every one of
/// `words`.
async fn refused(w: &World, command: &str, code_: i32, words: &[&str]) -> String {
    let before = stored(&w.s3).await;
    let args: Vec<&str> = std::iter::once("requirements")
        .chain(command.split(' '))
        .collect();
    let out = w.run(&args, &[]);
    let text = stderr(&out);
    assert_eq!(code(&out), code_, "{args:?}: {text}");
    for word in words {
        assert!(text.contains(word), "{args:?} should say {word:?}: {text}");
    }
    assert!(text.contains("nothing was written"), "{text}");
    assert_eq!(stored(&w.s3).await, before, "{args:?} changed the object");
    assert_eq!(w.redis().await, None, "{args:?} wrote Redis");
    text
}

/// `remove` of the package on the broken line mends the object: the other lines keep their bytes
/// (CRLF included), the PUT is conditional on the broken object's ETag, and Redis follows.
#[tokio::test]
async fn remove_mends_an_object_whose_bad_bytes_are_on_the_removed_line() {
    let w =
        World::holding(b"# team tools\r\nflask==3.0.3  # caf\xe9\r\nrequests==2.32.3\r\n").await;
    let out = w.run(&["requirements", "remove", "Flask"], &[]);
    assert_ok_says(&out, &["removed Flask"]);
    w.assert_both("# team tools\r\nrequests==2.32.3\r\n").await;

    // A continued requirement goes whole, wherever its bad byte is.
    let w = World::holding(b"numpy==2.0.1\nflask==3.0.3 \\\n    --hash=sha256:\xff\xfe\n").await;
    assert_ok(&w.run(&["requirements", "remove", "flask"], &[]));
    w.assert_both("numpy==2.0.1\n").await;
}

/// `remove` of another package leaves the broken line: refused, naming the line, the byte and
/// the command that mends it (`remove` of its package, or `set` when it names none).
#[tokio::test]
async fn remove_that_leaves_bad_bytes_is_refused_naming_the_line() {
    let w = World::holding(b"numpy==2.0.1\nflask==3.0.3  # caf\xe9\nrequests==2.32.3\n").await;
    refused(
        &w,
        "remove requests",
        3,
        &[
            "removing requests leaves line 2 (byte 0xe9 at offset 32, package `flask`) not UTF-8",
            "`requirements remove flask`",
            "`requirements set FILE`",
        ],
    )
    .await;
    // Then the way it names mends it.
    assert_ok(&w.run(&["requirements", "remove", "requests", "flask"], &[]));
    w.assert_both("numpy==2.0.1\n").await;

    // A broken line that names no package: only `set` mends it.
    let w = World::holding(b"requests==2.32.3\n\xff\xfe\n").await;
    refused(
        &w,
        "remove requests",
        3,
        &[
            "line 2 (byte 0xff at offset 17, no package) not UTF-8",
            "line 2 names no package",
            "`requirements set FILE`",
        ],
    )
    .await;
}

/// Over the content limit, over 1 MiB (which no read takes), with a byte that is not UTF-8 too:
/// `remove` of the line that made it so brings it under; `remove` that leaves it over is refused
/// saying how much must still go, or which line is still not UTF-8.
#[tokio::test]
async fn remove_brings_an_oversize_object_under_the_limit() {
    for (pad, bad) in [
        (MAX_OBJECT_BYTES as usize, false),
        (300 * 1024, false),
        (MAX_OBJECT_BYTES as usize, true),
    ] {
        let w = World::new();
        let mut runaway = b"blob==1.0  # caf".to_vec();
        runaway.extend_from_slice(if bad { b"\xe9" } else { "\u{e9}".as_bytes() });
        runaway.extend(std::iter::repeat_n(b'x', pad));
        runaway.push(b'\n');
        let content = [&b"numpy==2.0.1\n"[..], &runaway, b"requests==2.32.3\n"].concat();
        bifrost_put(&w.s3, &content).await;
        let left = content.len() - "requests==2.32.3\n".len();
        if bad {
            refused(
                &w,
                "remove requests",
                3,
                &[
                    "line 2 (byte 0xe9 at offset 29, package `blob`) not UTF-8",
                    "`requirements remove blob`",
                ],
            )
            .await;
        } else {
            let text = refused(
                &w,
                "remove requests",
                2,
                &[
                    &exceeded(left),
                    &format!("{} more bytes must go", left - MAX_CONTENT_BYTES),
                ],
            )
            .await;
            assert!(text.contains("the new requirements.txt"), "{text}");
        }
        assert_ok(&w.run(&["requirements", "remove", "blob"], &[]));
        w.assert_both("numpy==2.0.1\nrequests==2.32.3\n").await;
    }
}

/// What remains must pass the policy as `set` would: refused naming the line as the stored file
/// numbers it.
#[tokio::test]
async fn remove_that_leaves_a_policy_violation_is_refused_with_the_stored_line_number() {
    let w = World::holding(
        b"flask==3.0.3  # caf\xe9\n# ok\n--index-url https://evil.example/simple\nnumpy\n",
    )
    .await;
    let before = stored(&w.s3).await;
    let out = w.run(&["requirements", "remove", "flask"], &[]);
    assert_exit(
        &out,
        2,
        &["line 3: `--index-url https://evil.example/simple`"],
    );
    assert_eq!(stored(&w.s3).await, before);
    assert_eq!(w.redis().await, None);
}

/// `add` needs a file it can read: refused, the object unchanged, the message naming the problem
/// (the lines that are not UTF-8, the bytes over the limit) and the command that mends it.
#[tokio::test]
async fn add_on_a_broken_object_is_refused_naming_the_fix() {
    let w = World::holding(b"flask==3.0.3  # caf\xe9\nrequests==2.32.3\n").await;
    refused(
        &w,
        "add numpy==2.0.1",
        3,
        &[
            "not UTF-8 at line 1 (byte 0xe9 at offset 19, package `flask`)",
            "`requirements add` needs a file it can read",
            "`requirements remove flask` takes out the lines that are not UTF-8",
            "`requirements set FILE` replaces the whole file",
        ],
    )
    .await;

    // Over 1 MiB: the size, how much is over the limit, and both ways out.
    let w = World::new();
    let big = format!(
        "numpy==2.0.1\nblob==1.0  # {}\n",
        "x".repeat(MAX_OBJECT_BYTES as usize)
    );
    bifrost_put(&w.s3, big.as_bytes()).await;
    let over = big.len() - MAX_CONTENT_BYTES;
    refused(
        &w,
        "add flask",
        3,
        &[
            &format!(
                "{} bytes, {over} over the content limit of 262144 bytes",
                big.len()
            ),
            &format!(
                "`requirements remove NAME…` can bring it under the limit ({over} bytes must go)"
            ),
            "`requirements set FILE`",
        ],
    )
    .await;

    // Over what a mend reads: not downloaded; only `set` mends it, and `remove` says so too.
    let huge = vec![b'#'; MAX_MEND_BYTES as usize + 1];
    let w = World::holding(&huge).await;
    for command in ["add flask", "remove flask"] {
        refused(
            &w,
            command,
            3,
            &[
                &format!(
                    "{} bytes, over the limit of 1048576 bytes (1 MiB)",
                    huge.len()
                ),
                &format!("`requirements remove` reads at most {MAX_MEND_BYTES} bytes (4 MiB)"),
                "`requirements set FILE`",
            ],
        )
        .await;
    }
}

/// `requirements set` replaces an object that is not UTF-8 or is over the 1 MiB read cap (it was
/// exit 3), and Redis follows.
#[tokio::test]
async fn set_replaces_an_object_that_cannot_be_read() {
    let over = "#".repeat(MAX_OBJECT_BYTES as usize + 1);
    for broken in [b"requests==2.32.3\n\xff\xfe\n".to_vec(), over.into_bytes()] {
        let w = World::holding(&broken).await;
        assert_ok(&w.set_file("flask==3.0.3\n"));
        w.assert_both("flask==3.0.3\n").await;
    }
}

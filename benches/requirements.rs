//! Reading requirements.txt as `install` does, by size: `cargo bench --bench requirements`.
//!
//! parse → policy → the installer text → one text per requirement (what `install` does before
//! uv runs), on generated files shaped like `pip-compile --generate-hashes` output (a pin, two
//! hashes, a `# via` comment, an option line now and then), from 64 KiB to 4 MiB. Linear reading
//! shows as a constant time per MiB; the target is 1 MiB in well under a second (the content
//! limit is 256 KiB, so `install` never reads more than a quarter of that). `BENCH_RUNS` (default
//! 5) runs per size; the median (and the fastest) is printed, with the median time of 1 MiB
//! against the 1 s target.
//!
//! Then `requirements remove` mending a stored file that is not UTF-8
//! (`requirements::mend::remove`; a comment with a byte that is not UTF-8 after one requirement
//! in twenty), up to the 4 MiB an S3 mend reads (`s3::MAX_MEND_BYTES`).

use std::time::{Duration, Instant};

use bifrost_requirements::policy::Policy;
use bifrost_requirements::requirements::{RequirementsFile, mend};
use bifrost_requirements::s3::MAX_MEND_BYTES;

/// Issue 26: "parsing 1 MB takes under a second".
const TARGET: Duration = Duration::from_secs(1);
const SIZES_KIB: [usize; 4] = [64, 256, 1024, 4096];

fn file(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 512);
    let mut i = 0;
    while out.len() < bytes {
        if i % 50 == 0 {
            out.push_str("--only-binary :all:\n");
        }
        out.push_str(&format!(
            "package-{i}==1.{i} \\\n    --hash=sha256:{i:064x} \\\n    --hash=sha256:{:064x}\n    # via -r requirements.in\n",
            i + 1
        ));
        i += 1;
    }
    out
}

fn read(content: &str) -> usize {
    let accepted = Policy::default().check_content(content).expect("accepted");
    RequirementsFile::parse(&accepted.installer_text)
        .installer_texts_each()
        .len()
}

/// The median and the fastest of `runs` timings of `f` (on a shared machine the fastest is the
/// closer to the work itself).
fn timed(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[0])
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    println!("reading requirements.txt as `install` does (median of {runs} runs)");
    println!(
        "{:>8} {:>8} {:>10} {:>8} {:>10} {:>12}",
        "KiB", "lines", "median ms", "min ms", "ms/MiB", "of 1 s/MiB"
    );
    let mut per_mib = Vec::new();
    for kib in SIZES_KIB {
        let content = file(kib * 1024);
        let (took, fastest) = timed(runs, || {
            std::hint::black_box(read(std::hint::black_box(&content)));
        });
        let rate = took.as_secs_f64() * 1000.0 / mib(content.len());
        per_mib.push(rate);
        println!(
            "{kib:>8} {:>8} {:>10.1} {:>8.1} {rate:>10.1} {:>12.3}",
            content.lines().count(),
            took.as_secs_f64() * 1000.0,
            fastest.as_secs_f64() * 1000.0,
            rate / TARGET.as_secs_f64() / 1000.0,
        );
    }
    let at_1mib = per_mib[SIZES_KIB
        .iter()
        .position(|k| *k == 1024)
        .expect("1 MiB measured")];
    println!(
        "1 MiB in {at_1mib:.1} ms: {:.3} of the {} s target ({}, {:.0}x under it)",
        at_1mib / 1000.0 / TARGET.as_secs_f64(),
        TARGET.as_secs(),
        if at_1mib < TARGET.as_secs_f64() * 1000.0 {
            "met"
        } else {
            "MISSED"
        },
        TARGET.as_secs_f64() * 1000.0 / at_1mib,
    );
    let (smallest, largest) = (per_mib[0], per_mib[per_mib.len() - 1]);
    let (low, high) = per_mib
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    println!(
        "time per MiB at 4 MiB / at 64 KiB: {:.2} (1.0 is linear; quadratic would be 64); \
         spread across sizes: {:.2}",
        largest / smallest,
        high / low
    );

    println!("\n`requirements remove` mending a file that is not UTF-8 (median of {runs} runs)");
    println!(
        "{:>8} {:>8} {:>10} {:>8} {:>10}",
        "KiB", "lines", "median ms", "min ms", "ms/MiB"
    );
    for kib in [1024, (MAX_MEND_BYTES / 1024) as usize] {
        let stored = broken(kib * 1024);
        let names = vec!["package-7".to_string()];
        let (took, fastest) = timed(runs, || {
            let removal = mend::remove(std::hint::black_box(&stored), &names).expect("a name");
            std::hint::black_box(removal);
        });
        println!(
            "{kib:>8} {:>8} {:>10.1} {:>8.1} {:>10.1}",
            stored.split(|b| *b == b'\n').count(),
            took.as_secs_f64() * 1000.0,
            fastest.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0 / mib(stored.len()),
        );
    }
}

/// [`file`] with a comment holding a byte that is not UTF-8 after one requirement in twenty.
fn broken(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + bytes / 100);
    let mut requirements = 0;
    for line in file(bytes).split_inclusive('\n') {
        out.extend_from_slice(line.as_bytes());
        if line.starts_with("    # via") {
            if requirements % 20 == 0 {
                out.extend_from_slice(b"    # caf\xe9\n");
            }
            requirements += 1;
        }
    }
    out
}

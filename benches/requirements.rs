//! Reading requirements.txt as `install` does, by size: `cargo bench --bench requirements`.
//!
//! parse → policy → the installer text → one text per requirement (what `install` does before
//! uv runs), on generated files shaped like `pip-compile --generate-hashes` output (a pin, two
//! hashes, a `# via` comment, an option line now and then), from 64 KiB to 4 MiB. Linear reading
//! shows as a constant time per MiB; the target is 1 MiB in well under a second (the content
//! limit is 256 KiB, so `install` never reads more than a quarter of that). `BENCH_RUNS` (default
//! 5) runs per size; the median is printed.

use std::time::{Duration, Instant};

use bifrost_requirements::policy::Policy;
use bifrost_requirements::requirements::RequirementsFile;

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

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "{:>8} {:>8} {:>10} {:>10}",
        "KiB", "lines", "median ms", "ms/MiB"
    );
    let mut per_mib = Vec::new();
    for kib in [64, 256, 1024, 4096] {
        let content = file(kib * 1024);
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(read(std::hint::black_box(&content)));
                started.elapsed()
            })
            .collect();
        times.sort();
        let median = times[runs / 2].as_secs_f64() * 1000.0;
        let rate = median / (content.len() as f64 / (1024.0 * 1024.0));
        per_mib.push(rate);
        println!(
            "{kib:>8} {:>8} {median:>10.1} {rate:>10.1}",
            content.lines().count()
        );
    }
    let (smallest, largest) = (per_mib[0], per_mib[per_mib.len() - 1]);
    println!(
        "time per MiB at 4 MiB / at 64 KiB: {:.2} (1.0 is linear; quadratic would be 64)",
        largest / smallest
    );
}

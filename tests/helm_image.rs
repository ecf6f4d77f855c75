//! The image: the Dockerfile lints clean and agrees with `scripts/build-static.sh` and the
//! webhook's paths.

mod common;

use std::path::Path;

use common::helm::*;

// ---------------------------------------------------------------------------------------------
// The image.

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile")
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = tool("hadolint", &["Dockerfile"], &[]);
    assert!(out.status.success(), "hadolint Dockerfile:\n{}", text(&out));
}

/// The Dockerfile builds with scripts/build-static.sh (which CI runs), and lays the image out the
/// way the webhook's bootstrap container expects.
#[test]
fn dockerfile_builds_with_the_ci_script_and_matches_the_webhook() {
    let df = dockerfile();
    binary_and_uv_come_from_the_ci_script(&df);
    files_sit_where_the_webhook_looks(&df);
    final_stage_adds_only_the_two_static_files(&df);
    the_script_builds_what_the_dockerfile_copies();
    the_build_context_holds_what_the_crate_needs(&df);
}

fn binary_and_uv_come_from_the_ci_script(df: &str) {
    assert!(df.contains("RUN --mount=type=cache,target=/usr/local/cargo/registry"));
    assert!(
        df.contains("scripts/build-static.sh binary"),
        "the binary is built by the CI script"
    );
    assert!(
        df.contains("scripts/build-static.sh uv"),
        "uv is fetched by the CI script"
    );
}

fn files_sit_where_the_webhook_looks(df: &str) {
    let binary = bifrost_requirements::webhook::inject::OPERATOR_BINARY;
    assert_eq!(binary, "/usr/local/bin/bifrost-requirements");
    assert!(df.contains(&format!(
        "COPY --from=build /out/bifrost-requirements {binary}"
    )));
    // `bootstrap` finds uv next to the binary.
    let uv = Path::new(binary).with_file_name("uv");
    assert!(df.contains(&format!("COPY --from=uv /out/uv {}", uv.display())));
    assert!(df.contains(&format!("ENTRYPOINT [\"{binary}\"]")));
    let uid = bifrost_requirements::webhook::inject::NON_ROOT_UID;
    assert!(df.contains(&format!("USER {uid}:{uid}")));
}

/// The final stage adds nothing but the two static files (no shell, no package manager) to
/// distroless's python3, which uv asks for its environment when the operator resolves.
fn final_stage_adds_only_the_two_static_files(df: &str) {
    let last = df.rsplit("\nFROM ").next().unwrap();
    assert!(last.starts_with("gcr.io/distroless/python3"), "{last}");
    assert!(!last.contains("RUN "), "{last}");
}

fn the_script_builds_what_the_dockerfile_copies() {
    let script = std::fs::read_to_string(root().join("scripts/build-static.sh")).unwrap();
    for needle in [
        "TARGET=x86_64-unknown-linux-musl",
        "CC_x86_64_unknown_linux_musl=musl-gcc",
        "--release --target \"$TARGET\"",
        "OUT=target/static",
        "--platform \"$UV_PLATFORM\"",
    ] {
        assert!(
            script.contains(needle),
            "scripts/build-static.sh lacks {needle}"
        );
    }
}

/// The build context holds what the crate needs (include_str! of deploy/, migrations/); each
/// folder has a `COPY` line of its own (the lock file and the script come with other lines).
fn the_build_context_holds_what_the_crate_needs(df: &str) {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for (path, own_copy_line) in [
        ("src/", true),
        ("deploy/", true),
        ("migrations/", true),
        ("benches/", true),
        ("Cargo.lock", false),
        ("scripts/build-static.sh", false),
    ] {
        assert!(
            ignore.contains(&format!("!{path}")),
            ".dockerignore drops {path}"
        );
        assert!(
            !own_copy_line || df.contains(&format!("COPY {}", path.trim_end_matches('/'))),
            "Dockerfile does not copy {path}"
        );
    }
}

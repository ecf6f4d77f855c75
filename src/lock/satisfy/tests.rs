use super::*;
use crate::lock::entries;

fn worker(version: &str) -> Worker {
    Worker {
        version: version.into(),
        machine: "x86_64".into(),
        glibc: Some("2.36".into()),
    }
}

/// The problems of the lock `body` for `content` on a Python 3.11.7 x86_64 worker.
fn check(content: &str, body: &str) -> Vec<String> {
    check_on(content, body, "3.11.7")
}

fn check_on(content: &str, body: &str, version: &str) -> Vec<String> {
    let pins = entries::parse(body).unwrap();
    let env = environment(&worker(version)).unwrap();
    problems(&RequirementsFile::parse(content), &pins, &env)
}

const H: &str = "    --hash=sha256:00\n";

fn pin(name_version: &str, via: &str) -> String {
    format!("{name_version} \\\n{H}    # via {via}\n")
}

#[test]
fn a_lock_of_the_file_has_no_problems() {
    let body = pin("flask==3.0", "-r requirements.txt") + &pin("werkzeug==3.1", "flask");
    assert!(check("Flask>=3,<4\n", &body).is_empty());
}

#[test]
fn rule_1_every_applicable_requirement_is_pinned() {
    let body = pin("evil==1.0", "-r requirements.txt");
    let problems = check("goodpkg==2.0\n", &body);
    assert!(
        problems
            .contains(&"requirements.txt line 1: `goodpkg==2.0`: the lock pins no goodpkg".into()),
        "{problems:?}"
    );
}

#[test]
fn rule_1_at_a_version_the_specifier_allows() {
    let problems = check(
        "# app\ngoodpkg==2.0\n",
        &pin("goodpkg==1.0", "-r requirements.txt"),
    );
    assert_eq!(
        problems,
        [
            "requirements.txt line 2: `goodpkg==2.0`: the lock pins goodpkg==1.0 (lock line 1), \
          a version it does not allow"
        ]
    );
    assert!(
        check(
            "goodpkg>=1.0,<3\n",
            &pin("goodpkg==2.5", "-r requirements.txt")
        )
        .is_empty()
    );
    assert!(
        !check(
            "goodpkg~=2.0\n",
            &pin("goodpkg==3.0", "-r requirements.txt")
        )
        .is_empty()
    );
}

#[test]
fn rule_1_markers_are_evaluated_for_the_worker() {
    let old = "backport==1.0 ; python_version < \"3.11\"\n";
    assert!(check(old, "").is_empty(), "not for 3.11");
    assert_eq!(check_on(old, "", "3.10.4").len(), 1, "for 3.10");
    let arm = "armonly==1.0 ; platform_machine == \"aarch64\"\n";
    assert!(check(arm, "").is_empty());
    let linux = "linuxonly==1.0 ; sys_platform == \"linux\"\n";
    assert_eq!(check(linux, "").len(), 1);
    let full = "new==1.0 ; python_full_version >= \"3.11.5\"\n";
    assert_eq!(check(full, "").len(), 1);
    assert!(check_on(full, "", "3.11.2").is_empty());
}

#[test]
fn rule_1_extras_need_the_parent_pinned() {
    let body = pin("flask==3.0", "-r requirements.txt") + &pin("asgiref==3.8", "flask");
    assert!(check("flask[async]==3.0\n", &body).is_empty());
    assert_eq!(
        check("flask[async]==3.0\n", &pin("asgiref==3.8", "flask")).len(),
        2
    );
}

#[test]
fn rule_2_nothing_pinned_that_no_requirement_pulls_in() {
    let body = pin("goodpkg==2.0", "-r requirements.txt")
        + &pin("evil==1.0", "-r requirements.txt")
        + &pin("other==1.0", "evil")
        + "bare==1.0 \\\n    --hash=sha256:00\n";
    let problems = check("goodpkg==2.0\n", &body);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("evil==1.0 (lock line 4) is pinned but no requirement"));
    assert!(
        problems[0].contains("its `# via` names requirements.txt"),
        "{}",
        problems[0]
    );
    assert!(problems[1].contains("other==1.0") && problems[1].contains("names evil"));
    assert!(problems[2].contains("bare==1.0") && problems[2].contains("it has no `# via`"));
}

#[test]
fn rule_2_reaches_through_chains_and_shared_dependencies() {
    let body = pin("a==1", "-r requirements.txt")
        + &pin("b==1", "a")
        + &pin("c==1", "b")
        + "d==1 \\\n    --hash=sha256:00\n    # via\n    #   c\n    #   z\n";
    assert!(check("a\n", &body).is_empty());
    // A requirement whose marker is false pulls in nothing.
    let problems = check("a ; python_version < \"3\"\n", &body);
    assert_eq!(problems.len(), 4, "{problems:?}");
}

#[test]
fn rule_3_a_distribution_is_pinned_once() {
    let body = pin("a==1", "-r requirements.txt") + &pin("A==2", "-r requirements.txt");
    let problems = check("a\n", &body);
    assert!(
        problems.contains(&"a is pinned twice (lock line 4)".into()),
        "{problems:?}"
    );
}

#[test]
fn the_environment_is_the_workers() {
    assert!(environment(&worker("not.a.version")).is_err());
    let env = environment(&worker("3.12.1")).unwrap();
    let r: Requirement<pep508_rs::VerbatimUrl> =
        "x ; python_version == \"3.12\" and platform_machine == \"x86_64\""
            .parse()
            .unwrap();
    assert!(r.evaluate_markers(&env, &[]));
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A lock pinning each requirement at a version its specifier allows, its dependencies
        /// named in `# via`, has no problem; moving one pin outside its specifier gives exactly
        /// one, naming that requirement's line.
        #[test]
        fn a_generated_lock_of_the_file_holds_until_one_pin_moves(
            reqs in proptest::collection::btree_map("[a-z]{1,6}", (1u32..20, 0usize..3, any::<bool>()), 1..6),
            moved in any::<prop::sample::Index>(),
        ) {
            let mut content = String::new();
            let mut body = String::new();
            for (name, (v, op, with_dep)) in &reqs {
                let spec = match op {
                    0 => format!("=={v}.0"),
                    1 => format!(">={v}.0,<{}", v + 1),
                    _ => format!("~={v}.0"),
                };
                content.push_str(&format!("{name}{spec}\n"));
                body.push_str(&pin(&format!("{name}=={v}.0"), "-r requirements.txt"));
                if *with_dep {
                    body.push_str(&pin(&format!("{name}-dep==1.0"), name));
                }
            }
            prop_assert!(check(&content, &body).is_empty(), "{content}\n{body}");
            let i = moved.index(reqs.len());
            let (name, (v, _, _)) = reqs.iter().nth(i).unwrap();
            let shifted = body.replace(&format!("\n{name}=={v}.0 "), &format!("\n{name}=={}.0 ", v + 1));
            let shifted = if shifted == body {
                body.replacen(&format!("{name}=={v}.0 "), &format!("{name}=={}.0 ", v + 1), 1)
            } else {
                shifted
            };
            let problems = check(&content, &shifted);
            prop_assert_eq!(problems.len(), 1, "{:?}", problems);
            let line = format!("requirements.txt line {}: `{name}", i + 1);
            prop_assert!(problems[0].starts_with(&line), "{}", problems[0]);
        }
    }
}

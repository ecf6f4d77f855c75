//! JSON-patch (RFC 6902) building, written for the pod exactly as submitted: an absent array or
//! map is added whole, an existing one gets `/-` appends or keyed adds.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use serde_json::Value;

use super::SITE_PACKAGES_VOLUME;
use super::volumes::mount;
use crate::crd::{INJECTED_ANNOTATION, INJECTED_MODE_ANNOTATION, InstallMode};

/// Serializing k8s-openapi values into JSON cannot fail (no maps with non-string keys); this
/// keeps the call sites free of `unwrap`.
pub(super) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

/// Append `items` to the array at `tokens`, creating it when absent.
pub(super) fn append_all(
    ops: &mut Vec<PatchOperation>,
    tokens: &[&str],
    exists: bool,
    items: Vec<Value>,
) {
    if exists {
        for item in items {
            let mut path: Vec<&str> = tokens.to_vec();
            path.push("-");
            ops.push(add(&path, item));
        }
    } else {
        ops.push(add(tokens, Value::Array(items)));
    }
}

/// The `bifrost.io/injected-hash` and `bifrost.io/injected-mode` annotations (the keys' `/` is
/// escaped by the pointer).
pub(super) fn marker(ops: &mut Vec<PatchOperation>, pod: &Pod, hash: &str, mode: InstallMode) {
    match &pod.metadata.annotations {
        Some(_) => {
            ops.push(add(
                &["metadata", "annotations", INJECTED_ANNOTATION],
                Value::String(hash.to_string()),
            ));
            ops.push(add(
                &["metadata", "annotations", INJECTED_MODE_ANNOTATION],
                Value::String(mode.name().to_string()),
            ));
        }
        None => ops.push(add(
            &["metadata", "annotations"],
            serde_json::json!({ INJECTED_ANNOTATION: hash, INJECTED_MODE_ANNOTATION: mode.name() }),
        )),
    }
}

/// How app containers are pointed at the installed packages.
pub(super) struct Interpreter<'a> {
    pub mode: InstallMode,
    pub mount_path: &'a str,
    /// `spec.install.pythonPath`: kept after ours in `PythonPath` mode.
    pub python_path: &'a [String],
}

impl Interpreter<'_> {
    /// The variable this mode sets.
    fn variable(&self) -> &'static str {
        match self.mode {
            InstallMode::UserBase => "PYTHONUSERBASE",
            InstallMode::PythonPath => "PYTHONPATH",
        }
    }
}

/// Mount the packages' volume at the mount path in every app container and set
/// `PYTHONUSERBASE` to it (`UserBase`) or put it first on `PYTHONPATH` (`PythonPath`).
/// A container whose variable comes from `valueFrom`, that sets `PYTHONUSERBASE` to another
/// folder itself, or that mounts something else at that path, is left alone with a warning; one
/// with `envFrom` is injected, with a warning in `PythonPath` mode only.
/// Returns the names of the containers changed.
pub(super) fn app_containers(
    ops: &mut Vec<PatchOperation>,
    spec: &PodSpec,
    how: &Interpreter<'_>,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let mount_path = how.mount_path;
    let var = how.variable();
    let mut changed = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let env = c.env.as_deref().unwrap_or_default();
        // Kubernetes uses the last definition of a variable.
        let at = env.iter().rposition(|e| e.name == var);
        if let Some(warning) = own_variable(c, at, how) {
            warnings.push(warning);
            continue;
        }
        let literal = at.and_then(|j| env[j].value.as_deref()).unwrap_or("");
        // The webhook cannot see into envFrom's Secrets and ConfigMaps, and every Bifrost
        // worker uses them: a warning on each pod would be noise. Only a PYTHONPATH is worth
        // one — a ConfigMap commonly sets it, and the injected value would hide it — so only
        // PythonPath mode warns.
        if how.mode == InstallMode::PythonPath
            && at.is_none()
            && c.env_from.as_ref().is_some_and(|e| !e.is_empty())
        {
            warnings.push(format!(
                "container {:?} takes variables from envFrom, which may define {var}; the \
                 injected {var}={mount_path} replaces it (set {var} in env to keep both)",
                c.name
            ));
        }
        if let Some(m) = c
            .volume_mounts
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|m| m.mount_path.trim_end_matches('/') == mount_path)
        {
            warnings.push(format!(
                "container {:?} already mounts volume {:?} at {mount_path} (spec.install.mountPath); \
                 the installed packages were not mounted into it",
                c.name, m.name
            ));
            continue;
        }
        if how.mode == InstallMode::UserBase {
            user_site_warnings(c, warnings);
        }
        let idx = i.to_string();
        append_all(
            ops,
            &["spec", "containers", &idx, "volumeMounts"],
            c.volume_mounts.is_some(),
            vec![to_value(&mount(SITE_PACKAGES_VOLUME, mount_path, false))],
        );
        let value = match how.mode {
            InstallMode::UserBase => (literal.is_empty()).then(|| mount_path.to_string()),
            InstallMode::PythonPath => python_path(literal, how),
        };
        if let Some(value) = value {
            set_env(ops, &idx, c, var, at, value);
        }
        changed.push(c.name.clone());
    }
    changed
}

/// Why the container's own definition of the variable (`env[at]`) keeps the packages from it:
/// a `valueFrom` the webhook cannot read, or, in UserBase mode, a `PYTHONUSERBASE` of its own.
/// `None`: the variable is absent, or one the injection can extend.
fn own_variable(c: &Container, at: Option<usize>, how: &Interpreter<'_>) -> Option<String> {
    let (mount_path, var) = (how.mount_path, how.variable());
    let defined = &c.env.as_deref().unwrap_or_default()[at?];
    if defined.value_from.is_some() {
        return Some(format!(
            "container {:?} sets {var} with valueFrom; the installed packages were not \
             made visible to it (set {var} literally, or add {mount_path} yourself)",
            c.name
        ));
    }
    let literal = defined.value.as_deref().unwrap_or("");
    // Replacing it would hide whatever the worker keeps in its own user site; the container's
    // choice wins and the creator is told how to get both.
    (how.mode == InstallMode::UserBase
        && !literal.is_empty()
        && literal.trim_end_matches('/') != mount_path)
        .then(|| {
            format!(
                "container {:?} sets PYTHONUSERBASE={literal:?} itself; kept, so the installed \
                 packages (under {mount_path}) were not made visible to it (remove it, or use \
                 spec.install.mode PythonPath)",
                c.name
            )
        })
}

/// What Python would skip the user site for, as far as the pod shows it (an image's own
/// `ENV` or entrypoint is invisible here): `PYTHONNOUSERSITE`, or `-s`, `-I` or `-E` given to a
/// `python` command.
fn user_site_warnings(c: &Container, warnings: &mut Vec<String>) {
    let env = c.env.as_deref().unwrap_or_default();
    if let Some(e) = env.iter().rfind(|e| e.name == "PYTHONNOUSERSITE")
        && (e.value_from.is_some() || e.value.as_deref().is_some_and(|v| !v.is_empty()))
    {
        warnings.push(format!(
            "container {:?} sets PYTHONNOUSERSITE, which keeps Python from adding the user site: \
             the installed packages will not import (remove it, or use spec.install.mode \
             PythonPath)",
            c.name
        ));
    }
    let words: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(String::as_str)
        .collect();
    let Some(p) = words.iter().position(|w| {
        w.rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with("python"))
    }) else {
        return;
    };
    // Interpreter options come before the script, `-c` or `-m`.
    let skip = words[p + 1..]
        .iter()
        .take_while(|w| w.starts_with('-') && !matches!(**w, "-c" | "-m" | "-" | "--"))
        .find(|w| {
            // Short-option clusters only; `-W` and `-X` take a value that may hold any letter.
            let cluster = &w[1..];
            !cluster.starts_with(['W', 'X'])
                && cluster.chars().all(|ch| ch.is_ascii_alphabetic())
                && cluster.contains(['s', 'I', 'E'])
        });
    if let Some(flag) = skip {
        warnings.push(format!(
            "container {:?} runs {} with {flag}, which ignores the user site or \
             PYTHONUSERBASE: the installed packages will not import (drop the option, or use \
             spec.install.mode PythonPath)",
            c.name, words[p]
        ));
    }
}

/// `mount_path`, then `spec.install.pythonPath`, then the container's own literal `PYTHONPATH`;
/// `None` when the mount is on it already (a re-submitted pod).
fn python_path(old: &str, how: &Interpreter<'_>) -> Option<String> {
    let has = |list: &str, entry: &str| {
        list.split(':')
            .any(|p| p.trim_end_matches('/') == entry.trim_end_matches('/'))
    };
    if has(old, how.mount_path) {
        return None;
    }
    let mut parts = vec![how.mount_path.to_string()];
    for entry in how.python_path {
        if !has(old, entry) && !parts.iter().any(|p| has(p, entry)) {
            parts.push(entry.clone());
        }
    }
    if !old.is_empty() {
        parts.push(old.to_string());
    }
    Some(parts.join(":"))
}

/// Set `name=value` on the container: entry `at` of its env when it has one, else appended.
fn set_env(
    ops: &mut Vec<PatchOperation>,
    idx: &str,
    c: &Container,
    name: &str,
    at: Option<usize>,
    value: String,
) {
    match at {
        Some(j) => ops.push(add(
            &["spec", "containers", idx, "env", &j.to_string(), "value"],
            Value::String(value),
        )),
        None => append_all(
            ops,
            &["spec", "containers", idx, "env"],
            c.env.is_some(),
            vec![to_value(&EnvVar {
                name: name.into(),
                value: Some(value),
                value_from: None,
            })],
        ),
    }
}

#!/usr/bin/env python3
"""Play the kubelet for one stored pod: run its init containers on this machine, then import.

There is no kubelet in the local demo (pods stay Pending), so this does its part for the pod the
webhook injected: every volume becomes a folder (ConfigMap volumes hold the ConfigMap's keys),
paths under a container's mounts are mapped to those folders, `valueFrom.secretKeyRef` env vars
are read from the Secret, the operator image is this machine's binary and uv, and the worker
image's python3 is this machine's python3.

usage: play_kubelet.py POD_JSON BINARY UV "import statement"   (KUBECONFIG and KUBECTL from env)
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

pod_file, binary, uv, statement = sys.argv[1:5]
kubectl = os.environ.get("KUBECTL", "kubectl")
pod = json.load(open(pod_file))
ns = pod["metadata"]["namespace"]
root = tempfile.mkdtemp(prefix="bifrost-kubelet-")


def kget(kind, name):
    out = subprocess.run([kubectl, "get", kind, name, "-n", ns, "-o", "json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


volumes = {}
for v in pod["spec"].get("volumes", []):
    d = os.path.join(root, "volumes", v["name"])
    os.makedirs(d)
    if "configMap" in v:
        for k, val in kget("configmap", v["configMap"]["name"]).get("data", {}).items():
            open(os.path.join(d, k), "w").write(val)
    volumes[v["name"]] = d

image_bin = os.path.join(root, "operator-image", "usr", "local", "bin")
os.makedirs(image_bin)
shutil.copy(binary, os.path.join(image_bin, "bifrost-requirements"))
shutil.copy(uv, os.path.join(image_bin, "uv"))


def mapper(c):
    mounts = sorted(c.get("volumeMounts", []), key=lambda m: -len(m["mountPath"]))

    def host(value):
        for m in mounts:
            mp = m["mountPath"]
            if value == mp or value.startswith(mp + "/"):
                return volumes[m["name"]] + value[len(mp):]
        if value.startswith("/usr/local/bin/"):
            return os.path.join(image_bin, value[len("/usr/local/bin/"):])
        return value

    def text(value):  # also map paths inside `a:b` lists and `--flag=path`
        parts = []
        for p in value.split(":"):
            if "=" in p and p.startswith("--"):
                flag, _, rest = p.partition("=")
                parts.append(flag + "=" + host(rest))
            else:
                parts.append(host(p))
        return ":".join(parts)
    return text


def env_of(c):
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYENV_ROOT", "PYENV_VERSION")}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            data = kget("secret", ref["name"])["data"][ref["key"]]
            env[e["name"]] = base64.b64decode(data).decode()
    return env


for c in pod["spec"].get("initContainers", []):
    m = mapper(c)
    argv = [m(a) for a in c.get("command", []) + c.get("args", [])]
    env = {k: m(v) for k, v in env_of(c).items()}
    print(f"\n  kubelet: init container {c['name']} (image {c['image']})", flush=True)
    print("    $ " + " ".join(c.get("command", []) + c.get("args", [])), flush=True)
    r = subprocess.run(argv, env=env, cwd=root)
    if r.returncode != 0:
        sys.exit(f"init container {c['name']} failed with exit code {r.returncode}")

app = pod["spec"]["containers"][0]
m = mapper(app)
env = {k: m(v) for k, v in env_of(app).items()}
print(f"\n  kubelet: main container {app['name']} starts with PYTHONPATH={[e.get('value') for e in app.get('env', []) if e['name'] == 'PYTHONPATH'][0]}")
print(f"    $ python3 -c '{statement}'", flush=True)
r = subprocess.run(["python3", "-c", statement], env=env, cwd=root)
shutil.rmtree(root, ignore_errors=True)
sys.exit(r.returncode)

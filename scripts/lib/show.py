#!/usr/bin/env python3
"""Pretty-print Kubernetes JSON (from stdin) for the demo.

usage: show.py status | lock | pod | injected-pod HASH | running-pod HASH | events | replicasets
"""
import json
import sys



def show_lock(status):
    lock = status.get("lock")
    if lock:
        print(f"   lock contentHash {lock['contentHash']}  packages {lock['packages']}  "
              f"resolvedAt {lock['resolvedAt']}")
    else:
        print("   lock (none: the pods resolve)")


obj = json.load(sys.stdin)
what = sys.argv[1]

if what == "status":
    s = obj["status"]
    print(f"   contentHash {s['contentHash']}  packages {s.get('packageCount')}  "
          f"lastSyncedFromDatabase {s.get('lastSyncedFromDatabase')}")
    for c in s["conditions"]:
        print(f"   {c['type']:<12} {c['status']:<6} {c['reason']:<22} {c['message']}")
    for w in s.get("workloads", []):
        print(f"   workload {w['kind']}/{w['name']} upToDate={w['upToDate']} "
              f"uninjectedPods={w.get('uninjectedPods', 0)}")
    show_lock(s)
elif what == "lock":
    show_lock(obj["status"])
elif what == "pod":
    p = obj
    print("   annotation bifrost.io/injected-hash:", p["metadata"]["annotations"]["bifrost.io/injected-hash"])
    for c in p["spec"]["initContainers"]:
        print(f"   initContainer {c['name']}  image {c['image']}")
        print("     " + " ".join(c.get("command", []) + c.get("args", [])))
    for c in p["spec"]["containers"]:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        print(f"   container {c['name']}  PYTHONPATH={env.get('PYTHONPATH')}  mounts={mounts}")
    print("   volumes:", [v["name"] for v in p["spec"]["volumes"]])
elif what == "injected-pod":
    for p in obj["items"]:
        if p["metadata"].get("annotations", {}).get("bifrost.io/injected-hash") == sys.argv[2]:
            print(p["metadata"]["name"])
            break
elif what == "running-pod":
    # The pod of that hash once it is the only one left and Running with every container ready.
    pods = obj["items"]
    if len(pods) == 1:
        p = pods[0]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        if (p["metadata"].get("annotations", {}).get("bifrost.io/injected-hash") == sys.argv[2]
                and p["status"].get("phase") == "Running" and ready
                and not p["metadata"].get("deletionTimestamp")):
            print(p["metadata"]["name"])
elif what == "events":
    # Events the operator published (Normal and Warning), oldest first.
    mine = [e for e in obj["items"] if e.get("reportingController") == "bifrost-requirements"]
    mine.sort(key=lambda e: e["metadata"]["creationTimestamp"])
    for e in mine:
        regarding = e.get("regarding", {})
        print(f"   {e['type']:<8} {e['reason']:<22} {regarding.get('kind')}/{regarding.get('name')}: {e.get('note', '')}")
elif what == "replicasets":
    items = sorted(obj["items"], key=lambda r: r["metadata"]["creationTimestamp"])
    for r in items:
        ann = (r["spec"]["template"]["metadata"].get("annotations") or {}).get("bifrost.io/requirements-hash", "(none)")
        print(f"   {r['metadata']['name']:<22} created {r['metadata']['creationTimestamp']}  "
              f"replicas {r['spec'].get('replicas', 0)}  hash {ann}")
else:
    sys.exit(f"unknown view {what}")

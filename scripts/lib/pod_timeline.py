"""Where a pod's `kubectl apply` -> Running goes, from containerd's log (CRI calls with
nanosecond timestamps) and the times the benchmark recorded: for each pod, the phases
  admit     apply -> RunPodSandbox (API server, webhook, scheduler, kubelet pick-up)
  sandbox   RunPodSandbox until it returns (network, pause container)
  <name>    per container: create + start (until StartContainer returns), then its run until
            its shim goes (init containers)
  gap       an init container's exit -> the next container's CreateContainer (kubelet notices)
  status    the worker started -> the benchmark saw Running (kubelet status -> API -> poll)
Usage: pod_timeline.py CONTAINERD_LOG PODS_DIR [PREFIX]  (PODS_DIR: NAME.applied, NAME.seconds;
only pods whose name starts with PREFIX)
Prints the median of each phase per kind of pod (the name's prefix, e.g. bench-demo).
"""
import collections
import datetime
import glob
import os
import re
import statistics
import sys

LINE = re.compile(r'time="([^"]+)" level=\w+ msg="((?:[^"\\]|\\.)*)"(?: id=(\w+))?')


def ts(s):
    # 2026-11-21T16:57:56.149946678Z: datetime keeps microseconds only.
    base, frac = s.rstrip("Z").split(".")
    t = datetime.datetime.fromisoformat(base).replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + float("0." + frac)


def parse(log):
    sandbox_of = {}  # pod name -> sandbox id
    ev = collections.defaultdict(dict)  # id -> event -> time
    names = {}  # container id -> (sandbox id, container name)
    order = collections.defaultdict(list)  # sandbox id -> container ids in creation order
    pending = {}  # (sandbox, name) -> CreateContainer start
    for line in open(log, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        t, msg, sid = ts(m.group(1)), m.group(2).replace('\\"', '"'), m.group(3)
        if msg.startswith("RunPodSandbox for &PodSandboxMetadata{Name:"):
            pod = msg.split("Name:")[1].split(",")[0]
            if " returns sandbox id " in msg:
                sb = msg.rsplit('"', 2)[1]
                sandbox_of[pod] = sb
                ev[sb]["ready"] = t
                ev[sb]["start"] = ev.pop(("pod", pod))["start"]
            else:
                ev[("pod", pod)]["start"] = t
        elif msg.startswith("CreateContainer within sandbox"):
            sb = msg.split('"')[1]
            name = msg.split("Name:")[1].split(",")[0]
            if " returns container id " in msg:
                cid = msg.rsplit('"', 2)[1]
                names[cid] = (sb, name)
                order[sb].append(cid)
                ev[cid]["create"] = pending.pop((sb, name))
            else:
                pending[(sb, name)] = t
        elif msg.startswith("StartContainer for") and msg.endswith("returns successfully"):
            ev[msg.split('"')[1]]["started"] = t
        elif msg == "shim disconnected" and sid:
            ev[sid].setdefault("exited", t)
    return sandbox_of, ev, names, order


def main():
    log, pods = sys.argv[1], sys.argv[2]
    prefix = sys.argv[3] if len(sys.argv) > 3 else ""
    sandbox_of, ev, names, order = parse(log)
    kinds = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in sorted(glob.glob(os.path.join(pods, "*.applied"))):
        pod = os.path.basename(f)[: -len(".applied")]
        seconds = os.path.join(pods, pod + ".seconds")
        if not pod.startswith(prefix) or pod not in sandbox_of or not os.path.exists(seconds):
            continue
        applied = float(open(f).read())
        running = applied + float(open(seconds).read())
        sb = sandbox_of[pod]
        phases = [("admit", ev[sb]["start"] - applied), ("sandbox", ev[sb]["ready"] - ev[sb]["start"])]
        prev_exit = None
        for cid in order[sb]:
            _, name = names[cid]
            e = ev[cid]
            short = name.replace("bifrost-requirements-", "")
            if prev_exit is not None:
                phases.append((f"gap->{short}", e["create"] - prev_exit))
            phases.append((f"{short} start", e["started"] - e["create"]))
            if "exited" in e and e["exited"] < running:
                phases.append((f"{short} run", e["exited"] - e["started"]))
                prev_exit = e["exited"]
            else:
                phases.append(("status", running - e["started"]))
        kind = pod.rsplit("-", 1)[0]
        for k, v in phases:
            kinds[kind][k].append(v)
        kinds[kind]["total"].append(running - applied)
    for kind, phases in kinds.items():
        n = len(phases["total"])
        print(f"{kind} (median of {n}):")
        for k, v in phases.items():
            print(f"  {k:<22} {statistics.median(v):6.3f} s")


main()

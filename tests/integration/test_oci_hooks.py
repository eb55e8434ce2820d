"""OCI hooks (docs/oci.md, "Hooks"): prestart, createRuntime, poststart and poststop run in kago's own
namespaces with the container's state JSON on their stdin and exactly their env. Real containers, as root;
every test has its own --root and bundle."""
import json
import os
import time

import pytest

from conftest import exited, leftovers, wait_for
from test_oci import args, bundle, detached, edit  # noqa: F401 (bundle is a fixture)

# A hook: appends what it saw (its kind, its stdin's state, its env, its namespaces) as a JSON line to LOG,
# prints to its stdout (kago's stderr), then does what MODE says: "ok", "exit N", or "hang" (a child of
# its own too, both pids written to LOG.pids, then sleeps).
HOOK = r"""#!/usr/bin/python3
import json, os, subprocess, sys, time
kind, log, mode = sys.argv[1], sys.argv[2], sys.argv[3:]
state = json.loads(sys.stdin.read())
rec = {"kind": kind, "state": state, "var": os.environ.get("HOOK_VAR"), "has_path": "PATH" in os.environ,
       "mnt": os.readlink("/proc/self/ns/mnt"), "pidns": os.readlink("/proc/self/ns/pid")}
with open(log, "a") as f:
    f.write(json.dumps(rec) + "\n")
print("hook-stdout", kind, flush=True)
if mode and mode[0] == "exit":
    sys.exit(int(mode[1]))
if mode and mode[0] == "hang":
    child = subprocess.Popen(["/bin/sleep", "60"])
    with open(log + ".pids", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(60)
"""


@pytest.fixture
def hook(tmp_path):
    p = tmp_path / "hook.py"
    p.write_text(HOOK)
    p.chmod(0o755)
    return str(p)


def entry(hook, kind, log, *mode, env=("HOOK_VAR=v",), timeout=None):
    h = {"path": hook, "args": ["hook.py", kind, str(log), *mode], "env": list(env)}
    if timeout:
        h["timeout"] = timeout
    return h


def set_hooks(b, hooks):
    edit(b, lambda c: c.__setitem__("hooks", hooks))


def records(log):
    return [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []


def nothing_left(kago, name):
    assert not leftovers([name])
    assert not os.path.isdir(os.path.join(kago.root, name)), os.listdir(kago.root)


def test_hooks_run_in_order_with_the_state_on_stdin(kago, bundle, hook, tmp_path):
    log = tmp_path / "log"
    args(bundle, "/bin/sleep", "60")
    set_hooks(bundle, {"prestart": [entry(hook, "prestart", log)],
                       "createRuntime": [entry(hook, "createRuntime", log), entry(hook, "createRuntime2", log)],
                       "createContainer": [], "startContainer": [],
                       "poststart": [entry(hook, "poststart", log, timeout=30)],
                       "poststop": [entry(hook, "poststop", log, env=())]})
    kago.names.add("oci-h1")
    pidfile = tmp_path / "pid"
    rc, err = detached(kago, "create", "--bundle", bundle, "--pid-file", pidfile, "oci-h1", tmp=tmp_path)
    assert rc == 0, err
    assert "hook-stdout createRuntime" in err   # a hook's stdout is kago's stderr
    pid = int(pidfile.read_text())
    recs = records(log)
    assert [r["kind"] for r in recs] == ["prestart", "createRuntime", "createRuntime2"]
    st = json.loads(kago("state", "oci-h1", check=True).stdout)
    for r in recs:
        s = r["state"]
        assert s["status"] == "created" and s["pid"] == pid and s["id"] == "oci-h1", s
        assert s["bundle"] == str(bundle) and s["created"] == st["created"] and s == st
        assert r["var"] == "v" and not r["has_path"], r   # exactly the hook's env
        # the runtime namespace, not the container's
        assert r["mnt"] == os.readlink("/proc/self/ns/mnt") != os.readlink(f"/proc/{pid}/ns/mnt")
        assert r["pidns"] == os.readlink("/proc/self/ns/pid")
    # the hooks are kept in the state dir for start and delete
    assert "poststop" in json.loads((tmp_path / "state" / "oci-h1" / "oci.json").read_text())["hooks"]

    r = kago("start", "oci-h1", check=True)
    assert "warning" not in r.stderr, r.stderr
    recs = records(log)
    assert [r["kind"] for r in recs][3:] == ["poststart"]
    assert recs[3]["state"]["status"] == "running" and recs[3]["state"]["pid"] == pid

    kago("delete", "--force", "oci-h1", check=True)
    recs = records(log)
    assert [r["kind"] for r in recs][4:] == ["poststop"]
    s = recs[4]["state"]
    assert s["status"] == "stopped" and s["id"] == "oci-h1" and s["bundle"] == str(bundle), s
    assert recs[4]["var"] is None and not recs[4]["has_path"]   # no env given: an empty one
    nothing_left(kago, "oci-h1")


def test_run_foreground_runs_every_hook(kago, bundle, hook, tmp_path):
    log = tmp_path / "log"
    args(bundle, "/bin/sh", "-c", "echo ran; exit 5")
    set_hooks(bundle, {"createRuntime": [entry(hook, "createRuntime", log)],
                       "poststart": [entry(hook, "poststart", log)],
                       "poststop": [entry(hook, "poststop", log)]})
    kago.names.add("oci-h2")
    r = kago("run", "--bundle", bundle, "oci-h2")
    assert r.returncode == 5 and r.stdout == "ran\n", r
    recs = records(log)
    assert [x["kind"] for x in recs] == ["createRuntime", "poststart", "poststop"]
    assert recs[0]["state"]["status"] == "created" and recs[0]["state"]["pid"] > 0
    assert recs[2]["state"]["status"] == "stopped"
    nothing_left(kago, "oci-h2")


def test_run_detached_with_hooks(kago, bundle, hook, tmp_path):
    log = tmp_path / "log"
    args(bundle, "/bin/sleep", "60")
    set_hooks(bundle, {"createRuntime": [entry(hook, "createRuntime", log)],
                       "poststart": [entry(hook, "poststart", log)],
                       "poststop": [entry(hook, "poststop", log)]})
    kago.names.add("oci-h3")
    rc, err = detached(kago, "run", "--detach", "--bundle", bundle, "oci-h3", tmp=tmp_path)
    assert rc == 0, err
    assert [x["kind"] for x in records(log)] == ["createRuntime", "poststart"]
    assert json.loads(kago("state", "oci-h3", check=True).stdout)["status"] == "running"
    kago("delete", "--force", "oci-h3", check=True)
    assert [x["kind"] for x in records(log)][2:] == ["poststop"]
    nothing_left(kago, "oci-h3")


def test_failing_create_runtime_hook_fails_create_and_leaves_nothing(kago, bundle, hook, tmp_path):
    log = tmp_path / "log"
    args(bundle, "/bin/sleep", "60")
    set_hooks(bundle, {"createRuntime": [entry(hook, "createRuntime", log, "exit", "3"),
                                         entry(hook, "never", log)],
                       "poststart": [entry(hook, "poststart", log)],
                       "poststop": [entry(hook, "poststop", log)]})
    kago.names.add("oci-h4")
    pidfile = tmp_path / "pid"
    rc, err = detached(kago, "create", "--bundle", bundle, "--pid-file", pidfile, "oci-h4", tmp=tmp_path)
    assert rc != 0
    assert f"container oci-h4: hooks.createRuntime[0] {hook}: exit status 3" in err, err
    # the later hooks of the list did not run; poststop did, the container gone (the spec's lifecycle)
    assert [x["kind"] for x in records(log)] == ["createRuntime", "poststop"]
    assert not pidfile.exists()
    nothing_left(kago, "oci-h4")
    assert kago("state", "oci-h4").returncode != 0

    # run: the command never starts
    set_hooks(bundle, {"prestart": [entry(hook, "prestart", log, "exit", "1")]})
    args(bundle, "/bin/echo", "ran")
    kago.names.add("oci-h5")
    r = kago("run", "--bundle", bundle, "oci-h5")
    assert r.returncode != 0 and "ran" not in r.stdout, r
    assert f"hooks.prestart[0] {hook}: exit status 1" in r.stderr, r.stderr
    nothing_left(kago, "oci-h5")


def test_hook_past_its_timeout_is_killed_and_reported(kago, bundle, hook, tmp_path):
    log = tmp_path / "log"
    args(bundle, "/bin/sleep", "60")
    set_hooks(bundle, {"createRuntime": [entry(hook, "createRuntime", log, "hang", timeout=2)]})
    kago.names.add("oci-h6")
    t0 = time.monotonic()
    rc, err = detached(kago, "create", "--bundle", bundle, "oci-h6", tmp=tmp_path)
    took = time.monotonic() - t0
    assert rc != 0 and f"hooks.createRuntime[0] {hook}: timed out after 2 s" in err, err
    assert 1.9 < took < 20, took
    pids = [int(p) for p in (tmp_path / "log.pids").read_text().split()]
    assert wait_for(lambda: all(exited(p) for p in pids)), "the hook and its child were not killed"
    nothing_left(kago, "oci-h6")


def test_poststart_and_poststop_failures_are_warnings(kago, bundle, hook, tmp_path):
    log = tmp_path / "log"
    args(bundle, "/bin/sleep", "60")
    set_hooks(bundle, {"poststart": [entry(hook, "poststart", log, "exit", "4"), entry(hook, "poststart2", log)],
                       "poststop": [entry(hook, "poststop", log, "exit", "6"), entry(hook, "poststop2", log)]})
    kago.names.add("oci-h7")
    rc, err = detached(kago, "create", "--bundle", bundle, "oci-h7", tmp=tmp_path)
    assert rc == 0, err
    logfile = tmp_path / "kago.log"
    r = kago("--log", logfile, "--log-format", "json", "start", "oci-h7")
    assert r.returncode == 0, r.stderr
    assert f"kago: warning: container oci-h7: hooks.poststart[0] {hook}: exit status 4" in r.stderr, r.stderr
    lines = [json.loads(l) for l in logfile.read_text().splitlines()]
    assert any(l["level"] == "warning" and "hooks.poststart[0]" in l["msg"] for l in lines), lines
    assert json.loads(kago("state", "oci-h7", check=True).stdout)["status"] == "running"
    r = kago("delete", "--force", "oci-h7")
    assert r.returncode == 0 and f"hooks.poststop[0] {hook}: exit status 6" in r.stderr, r.stderr
    # the rest of each list still ran
    assert [x["kind"] for x in records(log)] == ["poststart", "poststart2", "poststop", "poststop2"]
    nothing_left(kago, "oci-h7")


def test_hooks_in_the_container_namespaces_are_refused(kago, bundle, tmp_path):
    set_hooks(bundle, {"createContainer": [{"path": "/bin/true"}], "poststop": []})
    r = kago("run", "--bundle", bundle, "oci-h8")
    assert r.returncode != 0
    assert ("config.json: hooks.createContainer: not supported: kago runs runtime-namespace hooks only"
            in r.stderr), r.stderr
    set_hooks(bundle, {"poststart": [{"path": "/bin/true", "timeout": 0}]})
    r = kago("run", "--bundle", bundle, "oci-h8")
    assert r.returncode != 0 and "config.json: hooks.poststart[0].timeout: 0" in r.stderr, r.stderr
    nothing_left(kago, "oci-h8")


def test_a_large_state_and_a_missing_hook(kago, bundle, hook, tmp_path):
    log = tmp_path / "log"
    big = "x" * (300 << 10)   # the state outgrows a pipe's default 64 KiB
    args(bundle, "/bin/true")
    edit(bundle, lambda c: c.__setitem__("annotations", {"big": big}))
    set_hooks(bundle, {"createRuntime": [entry(hook, "createRuntime", log)]})
    kago.names.add("oci-h9")
    r = kago("run", "--bundle", bundle, "oci-h9")
    assert r.returncode == 0, r.stderr
    assert records(log)[0]["state"]["annotations"]["big"] == big
    set_hooks(bundle, {"createRuntime": [{"path": "/nonexistent/hook"}]})
    r = kago("run", "--bundle", bundle, "oci-h9")
    assert r.returncode != 0, r
    assert ("hooks.createRuntime[0] /nonexistent/hook: start: No such file or directory" in r.stderr), r.stderr
    nothing_left(kago, "oci-h9")

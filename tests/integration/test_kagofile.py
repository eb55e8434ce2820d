"""Kagofiles as a user runs them: `kago run Kagofile` with real containers, hooks, timers, signals, reload.

Every limit is read back from the container's cgroup files; every test ends with nothing left behind."""
import glob
import json
import os
import re
import signal
import subprocess
import textwrap
import time

import pytest

import conftest
from conftest import CGROUP_V, KAGO, REPO, ROOTFS, measure_cpu, wait_for


def cgroup_path(name, controller="memory"):
    """A Kagofile container's cgroup is named NAME-TAG (TAG: 4 hex digits of its --root)."""
    plain = conftest.cgroup_path(name, controller)
    tagged = glob.glob(plain + "-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]")
    return tagged[0] if len(tagged) == 1 and not os.path.isdir(plain) else plain


def cpu_quota(name):
    if CGROUP_V == 2:
        q, p = open(os.path.join(cgroup_path(name, "cpu"), "cpu.max")).read().split()
        return (None if q == "max" else int(q), int(p))
    q = int(open(os.path.join(cgroup_path(name, "cpu"), "cpu.cfs_quota_us")).read())
    p = int(open(os.path.join(cgroup_path(name, "cpu"), "cpu.cfs_period_us")).read())
    return (None if q < 0 else q, p)


def kf_cgroup(kago, name):
    """NAME-TAG, TAG the FNV-1a hash of the real path of --root folded to 16 bits (what kago computes)."""
    h = 0xcbf29ce484222325
    for b in os.path.realpath(kago.root).encode() + b"\0":
        h = ((h ^ b) * 0x100000001b3) & (2**64 - 1)
    return f"{name}-{(h ^ h >> 16 ^ h >> 32 ^ h >> 48) & 0xffff:04x}"


def leftovers(names):
    """conftest's leftovers, and the cgroups NAME-TAG."""
    tag = "-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]"
    found = conftest.leftovers(names)
    for n in names:
        found += glob.glob(f"/sys/fs/cgroup/*/kago/{n}{tag}") + glob.glob(f"/sys/fs/cgroup/kago/{n}{tag}")
    return found


def kagofile(tmp_path, body, name="Kagofile"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return str(p)


def memory_limit(name):
    if CGROUP_V == 2:
        v = open(os.path.join(cgroup_path(name, "memory"), "memory.max")).read().strip()
    else:
        v = open(os.path.join(cgroup_path(name, "memory"), "memory.limit_in_bytes")).read().strip()
    return None if v == "max" else int(v)


def pids_limit(name):
    v = open(os.path.join(cgroup_path(name, "pids"), "pids.max")).read().strip()
    return None if v == "max" else int(v)


def oom_kills(name):
    """The kernel's OOM-kill count for the container's cgroup (0 before the cgroup exists)."""
    f = "memory.events" if CGROUP_V == 2 else "memory.oom_control"
    try:
        with open(os.path.join(cgroup_path(name, "memory"), f)) as fh:
            return int(re.search(r"^oom_kill (\d+)", fh.read(), re.M).group(1))
    except (OSError, AttributeError):
        return 0


def cgroup_exists(name):
    return os.path.isdir(cgroup_path(name, "memory"))


class Supervisor:
    """A foreground `kago run Kagofile` (the process is the supervisor). Its output goes to files: the
    containers inherit them, and a pipe would keep a reader waiting for as long as any of them lives."""

    def __init__(self, kago, path, *args, names=()):
        kago.names.update(names)
        self.kago = kago
        d = os.path.dirname(kago.root)  # the test's tmp_path, never the source tree
        self.outf, self.errf = open(os.path.join(d, "sup.out"), "w+"), open(os.path.join(d, "sup.err"), "w+")
        self.p = subprocess.Popen([KAGO, "--root", kago.root, "run", path, "--verbose", *args],
                                  stdout=self.outf, stderr=self.errf, text=True)
        self.out = self.err = None

    def wait(self, timeout=30):
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.send_signal(signal.SIGTERM)  # it stops and deletes its containers
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
            raise
        finally:
            self.outf.seek(0)
            self.errf.seek(0)
            self.out, self.err = self.outf.read(), self.errf.read()
        return self.p.returncode

    def signal(self, sig):
        self.p.send_signal(sig)


def running(kago, name):
    r = kago("state", name)
    return r.returncode == 0 and '"running"' in r.stdout


def assert_clean(kago, names):
    left = leftovers(names)
    left += [n for n in names if os.path.exists(os.path.join(kago.root, n))]
    assert not left, f"left behind: {left}"
    sup = os.path.join(kago.root, "supervisors")
    assert not os.path.exists(sup) or not os.listdir(sup), os.listdir(sup)


# --- the seed's demo --------------------------------------------------------------------------------------

def test_cpu_demo_30_20_50(kago, rootfs):
    """examples/cpu-demo.rb: CPU limit 30% -> 20% -> 50% of one core while the container computes."""
    phase = 3.0
    sup = Supervisor(kago, os.path.join(REPO, "examples", "cpu-demo.rb"), "--set", f"phase={phase:g}",
                     names=["cpu-demo"])
    assert wait_for(lambda: running(kago, "cpu-demo"), timeout=5), "cpu-demo did not start"
    t0 = time.monotonic()
    results = []
    for expect, quota in ((30, 30000), (20, 20000), (50, 50000)):
        start = len(results) * phase + 0.4
        time.sleep(max(0, t0 + start - time.monotonic()))
        assert cpu_quota("cpu-demo")[0] == quota, f"cgroup quota in phase {expect}%"
        used = measure_cpu(kago, "cpu-demo", seconds=2.0)
        results.append(used)
        assert abs(used - expect) <= 5, f"phase {expect}%: used {used:.1f}% of a core"
    assert sup.wait(timeout=20) == 0, sup.err
    assert "cpu-demo ended" in sup.out
    # each live change is logged, in order
    said = [l.split("limits updated live: ", 1)[1] for l in sup.err.splitlines() if "cpu-demo: limits updated live: " in l]
    assert said == ["cpu 20%", "cpu 50%"], sup.err
    print("cpu-demo phases (% of one core):", [round(x, 1) for x in results])
    print("\n".join(l for l in sup.err.splitlines() if "fired" in l))
    assert_clean(kago, ["cpu-demo"])


# --- hooks ------------------------------------------------------------------------------------------------

def test_hooks_fire_in_order_with_arguments(kago, rootfs, tmp_path):
    log = tmp_path / "hooks.log"
    path = kagofile(tmp_path, f"""
        LOG = "{log}"
        def note(s)
          File.open(LOG, "a") {{ |f| f.puts s }}
        end
        Kago.container "kf-fail" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sh", "-c", "sleep 0.3; exit 3"
          c.before_start {{ |ct| note "before_start #{{ct.name}} #{{ct.pid > 0}} #{{ct.status}}" }}
          c.after_start  {{ |ct| note "after_start #{{ct.name}} #{{ct.status}}" }}
          c.on_exit      {{ |ct, st| note "on_exit #{{ct.name}} #{{st}} #{{ct.stats.key?(:cpu_usage_us)}}" }}
          c.on_failure   {{ |ct, st| note "on_failure #{{ct.name}} #{{st}}" }}
        end
        Kago.container "kf-stopped" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
          c.init
          c.after("0.5s") {{ |ct| note "after #{{ct.name}}"; ct.stop(grace: "2s") }}
          c.on_exit      {{ |ct, st| note "on_exit #{{ct.name}} #{{st}}" }}
          c.on_failure   {{ |ct, st| note "on_failure #{{ct.name}} #{{st}}" }}
        end
    """)
    sup = Supervisor(kago, path, names=["kf-fail", "kf-stopped"])
    rc = sup.wait(timeout=20)
    assert rc == 1, f"a container failed: exit code 1\n{sup.err}"
    lines = log.read_text().splitlines()
    fail = [l for l in lines if "kf-fail" in l]
    assert fail == ["before_start kf-fail true created", "after_start kf-fail running",
                    "on_exit kf-fail 3 true", "on_failure kf-fail 3"], lines
    stopped = [l for l in lines if "kf-stopped" in l]
    assert stopped[0] == "after kf-stopped" and stopped[1].startswith("on_exit kf-stopped "), lines
    assert len(stopped) == 2, "a container the supervisor stopped is not a failure"
    assert_clean(kago, ["kf-fail", "kf-stopped"])


def test_timer_and_signal_handlers_change_limits_live(kago, rootfs, tmp_path):
    log = tmp_path / "t.log"
    raw = '"cpu.cfs_quota_us" => 40000' if CGROUP_V == 1 else '"cpu.max" => "40000 100000"'
    quota_file = os.path.join(conftest.cgroup_path(kf_cgroup(kago, "kf-live"), "cpu"),
                              "cpu.cfs_quota_us" if CGROUP_V == 1 else "cpu.max")
    path = kagofile(tmp_path, f"""
        Kago.container "kf-live" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
          c.init
          c.cgroup cpu: "30%", memory: "64M", pids: 32
          c.after("0.5s") do |ct|
            t0 = Time.now
            ct.update(cpu: "20%", memory: "48M")
            q = File.read("{quota_file}").strip
            File.open("{log}", "a") {{ |f| f.puts "timer #{{q}} #{{((Time.now - t0) * 1e6).round}}" }}
          end
          c.on_signal(:USR1) {{ |ct| ct.update(cpu: "25%", pids: 16) }}
          c.on_signal(:USR2) {{ |ct| ct.update({raw}) }}
        end
    """)
    sup = Supervisor(kago, path, names=["kf-live"])
    assert wait_for(lambda: running(kago, "kf-live"), timeout=5)
    assert cpu_quota("kf-live")[0] == 30000 and memory_limit("kf-live") == 64 << 20
    assert wait_for(lambda: log.exists(), timeout=3), "the timer did not fire"
    assert cpu_quota("kf-live")[0] == 20000 and memory_limit("kf-live") == 48 << 20
    sup.signal(signal.SIGUSR1)
    assert wait_for(lambda: cpu_quota("kf-live")[0] == 25000 and pids_limit("kf-live") == 16, timeout=3)
    sup.signal(signal.SIGUSR2)
    assert wait_for(lambda: cpu_quota("kf-live")[0] == 40000, timeout=3)
    pid = kago.state("kf-live")["pid"]
    sup.signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0, sup.err
    q, took_us = log.read_text().split()[1:3]
    print(f"timer -> limit in effect (update + read back): {int(took_us)} us")
    print("\n".join(l for l in sup.err.splitlines() if "fired" in l or "ran in" in l))
    assert not os.path.exists(f"/proc/{pid}"), "the container's process outlived the supervisor"
    assert_clean(kago, ["kf-live"])


def test_reload_applies_memory_live_and_reports_the_rest(kago, rootfs, tmp_path):
    src = """
        Kago.container "kf-reload" do |c|
          c.rootfs "{rootfs}"
          c.command "/bin/sleep", "1000"
          c.init
          c.hostname "{host}"
          c.cgroup memory: "{mem}", cpu: "50%"
        end
    """
    path = kagofile(tmp_path, src.format(rootfs=ROOTFS, host="one", mem="64M"))
    sup = Supervisor(kago, path, names=["kf-reload"])
    assert wait_for(lambda: running(kago, "kf-reload"), timeout=5)
    pid = kago.state("kf-reload")["pid"]
    assert memory_limit("kf-reload") == 64 << 20

    kagofile(tmp_path, src.format(rootfs=ROOTFS, host="two", mem="96M"))
    r = kago("reload", "kf-reload", check=True)
    assert memory_limit("kf-reload") == 96 << 20, r.stdout
    assert "hostname changed: cannot change while running" in r.stdout, r.stdout
    assert "memory 67108864 -> 100663296" in r.stdout, r.stdout
    assert cpu_quota("kf-reload")[0] == 50000, "an unchanged limit is left alone"

    # SIGHUP does the same for every container of the file
    kagofile(tmp_path, src.format(rootfs=ROOTFS, host="two", mem="128M"))
    sup.signal(signal.SIGHUP)
    assert wait_for(lambda: memory_limit("kf-reload") == 128 << 20, timeout=3)

    # a broken file changes nothing and says where it is broken
    kagofile(tmp_path, src.format(rootfs=ROOTFS, host="two", mem="lots"))
    r = kago("reload", "kf-reload")
    assert r.returncode != 0 and re.search(r"Kagofile:7: .*size \"lots\"", r.stderr), r.stderr
    assert memory_limit("kf-reload") == 128 << 20
    assert kago.state("kf-reload")["pid"] == pid, "reload restarted the container"

    r = kago("reload", "no-such-container")
    assert r.returncode != 0 and "no-such-container" in r.stderr
    sup.signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0, sup.err
    assert_clean(kago, ["kf-reload"])


def test_hook_exception_is_survived(kago, rootfs, tmp_path):
    path = kagofile(tmp_path, f"""
        Kago.container "kf-boom" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
          c.init
          c.after("0.2s") {{ |ct| raise "boom" }}
          c.every("0.2s") {{ |ct| ct.no_such_method }}
          c.after("0.8s") {{ |ct| ct.update(pids: 20) }}
          c.after("1.2s") {{ |ct| ct.stop }}
        end
    """)
    sup = Supervisor(kago, path, names=["kf-boom"])
    assert wait_for(lambda: running(kago, "kf-boom"), timeout=5)
    assert wait_for(lambda: os.path.exists(os.path.join(cgroup_path("kf-boom", "pids"), "pids.max")) and
                    pids_limit("kf-boom") == 20, timeout=3), "hooks stopped running after an exception"
    assert sup.wait(timeout=15) == 0, sup.err
    assert re.search(r"kf-boom: after\(0\.2s\) hook failed: .*Kagofile:6: boom \(RuntimeError\)", sup.err), sup.err
    assert re.search(r"every\(0\.2s\) hook failed: .*Kagofile:7: undefined method 'no_such_method'", sup.err)
    assert_clean(kago, ["kf-boom"])


def test_ready_hook_waits_for_a_port_in_the_container_netns(kago, rootfs, tmp_path):
    log = tmp_path / "ready.log"
    path = kagofile(tmp_path, f"""
        Kago.container "kf-ready" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sh", "-c", "sleep 0.5; exec httpd -f -p 127.0.0.1:8080"
          c.init
          c.ready(port: 8080, timeout: "5s") {{ |ct, ok| File.open("{log}", "a") {{ |f| f.puts "web #{{ok}}" }}; ct.stop(grace: "1s") }}
        end
        Kago.container "kf-never" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
          c.init
          c.ready(port: 8081, timeout: "0.5s") {{ |ct, ok| File.open("{log}", "a") {{ |f| f.puts "never #{{ok}}" }}; ct.stop(grace: "1s") }}
        end
    """)
    t0 = time.monotonic()
    sup = Supervisor(kago, path, names=["kf-ready", "kf-never"])
    assert sup.wait(timeout=20) == 0, sup.err
    assert sorted(log.read_text().split("\n")[:2]) == ["never false", "web true"], sup.err
    m = re.search(r"kf-ready: ready after (\d+) ms", sup.err)
    assert m and 450 <= int(m.group(1)) < 3000, sup.err
    # the port is the container's: nothing listens on the host's 127.0.0.1:8080 for it
    assert time.monotonic() - t0 < 15
    assert_clean(kago, ["kf-ready", "kf-never"])


def test_sysfs_false_and_the_default(kago, rootfs, tmp_path):
    # c.sysfs false: /sys is an empty read-only tmpfs (but for the container's cgroup under it); the
    # default keeps its sysfs
    show = ("while read -r a b c d mp rest; do [ $mp = /sys ] && echo ${rest#* - }; done < /proc/self/mountinfo; "
            "ls -A /sys | tr '\\n' ' '; echo")
    path = kagofile(tmp_path, f"""
        Kago.container "kf-nosys" do |c|
          c.rootfs "{ROOTFS}"
          c.sysfs false
          c.command "/bin/sh", "-c", "echo nosys; {show}"
        end
    """)
    sup = Supervisor(kago, path, names=["kf-nosys"])
    assert sup.wait() == 0, sup.err
    lines = sup.out.splitlines()
    assert lines[0] == "nosys" and lines[1].startswith("tmpfs tmpfs rw,size=16k,mode=755") and lines[2] == "fs ", \
        sup.out
    path = kagofile(tmp_path, f"""
        Kago.container "kf-sys" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sh", "-c", "echo sys; {show}"
        end
    """, "K2.rb")
    sup = Supervisor(kago, path, names=["kf-sys"])
    assert sup.wait() == 0, sup.err
    lines = sup.out.splitlines()
    assert lines[0] == "sys" and lines[1].startswith("sysfs sysfs ") and "class" in lines[2].split(), sup.out
    r = kago("check", kagofile(tmp_path, 'Kago.container "x" do |c|\n  c.command "x"\n  c.sysfs "no"\nend\n', "K3.rb"))
    assert r.returncode != 0 and "K3.rb:3: sysfs: expected true or false" in r.stderr, r.stderr
    assert_clean(kago, ["kf-nosys", "kf-sys"])


def test_on_oom(kago, rootfs, tmp_path):
    log = tmp_path / "oom.log"
    path = kagofile(tmp_path, f"""
        Kago.container "kf-oom" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sh", "-c", "sleep 0.2; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 1000"
          c.init
          c.cgroup memory: "16M"
          c.on_oom {{ |ct| File.open("{log}", "a") {{ |f| f.puts "oom #{{ct.stats[:oom_kills]}}" }}; ct.stop(grace: "1s") }}
        end
    """)
    sup = Supervisor(kago, path, names=["kf-oom"])
    # the hook runs on the cgroup's OOM event: within a moment of the kill, not at a once-a-second poll
    t_kill = t_hook = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and t_hook is None:
        if t_kill is None and oom_kills("kf-oom") > 0:
            t_kill = time.monotonic()
        if log.exists():
            t_hook = time.monotonic()
        time.sleep(0.002)
    code = sup.wait(timeout=20)
    assert t_hook is not None, sup.err
    # (the kill may go unseen here: under emulation the hook can run, and the container end, between
    # two of these reads)
    assert t_kill is None or t_hook - t_kill < 0.3, f"on_oom ran {t_hook - t_kill:.3f} s after the OOM kill"
    assert code == 0, sup.err
    assert log.exists() and log.read_text().startswith("oom "), sup.err
    assert int(log.read_text().split()[1]) >= 1
    assert_clean(kago, ["kf-oom"])


# --- many containers, detach ------------------------------------------------------------------------------

def test_fifty_containers_from_one_loop_start_and_clean_up(kago, rootfs, tmp_path):
    names = [f"kf50-{i}" for i in range(50)]
    kago.names.update(names)
    path = kagofile(tmp_path, f"""
        n = Kago.set("count", "1").to_i
        n.times do |i|
          Kago.container "kf50-#{{i}}" do |c|
            c.rootfs "{ROOTFS}"
            c.command "/bin/sleep", "1000"
            c.init
            c.cgroup cpu: "#{{5 + i % 10}}%", memory: "32M", pids: 8
            c.every("1s") {{ |ct| ct.stats }}
            c.stop_grace "2s"
          end
        end
    """)
    # the supervisor's own footprint, with one container, to tell the per-container cost
    kago("run", path, "--set", "count=1", "--detach", check=True)
    pid1 = int(open(os.path.join(kago.root, "supervisors", "kf50-0.pid")).read())
    rss1_kb = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid1}/status").read()).group(1))
    os.kill(pid1, signal.SIGTERM)
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid1}"), timeout=15, step=0.05)
    t0 = time.monotonic()
    r = kago("check", path, "--set", "count=50", check=True)
    assert r.stdout.count("container kf50-") == 50 and r.stdout.strip().endswith(": ok")
    assert not any(cgroup_exists(n) for n in names), "kago check started something"
    t1 = time.monotonic()
    r = kago("run", path, "--set", "count=50", "--detach", "--verbose", check=True, timeout=120)
    t2 = time.monotonic()
    pidfiles = glob.glob(os.path.join(kago.root, "supervisors", "*.pid"))
    assert len(pidfiles) == 50
    sup_pid = int(open(pidfiles[0]).read())
    assert all(cgroup_exists(n) for n in names)
    assert cpu_quota("kf50-7")[0] == 12000 and memory_limit("kf50-49") == 32 << 20
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{sup_pid}/status").read()).group(1))
    listed = kago("list").stdout
    assert all(n in listed for n in names[:3])
    os.kill(sup_pid, signal.SIGTERM)
    assert wait_for(lambda: not os.path.exists(f"/proc/{sup_pid}"), timeout=30, step=0.1)
    t3 = time.monotonic()
    ev = re.search(r"evaluated in ([\d.]+) ms", r.stderr)
    print(f"50 containers: check {t1 - t0:.2f}s, start {t2 - t1:.2f}s, stop+cleanup {t3 - t2:.2f}s, "
          f"supervisor RSS {rss_kb} kB (1 container: {rss1_kb} kB; {(rss_kb - rss1_kb) / 49:.0f} kB per extra "
          f"container), evaluation {ev and ev.group(1)} ms")
    assert_clean(kago, names)
    procs = subprocess.run(["pgrep", "-f", "sleep 1000"], capture_output=True, text=True).stdout.split()
    for p in procs:
        try:
            assert "/kf50-" not in open(f"/proc/{p}/cgroup").read()
        except FileNotFoundError:
            pass


# --- bad input --------------------------------------------------------------------------------------------

def test_bad_kagofile_reports_file_line_and_starts_nothing(kago, rootfs, tmp_path):
    path = kagofile(tmp_path, f"""
        Kago.container "kf-bad1" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
        end
        Kago.container "kf-bad2" do |c|
          c.command "/bin/sleep", "1000"
          c.cgroup memroy: "64M"
        end
    """)
    for verb in ("check", "run"):
        r = kago(verb, path)
        assert r.returncode != 0
        assert r.stderr.strip() == f'kago: {path}:8: cgroup: unknown limit "memroy" (cpu, cpu_period, cpu_weight, ' \
                                   f'memory, pids, cpuset, or a raw controller key like "cpu.cfs_quota_us") ' \
                                   f'(ArgumentError)', r.stderr
    # limits written as a block (as some DSLs take them) would be silently ignored by Ruby: refused
    path = kagofile(tmp_path, "Kago.container 'x' do |c|\n  c.command 'x'\n  c.cgroup do |g|\n    g.cpu 20\n"
                              "  end\nend\n", "K1.rb")
    r = kago("check", path)
    assert r.returncode != 0 and f"{path}:3: cgroup: takes its limits as arguments" in r.stderr, r.stderr
    path = kagofile(tmp_path, "Kago.container 'x' do |c|\n  c.command 'x'\n  c.frobnicate 3\nend\n", "K2.rb")
    r = kago("check", path)
    assert r.returncode != 0 and f"{path}:3: undefined method 'frobnicate'" in r.stderr
    path = kagofile(tmp_path, "Kago.container 'x' do |c|\n  c.command 'x'\n", "K3.rb")
    r = kago("run", path)
    assert r.returncode != 0 and f"{path}:3: " in r.stderr and "SyntaxError" in r.stderr
    # a container that cannot start: the ones before it are removed again
    path = kagofile(tmp_path, f"""
        Kago.container "kf-ok" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
        end
        Kago.container "kf-norootfs" do |c|
          c.rootfs "{tmp_path}/no-such-rootfs"
          c.command "/bin/sleep", "1000"
        end
    """, "K4.rb")
    kago.names.update(["kf-ok", "kf-norootfs", "kf-bad1", "kf-bad2"])
    r = kago("run", path, timeout=30)
    assert r.returncode != 0 and "no-such-rootfs" in r.stderr, r.stderr
    assert_clean(kago, ["kf-ok", "kf-norootfs", "kf-bad1", "kf-bad2"])


# --- a killed supervisor: the next one adopts ---------------------------------------------------------------

def cg_name(kago, name):
    """The cgroup name of a Kagofile container: its name and its root's tag (two roots never share one)."""
    return json.load(open(os.path.join(kago.root, name, "state.json")))["spec"]["cgroup_path"].split("/")[-1]


def test_killed_supervisor_is_adopted_by_the_next_one(kago, rootfs, tmp_path):
    log = tmp_path / "hooks.log"
    body = """
        Kago.container "kf-ad-a" do |c|
          c.rootfs "{rootfs}"
          c.command "/bin/sleep", "1000"
          c.init
          c.hostname "{host}"
          c.stop_grace "1s"
          c.every("200ms") {{ |ct| File.open("{log}", "a") {{ |f| f.puts "tick #{{ct.pid}}" }} }}
        end
        Kago.container "kf-ad-b" do |c|
          c.rootfs "{rootfs}"
          c.command "/bin/sleep", "1000"
          c.init
          c.stop_grace "1s"
        end
    """
    path = kagofile(tmp_path, body.format(rootfs=ROOTFS, host="a1", log=log))
    names = ["kf-ad-a", "kf-ad-b"]
    sup = Supervisor(kago, path, names=names)
    assert wait_for(lambda: all(running(kago, n) for n in names), timeout=20)
    pids = {n: kago.state(n)["pid"] for n in names}
    cgs = [cg_name(kago, n) for n in names]
    kago.names.update(cgs)
    assert cgs == [kf_cgroup(kago, n) for n in names]
    assert cgs[0].startswith("kf-ad-a-") and cgroup_exists(cgs[0])
    assert not os.path.isdir(conftest.cgroup_path("kf-ad-a")), "named by the container alone"
    sup.p.kill()
    sup.wait()
    time.sleep(0.3)
    # the containers outlive the supervisor
    assert all(os.path.exists(f"/proc/{p}") for p in pids.values()), "a killed supervisor took its containers"
    # restarted with kf-ad-a's definition changed (hostname): a is replaced, b adopted
    path = kagofile(tmp_path, body.format(rootfs=ROOTFS, host="a2", log=log))
    sup2 = Supervisor(kago, path, names=names)
    assert wait_for(lambda: "kf-ad-a: started" in open(sup2.errf.name).read(), timeout=20), \
        open(sup2.errf.name).read()
    err = open(sup2.errf.name).read()
    assert "kf-ad-b: adopted from the previous supervisor, pid %d" % pids["kf-ad-b"] in err, err
    assert "kf-ad-a: removed the container of the previous supervisor: its definition changed" in err, err
    assert kago.state("kf-ad-b")["pid"] == pids["kf-ad-b"]
    new_a = kago.state("kf-ad-a")["pid"]
    assert new_a != pids["kf-ad-a"] and not os.path.exists(f"/proc/{pids['kf-ad-a']}")
    assert "kf-ad-b: started" not in err
    # killed again, nothing changed, but b's process dies meanwhile: a adopted (same pid, its timer hook
    # runs on), b's remains removed and b started anew
    sup2.p.kill()
    sup2.wait()
    os.kill(pids["kf-ad-b"], signal.SIGKILL)
    assert wait_for(lambda: not running(kago, "kf-ad-b"), timeout=10)
    sup3 = Supervisor(kago, path, names=names)
    assert wait_for(lambda: "kf-ad-b: started" in open(sup3.errf.name).read(), timeout=20), \
        open(sup3.errf.name).read()
    err = open(sup3.errf.name).read()
    assert "kf-ad-a: adopted from the previous supervisor, pid %d" % new_a in err, err
    assert "kf-ad-b: removed the container of the previous supervisor: its process is gone" in err, err
    assert kago.state("kf-ad-a")["pid"] == new_a and kago.state("kf-ad-b")["pid"] != pids["kf-ad-b"]
    ticks = lambda: open(log).read().count(f"tick {new_a}") if os.path.exists(log) else 0  # (first at 200 ms)
    n0 = ticks()
    assert wait_for(lambda: ticks() >= n0 + 2, timeout=5), "timers not re-armed"
    # a second supervisor of the same containers is refused while this one runs
    r = kago("run", path)
    assert r.returncode != 0 and "another Kagofile supervisor runs it" in r.stderr, r.stderr
    # SIGTERM: everything goes (no cgroup, state dir, mount, record)
    sup3.signal(signal.SIGTERM)
    sup3.wait(timeout=30)
    assert_clean(kago, names + cgs)


def test_two_roots_run_the_same_names_apart(kago, rootfs, tmp_path):
    from conftest import Kago
    other = Kago(str(tmp_path / "state2"))
    path = kagofile(tmp_path, f"""
        Kago.container "kf-two" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
          c.stop_grace "1s"
        end
    """)
    kago.names.add("kf-two")
    other.names.add("kf-two")
    kago("run", path, "--detach", check=True)
    try:
        other("run", path, "--detach", check=True)
        a, b = cg_name(kago, "kf-two"), cg_name(other, "kf-two")
        assert a != b and cgroup_exists(a) and cgroup_exists(b)
        kago.names.update([a, b])
    finally:
        for k in (kago, other):
            pf = os.path.join(k.root, "supervisors", "kf-two.pid")
            if os.path.exists(pf):
                pid = int(open(pf).read())
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=15)
    assert_clean(kago, ["kf-two", a, b])
    assert_clean(other, ["kf-two"])


def test_stop_a_lone_init_cannot_act_on_is_a_sigkill_at_once(kago, rootfs, tmp_path):
    """Without c.init the command is the init of its pid namespace: `sleep` neither catches nor ignores SIGTERM,
    so the kernel discards it, and alone it could never stop: the supervisor's stop sends SIGKILL at once
    rather than wait its 30 s grace. One that ignores SIGTERM on purpose keeps its grace (2 s here)."""
    path = kagofile(tmp_path, f"""
        Kago.container "kf-deaf" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sleep", "1000"
          c.stop_grace "30s"
        end
        Kago.container "kf-deaf-ign" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/sh", "-c", "trap '' TERM; exec /bin/sleep 1000"
          c.stop_grace "2s"
        end
    """)
    names = ["kf-deaf", "kf-deaf-ign"]
    sup = Supervisor(kago, path, names=names)
    assert wait_for(lambda: all(running(kago, n) for n in names), timeout=10)
    t0 = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 0, sup.err
    took = time.monotonic() - t0
    assert "kf-deaf: its init neither catches nor ignores signal 15 and runs alone: SIGKILL at once" in sup.err, sup.err
    assert "kf-deaf-ign: its init neither" not in sup.err, sup.err
    assert "kf-deaf-ign: still running after its stop grace: SIGKILL" in sup.err, sup.err
    assert 1.5 <= took < 15, took  # (the ignoring one's 2 s grace, not the other's 30 s)
    assert_clean(kago, names)


def test_check_says_a_missing_rootfs(kago, tmp_path):
    """kago check: a rootfs directory that is not there (yet) is valid Ruby and a valid spec, but a start would
    fail: a warning names it and why, the check still passes (the tree may be built after the file)."""
    missing = str(tmp_path / "no-rootfs")
    path = kagofile(tmp_path, f"""
        Kago.container "kf-norootfs" do |c|
          c.rootfs "{missing}"
          c.command "/bin/true"
        end
        Kago.app "kf-app" do |a|
          a.hosts "kf.test"
          a.container do |c|
            c.rootfs "{ROOTFS}"
            c.command "/bin/true"
          end
        end
    """)
    r = kago("check", path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == f"kago: warning: container kf-norootfs: rootfs {missing}: No such file or " \
                               "directory (a start would fail)", r.stderr
    assert r.stdout.strip().endswith(f"{path}: ok, 1 warning"), r.stdout


@pytest.mark.parametrize("line,msg", [
    ('c.hostname "' + "h" * 65 + '"', "longer than 64 characters"),
    ("c.seccomp do |s| s.errno :no_such_call end", 'seccomp: unknown syscall "no_such_call"'),
])
def test_check_refuses_what_a_start_would(kago, tmp_path, line, msg):
    # what every start would refuse is refused by kago check, with the file's line, not first at a start
    path = kagofile(tmp_path, f"""
        Kago.container "kf-refused" do |c|
          c.rootfs "{ROOTFS}"
          c.command "/bin/true"
          {line}
        end
    """)
    r = kago("check", path)
    assert r.returncode != 0 and msg in r.stderr and "Kagofile:" in r.stderr, r.stderr


def test_check_refuses_an_app_no_request_could_start(kago, tmp_path):
    # max_pending 0 was taken: every request of the app was 503 and no instance ever started
    path = kagofile(tmp_path, f"""
        Kago.app "kf-nopending" do |a|
          a.hosts "kf.test"
          a.container do |c|
            c.rootfs "{ROOTFS}"
            c.command "/bin/true"
          end
          a.max_pending 0
        end
    """)
    r = kago("check", path)
    assert r.returncode != 0 and "max_pending: must be at least 1" in r.stderr and "Kagofile:8" in r.stderr, r.stderr

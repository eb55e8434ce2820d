"""kago serve's /metrics at scale: per-app series are counters and gauges (an idle app's zeros left out),
the histograms are summed over all apps unless --metrics-app-histograms, and /metrics?app=NAME gives
one app's every series, its histograms included."""
import re

import pytest

from serve_util import STATIC, Server, admin_request, app, request, serving

APPS = app("one", ["one.test"], STATIC, stop_grace="1s") + app("two", ["two.test"], STATIC, stop_grace="1s") + "".join(
    app(f"idle{i}", [f"idle{i}.test"], STATIC) for i in range(50))


def families(body):
    """Checks the text format: every series follows its own family's # TYPE, each family once."""
    seen, cur = set(), None
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            name, typ = line.split()[2:4]
            assert name not in seen, f"family {name} twice"
            assert typ in ("counter", "gauge", "histogram")
            seen.add(name)
            cur = (name, typ)
        elif line.startswith("# HELP "):
            continue
        else:
            m = re.match(r'^([a-z_][a-z0-9_]*)(\{[^}]*\})? (\S+)$', line)
            assert m, f"bad line {line!r}"
            base = cur[0]
            assert m.group(1) == base or (cur[1] == "histogram" and m.group(1) in
                                          (base + "_bucket", base + "_sum", base + "_count")), line
            float(m.group(3))
    return seen


def series(body, name):
    return [l for l in body.splitlines() if l.startswith(name + "{") or l.startswith(name + " ")]


@pytest.fixture(scope="module")
def srv():
    yield from serving(APPS)


def test_aggregated_histogram_counts_cold_starts_and_no_app_histograms(srv):
    for host in ("one.test", "two.test"):
        st, _, _ = request(srv.port, host)
        assert st == 200
    body = srv.metrics()
    fams = families(body)
    assert {"kago_cold_start_seconds", "kago_cold_starts_total", "kago_instances", "kago_apps"} <= fams
    # Summed over all apps: no app label, and it counts both cold starts.
    assert series(body, "kago_cold_start_seconds_count") == [
        'kago_cold_start_seconds_count{tier="cold"} 2', 'kago_cold_start_seconds_count{tier="restore"} 0']
    assert not [l for l in body.splitlines() if "_bucket{app=" in l], "per-app histograms by default"
    assert 'kago_cold_starts_total{app="one"} 1' in body and 'kago_cold_starts_total{app="idle7"} 0' in body
    assert 'kago_instances{app="one",state="ready"} 1' in body
    assert "kago_apps 52" in body
    # An idle app costs its two lines, no zeros else.
    assert len([l for l in body.splitlines() if 'app="idle7"' in l]) == 2
    # each instance's use, read from its cgroup: a running httpd holds some memory and has used some CPU
    inst = srv.instances("one", states=("ready",))[0]["name"]
    mem = float(re.search(rf'^kago_instance_memory_bytes{{app="one",instance="{inst}"}} (\S+)$', body, re.M).group(1))
    cpu = float(re.search(rf'^kago_instance_cpu_seconds_total{{app="one",instance="{inst}"}} (\S+)$', body, re.M).group(1))
    assert 100_000 < mem < 512 << 20 and 0 < cpu < 60, (mem, cpu)
    ps = {i["name"]: i for i in srv.ps()["one"]["instances"]}
    assert ps[inst]["memory"] > 100_000 and ps[inst]["cpu_s"] > 0, ps[inst]


def test_metrics_for_one_app(srv):
    request(srv.port, "one.test")
    body = srv.admin_get("/metrics?app=one")
    families(body)
    apps = set(re.findall(r'app="([^"]*)"', body))
    assert apps == {"one"}, apps
    # every series of it, zeros and its histograms included; nothing server-wide
    assert 'kago_cold_start_seconds_count{app="one",tier="cold"} 1' in body
    assert 'kago_thaw_seconds_count{app="one"} 0' in body
    assert 'kago_instances{app="one",state="draining"} 0' in body
    assert 'kago_checkpoints_total{app="one"} 0' in body
    assert "kago_connections" not in body and "kago_apps" not in body
    # an app never started: zeros
    idle = srv.admin_get("/metrics?app=idle3")
    assert 'kago_cold_start_seconds_count{app="idle3",tier="cold"} 0' in idle
    st, _, msg = admin_request(srv.admin, srv.root, "/metrics?app=nosuch", timeout=5)
    assert st == 404 and "nosuch" in msg
    # a NUL never ends a name early: "one%00x" is no app, and the dashboard's actions refuse it too
    st, _, msg = admin_request(srv.admin, srv.root, "/metrics?x=1&app=one%00x", timeout=5)
    assert st == 404, (st, msg)
    st, _, msg = admin_request(srv.admin, srv.root, "/drain?app=one%00x", method="POST", timeout=5)
    assert st == 404 and "no such app" in msg, (st, msg)


def test_app_histograms_when_asked():
    s = Server(app("h1", ["h1.test"], STATIC, stop_grace="1s") + app("h2", ["h2.test"], STATIC),
               extra_args=["--metrics-app-histograms"])
    try:
        assert request(s.port, "h1.test")[0] == 200
        body = s.metrics()
        families(body)
        assert 'kago_cold_start_seconds_count{app="h1",tier="cold"} 1' in body
        assert 'app="h2",tier=' not in body  # never started: no histogram of it
        assert not [l for l in series(body, "kago_cold_start_seconds_count") if "app=" not in l]
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []

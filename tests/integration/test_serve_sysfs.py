"""kago serve's instances with a network namespace of their own (loopback only) share one sysfs: the spawner
makes it once, in a namespace of its own holding only loopback, and each instance gets a clone of its mount
(docs/serve.md, "Many instances and sysfs"). What an instance sees is what a sysfs of its own showed: only
lo under /sys/class/net, read-only; an app with c.sysfs false still gets its empty tmpfs; the host sees no
mount of it; a spawner started again makes another; nothing is left after serve stops. Needs root, the
busybox rootfs and build/kago."""
import os
import signal

import pytest

from serve_util import KAGO, ROOTFS, Server, app, request, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

# what the instance sees of /sys: its network devices, the device number and type of the /sys mount, whether
# a write there fails, and lo's index
VIEW = ("mkdir -p /srv/www && { echo $(ls /sys/class/net); stat -c %d /sys; "
        "awk '$5 == \"/sys\"' /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1; "
        "touch /sys/kago-write 2>/dev/null && echo writable || echo read-only; "
        "cat /sys/class/net/lo/ifindex 2>/dev/null || echo none; } > /srv/www/index.html && "
        "exec /usr/sbin/httpd -f -p 8080 -h /srv/www")


def view(s, host):
    st, _, body = request(s.port, host)
    assert st == 200, body
    net, dev, fstype, write, ifindex = body.decode().split("\n")[:5]
    return net, dev, fstype, write, ifindex


def spawner_of(s):
    with open(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children") as f:
        for p in f.read().split():
            try:
                if open(f"/proc/{p}/comm").read().strip() == "kago-spawner":
                    return int(p)
            except OSError:
                pass
    return None


@pytest.mark.parametrize("warm", [(), ("--warm", "0")], ids=["pooled", "warm-0"])
def test_instances_share_one_sysfs_of_loopback_only(warm):
    no_sysfs = app("none", ["none.test"], VIEW, stop_grace="1s").replace("    c.init\n", "    c.init\n    c.sysfs false\n")
    apps = (app("a", ["a.test"], VIEW, stop_grace="1s") + app("b", ["b.test"], VIEW, stop_grace="1s") +
            app("c", ["c.test"], VIEW, stop_grace="1s") + no_sysfs)
    s = Server(apps, extra_args=warm)  # (--warm 0: serve reads the spawner's own socket only as it starts it)
    try:
        host_dev = str(os.stat("/sys").st_dev)
        a, b = view(s, "a.test"), view(s, "b.test")
        assert a == (a[0], a[1], "sysfs", "read-only", "1") and a[0] == "lo", a
        # one sysfs for both (its mount cloned), not the host's (whose class/net shows the host's devices)
        assert b == a and a[1] != host_dev, (a, b, host_dev)
        with open("/proc/self/mountinfo") as f:
            assert ".serve/.sys" not in f.read()  # (the spawner's mount namespace holds it, not the host's)
        none = view(s, "none.test")
        assert none[2] == "tmpfs" and none[0] == "" and none[3:] == ("read-only", "none"), none  # c.sysfs false
        # a spawner started again makes another shared sysfs, and instances started after it see the same
        old = spawner_of(s)
        assert old
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: not os.path.exists(f"/proc/{old}/comm") or
                        open(f"/proc/{old}/stat").read().split()[2] == "Z", 10)
        c = view(s, "c.test")  # (serve finds it gone and starts another)
        assert spawner_of(s) not in (None, old), s.stderr()
        assert c[0] == "lo" and c[2:] == ("sysfs", "read-only", "1") and c[1] != host_dev, c
        assert view(s, "a.test") == a  # (the running instance keeps its own clone)
        # and that clone still shows its loopback, live (its namespace is held by serve, not only by the spawner
        # that made it: a sysfs holds its network namespace passively, and with the spawner gone lo went)
        (inst,) = s.instances("a")
        assert os.listdir(f"/proc/{inst['pid']}/root/sys/class/net") == ["lo"]
    finally:
        assert s.stop() == 0, s.stderr()
    assert s.leftovers() == []

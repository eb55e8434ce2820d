"""kago serve's dashboard in a real browser: Debian's headless Chromium (driven by chromium-driver and
python3-selenium) logs in on the admin listener with the token, sees every app, watches a plot change as
requests are sent, and acts: freeze, thaw and stop an instance (then `kago ps` no longer lists it), change
an app's limits live (the instance's cgroup file changes), reload a broken configuration (the page shows
the error). Screenshots go to docs/img/ for the README. Traffic goes to loopback only."""
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import cgroup_path
from serve_util import KAGO, REPO, ROOTFS, admin_request, admin_token, app, request, serving, wait_for

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.exists(ROOTFS), reason=f"no rootfs at {ROOTFS}"),
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                       reason=f"no {CHROMIUM} or {DRIVER}: apt-get install chromium chromium-driver (scripts/setup)"),
    pytest.mark.skipif(not HAVE_SELENIUM, reason="no selenium module: apt-get install python3-selenium (scripts/setup)"),
]

# Screenshots go to $KAGO_SCREENSHOTS (scripts/test: its log dir), else to the temp dir; KAGO_SCREENSHOTS=docs/img
# refreshes the README's.
IMG = os.environ.get("KAGO_SCREENSHOTS") or os.path.join(tempfile.gettempdir(), "kago-dashboard-screenshots")


def web(name):
    return (f"echo {name} says hello; echo {name} warns >&2; mkdir -p /w && echo hello-{name} > /w/index.html && "
            "exec /usr/sbin/httpd -f -p 8080 -h /w")


APPS = "".join(app(n, [f"{n}.test"], web(n)) for n in ("alpha", "beta", "gamma"))


SERVE = []  # the module's serve, for the messages of failed waits


@pytest.fixture(scope="module")
def srv():
    for s in serving(APPS):
        SERVE.append(s)
        yield s


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, with a fresh profile."""
    profile = tempfile.mkdtemp(prefix="kago-dash-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    opts.set_capability("unhandledPromptBehavior", "ignore")  # (the tests answer each confirm())
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1050"):
        opts.add_argument(a)
    try:
        drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except WebDriverException as e:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless chromium did not start: {e.msg}")
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def js(b, script, *args):
    return b.execute_script(script, *args)


def visible(b, id_):
    return js(b, "const e = document.getElementById(arguments[0]); return !!e && !e.classList.contains('hidden');", id_)


def until(cond, timeout=20, what="condition"):
    v = wait_for(cond, timeout, step=0.2)
    assert v, f"timed out waiting for {what}; serve's log ends with:\n" + (SERVE[0].stderr()[-1500:] if SERVE else "")
    return v


def click_confirmed(b, selector):
    """Clicks selector (found anew: the rows are redrawn every second), accepts the confirm() it opens,
    and returns the page's message."""
    js(b, "const e = document.querySelector(arguments[0]); setTimeout(() => e.click(), 0);", selector)

    def alert():
        try:
            return b.switch_to.alert
        except NoAlertPresentException:
            return None
    a = until(alert, 10, f"the confirmation of {selector}")
    assert a.text  # it asks, saying what it will do
    a.accept()
    return until(lambda: visible(b, "msg") and js(b, "return document.getElementById('msg').textContent"), 10,
                 "the action's answer")


def login(b, s):
    b.get(f"http://127.0.0.1:{s.admin}/")
    until(lambda: visible(b, "login") or visible(b, "server"), 15, "the page")
    if visible(b, "login"):
        b.find_element(By.ID, "token").send_keys(admin_token(s.root))
        b.find_element(By.CSS_SELECTOR, "#login-form button").click()
        until(lambda: visible(b, "server"), 15, "the dashboard after login")


def rows(b):
    return js(b, "return [...document.querySelectorAll('#apps tbody tr')].map(r => r.dataset.app)")


def inst_rows(b):
    return js(b, "return [...document.querySelectorAll('#insts tbody tr')].map(r => [r.dataset.instance, r.dataset.state])")


def kago_ps(s):
    r = subprocess.run([KAGO, "--root", s.root, "ps", "--admin", f"127.0.0.1:{s.admin}"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def warm(s, name, n=1):
    for _ in range(n):
        st, _, body = request(s.port, f"{name}.test")
        assert st == 200 and body.strip() == f"hello-{name}".encode()


def test_login_then_every_app_listed(srv, browser):
    st, _, _ = admin_request(srv.admin, srv.root, "/dash/events", token="")
    assert st == 401  # the data needs the token (or a session)
    st, _, page = admin_request(srv.admin, srv.root, "/", token="")
    assert st == 200 and "kago serve" in page  # the page itself holds no data
    browser.get(f"http://127.0.0.1:{srv.admin}/")
    until(lambda: visible(browser, "login"), 15, "the login form")
    assert not visible(browser, "overview")
    login(browser, srv)
    until(lambda: rows(browser) == ["alpha", "beta", "gamma"], 15, "the three apps in the table")
    cookie = browser.get_cookie("kago_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "dashboard login from 127.0.0.1" in srv.stderr()
    # the filter narrows the page (a new event stream)
    browser.find_element(By.ID, "filter").send_keys("bet")
    until(lambda: rows(browser) == ["beta"], 10, "only beta")
    browser.find_element(By.ID, "filter").clear()
    js(browser, "document.getElementById('filter').dispatchEvent(new Event('input'))")
    until(lambda: len(rows(browser)) == 3, 10, "every app again")


def test_cookie_post_needs_csrf_header(srv, browser):
    login(browser, srv)
    sid = browser.get_cookie("kago_session")["value"]
    url = f"http://127.0.0.1:{srv.admin}/drain?app=gamma"
    req = urllib.request.Request(url, method="POST", data=b"", headers={"Cookie": f"kago_session={sid}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403  # a cross-site form could send the cookie (were it not Strict), never the header
    # a token in the URL is exchanged for a cookie, and the URL loses it
    st, h, _ = admin_request(srv.admin, srv.root, f"/?token={admin_token(srv.root)}", token="")
    assert st == 200  # (urllib followed the 303 to /)
    st, _, _ = admin_request(srv.admin, srv.root, "/?token=wrong-token-0123456789", token="")
    assert st == 401
    assert "wrong-token" not in srv.stderr()  # (the token is never logged)
    # a page left open across a restart retries with its dead session: 401, never a lockout of 127.0.0.1
    for _ in range(12):
        req = urllib.request.Request(f"http://127.0.0.1:{srv.admin}/dash/events",
                                     headers={"Cookie": "kago_session=" + "ab" * 32})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
    assert admin_request(srv.admin, srv.root, "/ps")[0] == 200


def app_event(s, name):
    """The first event of the app page's stream (/dash/events?app=NAME): its state, history and live second."""
    req = urllib.request.Request(f"http://127.0.0.1:{s.admin}/dash/events?app={name}",
                                 headers={"Authorization": f"Bearer {admin_token(s.root)}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        data = b""
        while b"\n\n" not in data:
            data += r.read1(65536)
    line = next(ln for ln in data.split(b"\n\n")[0].split(b"\n") if ln.startswith(b"data:"))
    return json.loads(line[5:])


def test_history_steps_have_usage(srv):
    """Every 5 s an active app's step goes to its history with its instances' memory and CPU, read from their
    cgroups a few instances per loop turn after the step ends (not all at once)."""
    warm(srv, "beta")
    steps = until(lambda: [h for h in app_event(srv, "beta")["history"] if h["instances"] >= 1], 15,
                  "a step of beta's with its instance")
    assert steps[-1]["memory"] > 0, steps
    assert all(h["cpu_pct"] >= 0 for h in steps), steps


def test_app_plot_changes_with_requests(srv, browser):
    login(browser, srv)
    warm(srv, "alpha")
    browser.get(f"http://127.0.0.1:{srv.admin}/app/alpha")
    until(lambda: js(browser, "return document.getElementById('ap-req').dataset.points"), 15, "the first event")
    time.sleep(1.5)
    before = float(js(browser, "return document.getElementById('ap-req').dataset.total"))
    warm(srv, "alpha", 40)
    until(lambda: float(js(browser, "return document.getElementById('ap-req').dataset.total")) >= before + 30, 15,
          "the requests/s plot to count the 40 requests")
    names = until(lambda: [n for n, st in inst_rows(browser) if st == "ready"], 15, "a ready instance row")
    assert names[0].startswith("alpha")
    until(lambda: "alpha says hello" in js(browser, "return document.getElementById('log').textContent"), 15,
          "the app's log lines")
    os.makedirs(IMG, exist_ok=True)
    time.sleep(3)  # a few more live points
    browser.save_screenshot(os.path.join(IMG, "dashboard-app.png"))


def test_overview_live(srv, browser):
    login(browser, srv)
    browser.get(f"http://127.0.0.1:{srv.admin}/")
    until(lambda: len(rows(browser) or []) == 3, 15, "the apps")
    for _ in range(8):
        warm(srv, "beta", 5)
        warm(srv, "alpha", 2)
        time.sleep(0.4)
    until(lambda: float(js(browser, "return document.getElementById('ov-req').dataset.total")) > 0, 10,
          "the overview's requests/s plot")
    browser.save_screenshot(os.path.join(IMG, "dashboard-overview.png"))


def test_freeze_thaw_stop_instance(srv, browser):
    login(browser, srv)
    warm(srv, "beta")
    browser.get(f"http://127.0.0.1:{srv.admin}/app/beta")
    name = until(lambda: [n for n, st in inst_rows(browser) if st == "ready"], 15, "beta's instance")[0]
    msg = click_confirmed(browser, f"tr[data-instance='{name}'] button.freeze")
    assert "done" in msg, msg
    until(lambda: (name, "frozen") in [tuple(r) for r in inst_rows(browser)], 10, "the row frozen")
    assert [i["state"] for i in srv.ps()["beta"]["instances"] if i["name"] == name] == ["frozen"]
    time.sleep(1.5)  # frozen by hand: the idle policy (stop) leaves it frozen
    assert [i["state"] for i in srv.ps()["beta"]["instances"] if i["name"] == name] == ["frozen"]
    msg = click_confirmed(browser, f"tr[data-instance='{name}'] button.thaw")
    assert "done" in msg, msg
    until(lambda: (name, "ready") in [tuple(r) for r in inst_rows(browser)], 10, "the row ready again")
    assert name in kago_ps(srv)
    msg = click_confirmed(browser, f"tr[data-instance='{name}'] button.stop")
    assert "done" in msg, msg
    until(lambda: name not in kago_ps(srv), 20, f"kago ps to no longer list {name}")
    err = srv.stderr()
    for verb in ("freeze", "thaw", "stop"):
        assert f"{name}: admin: {verb} from 127.0.0.1 (dashboard session)" in err


def test_limits_live(srv, browser):
    login(browser, srv)
    warm(srv, "gamma")
    browser.get(f"http://127.0.0.1:{srv.admin}/app/gamma")
    name = until(lambda: [n for n, st in inst_rows(browser) if st == "ready"], 15, "gamma's instance")[0]
    browser.find_element(By.ID, "cpu").send_keys("50%")
    browser.find_element(By.ID, "memory").send_keys("96M")
    msg = click_confirmed(browser, "#limits-form button")
    assert "1 instances updated, 0 failed" in msg, msg
    cg = cgroup_path(srv.cgroup(name).removeprefix("kago/"), "memory")  # (a pooled start's: kago/warm@...)
    mem = os.path.join(cg, "memory.max" if not os.path.exists(os.path.join(cg, "memory.limit_in_bytes"))
                       else "memory.limit_in_bytes")
    with open(mem) as f:
        assert int(f.read()) == 96 << 20
    until(lambda: "96 MiB" in js(browser, "return document.getElementById('app-cards').textContent"), 10,
          "the new memory limit on the page")
    assert "app gamma: admin: limits from 127.0.0.1 (dashboard session): cpu 50% memory 96M" in srv.stderr()


def test_reload_shows_config_error(srv, browser):
    login(browser, srv)
    browser.get(f"http://127.0.0.1:{srv.admin}/")
    until(lambda: len(rows(browser) or []) == 3, 15, "the apps")
    srv.write_config(APPS + "Kago.app 'broken' do |a|\n  a.no_such_setting 1\nend\n")
    try:
        click_confirmed(browser, "#reload")
        until(lambda: visible(browser, "server") and js(
            browser, "const e = document.getElementById('config-error'); return e && e.textContent"), 10,
            "the configuration error card")
        assert "admin: reload from 127.0.0.1" in srv.stderr()
    finally:
        srv.write_config(APPS)
    click_confirmed(browser, "#reload")
    until(lambda: not js(browser, "return !!document.getElementById('config-error')"), 10, "the error gone")


def test_drain_from_overview(srv, browser):
    login(browser, srv)
    warm(srv, "alpha")
    names = [i["name"] for i in srv.ps()["alpha"]["instances"] if i["state"] == "ready"]
    assert names
    browser.get(f"http://127.0.0.1:{srv.admin}/")
    until(lambda: "alpha" in (rows(browser) or []), 15, "alpha's row")
    msg = click_confirmed(browser, "button.drain[data-app='alpha']")
    assert "app alpha:" in msg and "draining" in msg, msg
    until(lambda: not any(n in kago_ps(srv) for n in names), 20, "kago ps without alpha's instances")
    assert "app alpha: admin: drain from 127.0.0.1 (dashboard session)" in srv.stderr()
    warm(srv, "alpha")  # the next request starts a new one


def test_unix_socket_posts_need_a_header(tmp_path):
    """Over --admin unix:PATH there is no login; a POST still needs X-Kago-CSRF (a browser reaching a
    forwarded socket cannot send it from another site)."""
    from serve_util import free_port
    conf, sock = tmp_path / "conf", str(tmp_path / "admin.sock")
    conf.mkdir()
    p = subprocess.Popen([KAGO, "--root", str(tmp_path / "root"), "serve", "--config", str(conf), "--listen",
                          f"127.0.0.1:{free_port()}", "--admin", f"unix:{sock}", "--access-log", "off"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        until(lambda: os.path.exists(sock), 10, "the admin socket")

        def curl(*args):
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock, *args],
                               capture_output=True, text=True, timeout=10)
            return r.stdout
        assert curl("http://kago/") == "200"
        assert curl("http://kago/dash/session") == "200"
        assert curl("-X", "POST", "http://kago/drain?app=none") == "403"
        assert curl("-X", "POST", "-H", "X-Kago-CSRF: 1", "http://kago/drain?app=none") == "404"  # (no such app)
    finally:
        p.terminate()
        assert p.wait(30) == 0, p.stderr.read().decode()

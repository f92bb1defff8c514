"""The live dashboard at / (web/), served by the daemon and driven in a real headless Chromium
through chromedriver (Debian's chromium, chromium-driver and python3-selenium; scripts/deps.sh
installs them). Without them these tests FAIL: CI must run them.

What is proved, and how:
- the files are served from the binary as they are in web/, with their Content-Type and the
  headers that lock the page down (CSP, nosniff, no referrer, no-cache), to GET and HEAD,
  without the operator token; other methods get 405 and other paths keep their 404;
- in Chromium the page connects and shows the welcome's user id; messages published to that
  user appear in their lists; markup in them is shown as text (no element is created, no
  script runs); the browser logs no error (a CSP violation, a script error, a blocked module);
- with a private PostgreSQL and 1 s monitor periods, a hot deal the test inserts and a price
  watch of the page's user whose threshold is met show up on the page;
- when the daemon stops (close 1001) and starts again on the same port, the page goes to
  "reconnecting" and back to "connected" by itself;
- with JWT auth the page takes the token from the #fragment; with --allowed-origins it
  connects only when the daemon's own origin is listed;
- durable delivery (a daemon with --db, docs/delivery.md), in dealwire.js and on the page:
  against a scripted server in the page, the client's bookkeeping (duplicates dropped, one
  resume per gap, acks coalesced and sent only once a handler's promise settled, the last seq
  kept per user, "history_lost"); against the real daemon and PostgreSQL, a page holds every
  critical alert exactly once, seq for seq with the inbox, through a `kill -9` of the daemon
  in the middle of a burst; a page opened later gets what was sent while no one was connected,
  marked replayed; what the page handled is acknowledged in alert_inbox; a reloaded page goes
  on from the seq it stored, not from the acknowledgements of another device; a page whose
  last seq the server no longer has says so and counts again from the server's.

Nothing waits by sleeping: WebDriverWait polls DOM conditions, within scaled deadlines (the
burst's publishers pause 20 ms between retries of a refused publish: pacing, not waiting).
One Chromium serves the whole module (started once, stopped with driver.quit(), its
chromedriver by PID if it outlives that); each test loads a fresh page.
"""

import http.client
import re
import shutil
import signal
import socket
import threading
import time
import urllib.parse
from collections import Counter

import pytest

from conftest import REPO, free_port, http_get, http_post, http_request, publish, t, wait_until
from conftest_pg import pg_db, postgres  # noqa: F401 (pytest fixtures)
from test_security import API_TOKEN, SECRET, claims, make_jwt

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait
    SELENIUM_MISSING = None
except ImportError as exc:  # reported by the browser fixture as a failure, not a skip
    SELENIUM_MISSING = exc

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dealwire.js": ("dealwire.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

# Markup that would run script if the page ever parsed server text as HTML.
XSS = '<img src=x onerror="window.__dwPwned=1">'


# --------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module, through chromedriver on loopback."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if SELENIUM_MISSING or missing:
        pytest.fail(f"the dashboard tests need chromium, chromium-driver and python3-selenium "
                    f"(bash scripts/deps.sh installs them); missing: "
                    f"{missing or ''} {SELENIUM_MISSING or ''}", pytrace=False)
    tmp = tmp_path_factory.mktemp("chromium")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", f"--user-data-dir={tmp / 'profile'}",
                "--no-sandbox",             # as root (CI containers) Chromium needs it
                "--disable-dev-shm-usage",  # small /dev/shm in containers
                "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-sync", "--disable-component-update",
                "--disable-background-networking", "--disable-default-apps",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_path=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(t(20))
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            proc = service.process  # ours: stop it by PID if quit() left it running
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def page(browser):
    """The browser, left on about:blank after the test (before its daemons stop), so that a
    page of one test never reconnects to the daemon of the next."""
    browser.get_log("browser")  # start with an empty console
    yield browser
    browser.get("about:blank")


def open_page(driver, port, query="", fragment=""):
    driver.get(f"http://127.0.0.1:{port}/{query}{fragment}")


def wait_for(driver, condition, what, timeout=10):
    """condition(driver) polled every 50 ms until truthy; returns its value."""
    try:
        return WebDriverWait(driver, t(timeout), poll_frequency=0.05).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out after {t(timeout)}s waiting for {what}; the page "
                             f"says: {page_summary(driver)}") from None


def page_summary(driver):
    return driver.execute_script("""
        const text = (id) => (document.getElementById(id) || {}).textContent || "";
        return {state: document.getElementById("status").dataset.state,
                detail: text("state-detail"),
                log: [...document.querySelectorAll("#connection-log > li")].map(
                    (li) => li.textContent).slice(0, 5)};""")


def state(driver):
    return driver.execute_script(
        "return [document.getElementById('status').dataset.state,"
        " document.getElementById('state-user').textContent]")


def wait_connected(driver, user, what="connected"):
    wait_for(driver, lambda d: state(d) == ["connected", user], f"{what} as {user}")


def items(driver, list_id):
    """The entries of one list, newest first: [{text, data...}]."""
    return driver.execute_script("""
        return [...document.querySelectorAll(`#${arguments[0]} > li`)].map(
            (li) => ({text: li.textContent, ...li.dataset}));""", list_id)


def wait_item(driver, list_id, predicate, what, timeout=10):
    """Waits for an entry of list_id matching predicate; returns it."""
    def found(d):
        return next((i for i in items(d, list_id) if predicate(i)), None)
    return wait_for(driver, found, what, timeout)


def counter(driver, name):
    return int(driver.execute_script(
        "return document.getElementById(arguments[0]).dataset.count", f"count-{name}"))


def console_errors(driver):
    """The browser's SEVERE console lines, less the favicon request the daemon has no
    answer for."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


def to_user(user, message):
    return {"target": {"user_id": user}, "message": message}


# --------------------------------------------------------------------------------------------
# (a) The files over plain HTTP
# --------------------------------------------------------------------------------------------

def csp_directives(value):
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def assert_page_headers(headers, content_type, length):
    assert headers.get("content-type") == content_type, headers
    assert headers.get("content-length") == str(length), headers
    assert headers.get("cache-control") == "no-cache", headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert headers.get("referrer-policy") == "no-referrer", headers
    csp = csp_directives(headers.get("content-security-policy", ""))
    assert csp.get("default-src") == ["'self'"], csp
    assert {"'self'", "ws:", "wss:"} <= set(csp.get("connect-src", [])), csp
    # No directive lets inline or foreign code in.
    assert not any("unsafe" in w or w in ("*", "data:", "http:", "https:")
                   for name, words in csp.items() if name != "connect-src" for w in words), csp


def test_files_are_served_with_their_headers_and_no_token(dealwire):
    """Each file of web/ as it is on disk, to GET and HEAD, open while --api-token closes
    /api/; 405 for other methods, 404 still for unknown paths."""
    d = dealwire("--api-token", API_TOKEN)
    for path, (name, content_type) in PAGES.items():
        body = (REPO / "web" / name).read_bytes()
        r = http_request(d.port, "GET", path)
        assert r.status == 200, (path, r)
        assert r.raw == body, f"{path} is not web/{name} (rebuild?)"
        assert_page_headers(r.headers, content_type, len(body))
        head = http_request(d.port, "HEAD", path)
        assert head.status == 200 and head.raw == b"", (path, head)
        assert_page_headers(head.headers, content_type, len(body))
        for method in ("POST", "PUT", "DELETE"):
            r = http_request(d.port, method, path, body="{}" if method != "DELETE" else None)
            assert r.status == 405 and r.headers["content-type"] == "application/json", \
                (method, path, r)
    for path in ("/index.html", "/web/index.html", "/dealwire.js/", "/DEALWIRE.JS",
                 "/dealwire.js.map", "/favicon.ico", "/.git/config", "/../CMakeLists.txt"):
        r = http_request(d.port, "GET", path)
        assert r.status == 404 and r.json and "error" in r.json, (path, r)
    # The operator API stays closed, the health checks open.
    assert http_request(d.port, "GET", "/api/websocket/stats").status == 401
    assert http_get(d.port, "/healthz")[0] == 200

    # A HEAD answer carries no body: on a keep-alive connection the next answer follows its
    # headers at once. (Raw bytes: http.client would drop a stray body with its buffer.)
    for path, status in (("/", 200), ("/nope", 404), ("/healthz", 405)):
        head, rest = head_then_get(d.port, path)
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), (path, head)
        assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"}"), (path, rest[:200])


def head_then_get(port, path):
    """HEAD path, then GET /healthz on the same connection, sent together; returns (the HEAD
    answer's header block, every byte after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=t(10)) as s:
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                  "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def test_page_uses_only_its_own_files():
    """What the CSP allows is all the page needs: no inline script or style, no foreign
    host, no HTML from data in the scripts."""
    html = (REPO / "web" / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/' in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in html and not re.search(r"\s(style|on\w+)=", html, re.I)
    for name in ("index.html", "dashboard.js", "dealwire.js", "dashboard.css"):
        text = (REPO / "web" / name).read_text()
        assert not re.search(r"https?://(?!127\.0\.0\.1)", text), f"web/{name} names a host"
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(",
                             text), f"web/{name} builds HTML or code from strings"


# --------------------------------------------------------------------------------------------
# (b) In Chromium: connect, show what is published, as text
# --------------------------------------------------------------------------------------------

def test_page_connects_and_shows_published_messages_as_text(dealwire, page):
    d = dealwire()
    user = "web-alice"
    open_page(page, d.port, f"?user_id={user}")
    wait_connected(page, user)
    status, stats = http_get(d.port, f"/api/websocket/users/{user}")
    assert status == 200 and stats["connections"] == 1, (status, stats)

    # Not for this page: another user's message must not show.
    publish(d.port, to_user("web-bob", {"type": "notification", "message": "for bob",
                                        "level": "info"}))
    publish(d.port, to_user(user, {
        "type": "deal_alert", "deal_id": "web-d1", "title": f"Paris {XSS}", "price": 299,
        "category": "flight", "alert_type": "hot_deal", "savings_percent": 45, "discount": 250,
        "metadata": {"origin": "NYC", "destination": "PAR"}}))
    publish(d.port, to_user(user, {
        "type": "price_alert", "deal_id": "web-d2", "title": "Hilton NYC", "current_price": 120,
        "threshold": 150, "drop_amount": 30, "drop_percent": 20,
        "reasons": ["Price dropped by $30", XSS]}))
    publish(d.port, to_user(user, {
        "type": "trip_update", "status": "searching", "message": "Analyzing flights",
        "progress": 30, "extra_data": {}}))
    publish(d.port, to_user(user, {"type": "notification", "message": f"{XSS} hello",
                                   "level": "warning"}))

    note = wait_item(page, "notifications", lambda i: "hello" in i["text"], "the notification")
    assert XSS in note["text"], note
    deal = wait_item(page, "deal-alerts", lambda i: i.get("dealId") == "web-d1", "the deal")
    for part in (f"Paris {XSS}", "$299.00", "save 45%, $250.00", "NYC → PAR", "hot"):
        assert part in deal["text"], (part, deal)
    alert = wait_item(page, "price-alerts", lambda i: i.get("dealId") == "web-d2", "the alert")
    for part in ("Hilton NYC", "$120.00", "your threshold $150.00", "down $30.00 (20%)",
                 "Price dropped by $30", XSS):
        assert part in alert["text"], (part, alert)
    trip = wait_item(page, "trip-updates", lambda i: i.get("status") == "searching", "the trip")
    assert "Analyzing flights" in trip["text"] and "30%" in trip["text"], trip
    assert page.execute_script("return document.querySelector('#trip-updates progress').value") \
        == 30

    # The markup stayed text: no element was made from it and its handler never ran.
    assert page.execute_script("return document.querySelectorAll('img').length") == 0
    assert page.execute_script("return window.__dwPwned") is None
    assert not any("for bob" in i["text"] for i in items(page, "notifications"))
    assert [counter(page, n) for n in ("deal_alert", "price_alert", "trip_update",
                                       "notification", "reconnects")] == [1, 1, 1, 1, 0]
    # Without --db nothing carries a seq: nothing is numbered, marked or remembered.
    assert "seq" not in alert and page_last_seq(page) == (None, "") and handled(page) == []
    assert console_errors(page) == []


def test_page_controls_switch_user_and_subscribe(dealwire, page):
    """The user-id field reconnects as another user (and says so in the address); the
    channel field subscribes, and a channel publish arrives."""
    d = dealwire()
    open_page(page, d.port, "?user_id=bad%20id")  # not a user id: an error, no connection
    wait_for(page, lambda p: p.execute_script(
        "return document.getElementById('form-error').textContent"), "the form error")
    assert state(page)[0] == "idle"
    page.execute_script("document.getElementById('user-id').value = 'web-dan';"
                        "document.getElementById('connect').click();")
    wait_connected(page, "web-dan")
    assert page.current_url.endswith("/?user_id=web-dan"), page.current_url
    page.execute_script("document.getElementById('user-id').value = 'web-dora';"
                        "document.getElementById('connect').click();")
    wait_connected(page, "web-dora")
    wait_until(lambda: http_get(d.port, "/api/websocket/users/web-dan")[0] == 404, t(10),
               "the first user's connection to close")

    page.execute_script("document.getElementById('channel').value = 'hot_deals';"
                        "document.getElementById('subscribe').click();")
    wait_item(page, "notifications", lambda i: "Subscribed to hot_deals" in i["text"],
              "the subscribe confirmation")
    publish(d.port, {"target": {"channel": "hot_deals"}, "message": {
        "type": "deal_alert", "deal_id": "web-c1", "title": "Channel deal", "price": 10,
        "alert_type": "trending"}})
    deal = wait_item(page, "deal-alerts", lambda i: i.get("dealId") == "web-c1", "the deal")
    assert "trending" in deal["text"], deal
    assert http_get(d.port, "/api/websocket/users/web-dora")[1]["subscriptions"] == ["hot_deals"]
    assert console_errors(page) == []


# --------------------------------------------------------------------------------------------
# (c) The monitors, against a private PostgreSQL
# --------------------------------------------------------------------------------------------

def test_page_shows_hot_deals_and_price_alerts_from_the_monitors(dealwire, page, pg_db):
    server, db, url = pg_db
    d = dealwire("--db", url, "--hot-deal-interval", 1, "--watch-interval", 1,
                 "--trending-interval", 3600)
    wait_until(lambda: http_get(d.port, "/readyz")[0] == 200, t(30), "the schema")
    user = "web-watcher"
    open_page(page, d.port, f"?user_id={user}")
    wait_connected(page, user)
    server.psql(
        "INSERT INTO deals (id, title, category, price, original_price, metadata) VALUES"
        " ('web-hot', 'Lisbon long weekend', 'package', 69, 100,"
        "  '{\"origin\": \"NYC\", \"destination\": \"LIS\"}'),"
        " ('web-watched', 'Hotel Lisboa', 'hotel', 80, 90, '{}');"  # 11 %, 10 $: not hot
        "INSERT INTO price_watches (user_id, deal_id, threshold_price) VALUES"
        " ('web-watcher', 'web-watched', 100), ('web-someone-else', 'web-watched', 100)", db)

    deal = wait_item(page, "deal-alerts", lambda i: i.get("dealId") == "web-hot",
                     "the hot deal", timeout=20)
    for part in ("Lisbon long weekend", "$69.00", "save 31%, $31.00", "NYC → LIS", "hot"):
        assert part in deal["text"], (part, deal)
    alert = wait_item(page, "price-alerts", lambda i: i.get("dealId") == "web-watched",
                      "the price alert", timeout=20)
    for part in ("Hotel Lisboa", "$80.00", "your threshold $100.00", "down $20.00 (20%)",
                 "Price dropped by $20"):
        assert part in alert["text"], (part, alert)
    # Sent in the same round as ours: the other user's alert did not come here.
    assert len(items(page, "price-alerts")) == 1
    assert not any(i.get("dealId") == "web-watched" for i in items(page, "deal-alerts"))
    assert console_errors(page) == []


# --------------------------------------------------------------------------------------------
# (d) Reconnection
# --------------------------------------------------------------------------------------------

def test_page_reconnects_after_the_daemon_restarts(dealwire, page):
    d1 = dealwire()
    user = "web-bob"
    open_page(page, d1.port, f"?user_id={user}")
    wait_connected(page, user, "the first connection")

    assert d1.stop() == 0
    wait_for(page, lambda p: state(p)[0] == "reconnecting", "the reconnecting state")
    closed = wait_item(page, "connection-log",
                       lambda i: i.get("event") == "closed" and i.get("code") == "1001",
                       "the close 1001 (going away) in the connection log")
    assert "server going away" in closed["text"], closed

    d2 = dealwire(port=d1.port)
    wait_connected(page, user, "the connection to the restarted daemon")
    assert [i["event"] for i in items(page, "connection-log")
            if i["event"] == "connected"] == ["connected", "connected"]
    assert counter(page, "reconnects") == 1
    status, stats = http_get(d2.port, f"/api/websocket/users/{user}")
    assert status == 200 and stats["connections"] == 1, (status, stats)
    publish(d2.port, to_user(user, {"type": "notification", "message": "after the restart",
                                    "level": "success"}))
    wait_item(page, "notifications", lambda i: "after the restart" in i["text"],
              "a message through the new connection")
    # The browser logs the refused attempts while the daemon was down; nothing else.
    assert not [m for m in console_errors(page) if "WebSocket connection to" not in m]


# --------------------------------------------------------------------------------------------
# Production settings: a JWT in the fragment, allowed origins
# --------------------------------------------------------------------------------------------

def test_page_with_a_token_and_allowed_origins(dealwire, page):
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    d = dealwire("--jwt-secret", SECRET, "--allowed-origins", f"https://deals.example,{origin}",
                 "--api-token", API_TOKEN, port=port)
    token = make_jwt(claims("web-carol"))
    open_page(page, d.port, "?user_id=not-this-one", f"#token={urllib.parse.quote(token)}")
    wait_connected(page, "web-carol")  # the token's sub, not ?user_id
    assert "token" not in page.current_url, page.current_url
    assert page.execute_script("return document.getElementById('user-id').disabled") is True
    assert console_errors(page) == []


REFRESHING_CLIENT = """
const [port, tokens, firstExp] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
    const { DealwireClient } = await import("/dealwire.js");
    const asked = [], states = [], refreshes = [];
    let welcome = null;
    const c = new DealwireClient({
        url: `ws://127.0.0.1:${port}/ws/events`, storage: null,
        token: () => { asked.push(Date.now()); return tokens[asked.length - 1]; },
    });
    c.on("state", (s) => states.push(s.state));
    c.on("connection_established", (m) => { welcome = m; });
    c.on("notification", (m) => { if (m.action === "refresh") refreshes.push(m); });
    c.connect();
    /* past the first token's expiry by a second, then as it stands */
    while (Date.now() < (firstExp + 1) * 1000) await new Promise((r) => setTimeout(r, 100));
    done({ asked: asked.length, states, refreshes, welcome, state: c.state,
           sent: c.send({ type: "ping" }) });
})().catch((e) => done({ error: String(e && e.stack || e) }));
"""


def test_client_refreshes_its_token_before_it_expires(dealwire, page):
    d = dealwire("--jwt-secret", SECRET, "--jwt-leeway", "0")
    open_page(page, d.port, "?user_id=bad%20id")  # the page's own client stays idle
    first_exp = int(time.time()) + 4
    later = int(time.time()) + 600
    tokens = [make_jwt(claims("web-dave", exp=first_exp)), make_jwt(claims("web-dave", exp=later))]
    page.set_script_timeout(30)
    out = page.execute_async_script(REFRESHING_CLIENT, d.port, tokens, first_exp)
    assert "error" not in out, out.get("error")
    # asked once to connect and once to refresh, halfway to the first expiry; never closed
    assert out["asked"] == 2, out
    assert out["welcome"]["user_id"] == "web-dave", out
    assert len(out["refreshes"]) == 1, out
    assert out["refreshes"][0]["token_expires_at"].startswith(
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(later))), out
    assert out["states"] == ["connecting", "connected"] and out["state"] == "connected", out
    assert out["sent"] is True, out
    assert http_get(d.port, "/api/websocket/stats")[1]["active_connections"] == 1
    assert console_errors(page) == []


OPERATED_CLIENT = """
const [port, phase] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
    const { DealwireClient } = await import("/dealwire.js");
    const until = async (ok) => { while (!ok()) await new Promise((r) => setTimeout(r, 20)); };
    if (phase === "start") {
        const c = new DealwireClient({ url: `ws://127.0.0.1:${port}/ws/events`, storage: null,
                                       userId: "web-erin", backoff: { baseMs: 50, maxMs: 200 } });
        window.erin = { c, states: [] };
        c.on("state", (s) => window.erin.states.push([s.state, s.code, s.reason]));
        c.connect();
        await until(() => c.state === "connected");
    } else {
        /* after the operator's close: until the client stopped, or connected again */
        await until(() => window.erin.states.length > 2);
    }
    done({ states: window.erin.states, state: window.erin.c.state });
})().catch((e) => done({ error: String(e && e.stack || e) }));
"""


@pytest.mark.parametrize("code,stops", [(None, True), (4100, False)], ids=["4003", "4100"])
def test_client_stops_when_the_operator_disconnects_it(dealwire, page, code, stops):
    d = dealwire()
    open_page(page, d.port, "?user_id=bad%20id")  # the page's own client stays idle
    page.set_script_timeout(30)
    out = page.execute_async_script(OPERATED_CLIENT, d.port, "start")
    assert "error" not in out and out["state"] == "connected", out
    body = {"code": code, "reason": "account closed"} if code else {"reason": "account closed"}
    status, answer = http_post(d.port, "/api/websocket/users/web-erin/disconnect", body)
    assert status == 200 and answer["connections"] == 1, (status, answer)
    out = page.execute_async_script(OPERATED_CLIENT, d.port, "after")
    assert "error" not in out, out
    if stops:
        # 4003: closed for good, the operator's reason shown; the daemon sees no new attempt
        assert out["states"][2] == ["closed", 4003,
                                    "4003 disconnected by the operator: account closed"], out
        assert out["state"] == "closed", out
        assert http_get(d.port, "/api/websocket/stats")[1]["connections_opened"] == 1
    else:
        # another code: reconnected, as after any close
        assert out["states"][2][:2] == ["reconnecting", 4100], out
        wait_until(lambda: http_get(d.port, "/api/websocket/stats")[1]["active_connections"] == 1,
                   t(10), "the client back")
    assert not [m for m in console_errors(page) if "WebSocket connection to" not in m]


def test_page_is_refused_when_its_origin_is_not_allowed(dealwire, page):
    d = dealwire("--allowed-origins", "https://deals.example")
    open_page(page, d.port, "?user_id=web-erin")
    wait_for(page, lambda p: state(p)[0] == "reconnecting", "a refused attempt")
    refused = wait_until(lambda: http_get(d.port, "/api/websocket/stats")[1]["security"]
                         ["refused"]["origin"], t(10), "the daemon's count of refused origins")
    assert refused >= 1
    assert http_get(d.port, "/api/websocket/users/web-erin")[0] == 404


# --------------------------------------------------------------------------------------------
# Durable delivery: seq, replay, acks, resume (docs/delivery.md)
# --------------------------------------------------------------------------------------------

# dealwire.js against a scripted server: a fake WebSocket class given to the client, driven
# message by message from inside the page. What the real daemon cannot be made to do on
# demand (a gap, a duplicate, a slow handler) is played here. Timers only order events that
# the client's own timers (ackDelayMs 30 ms) decide, so the outcome does not depend on speed.
SCRIPTED_CLIENT = """
const done = arguments[arguments.length - 1];
(async () => {
    const { DealwireClient } = await import("/dealwire.js");
    const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
    const sockets = [];
    class FakeSocket {
        constructor(url) { this.url = url; this.sent = []; this.readyState = 1;
                           sockets.push(this); }
        send(text) { this.sent.push(JSON.parse(text)); }
        close() { this.readyState = 3; }
        deliver(...msgs) { for (const m of msgs) this.onmessage({ data: JSON.stringify(m) }); }
        sentOf(type) { return this.sent.filter((m) => m.type === type); }
    }
    const store = new Map();
    const storage = { getItem: (k) => (store.has(k) ? store.get(k) : null),
                      setItem: (k, v) => store.set(k, String(v)) };
    const options = { url: "ws://127.0.0.1:9/ws/events", userId: "u1", storage,
                      WebSocket: FakeSocket, ackDelayMs: 30 };
    const welcome = (extra) => ({ type: "connection_established", user_id: "u1",
                                  connection_id: "1", ...extra });
    const alert = (seq, extra = {}) => ({ seq, type: "price_alert", deal_id: `d${seq}`,
                                          ...extra });
    const out = {};
    const got = [], ignored = [], lost = [];
    let release = null;
    const c = new DealwireClient(options);
    c.on("price_alert", (m, info) => {
        got.push([m.seq, info.replayed]);
        if (m.slow) return new Promise((r) => { release = r; });
    });
    c.on("ignored", (i) => ignored.push([i.msg.seq, i.reason]));
    c.on("history_lost", (l) => lost.push(l));
    c.connect();
    await tick();
    const ws = sockets[0];
    out.firstUrl = ws.url;
    // A first connection: what is not acknowledged yet (3..5 <= last_seq 5) is history.
    ws.deliver(welcome({ last_seq: 5, recovered: true }));
    ws.deliver(alert(3), alert(4), alert(5), alert(4), alert(6));
    out.replay = { got: [...got], lastSeq: c.lastSeq, acks: ws.sentOf("ack") };
    await tick(100);
    out.ackLater = ws.sentOf("ack");
    // A handler's promise: handled (stored, acknowledged) once it settles.
    ws.deliver(alert(7, { slow: true }));
    await tick(100);
    out.pending = { lastSeq: c.lastSeq, acks: ws.sentOf("ack").length,
                    stored: storage.getItem("dealwire:last_seq:u1") };
    release();
    await tick(100);
    out.settled = { lastSeq: c.lastSeq, acks: ws.sentOf("ack"),
                    stored: storage.getItem("dealwire:last_seq:u1") };
    // A gap: one resume; everything with seq waits for "resumed".
    ws.deliver(alert(9), alert(10), alert(8));
    out.resumes = ws.sentOf("resume");
    ws.deliver({ type: "resumed", last_seq: 10, recovered: true },
               alert(8), alert(9), alert(10), alert(11));
    out.resumesAfter = ws.sentOf("resume").length;
    out.got = got;
    out.ignored = ignored;
    out.lastSeq = c.lastSeq;
    out.lost = lost.length;
    c.close();
    // A reload: the stored seq goes in the URL. The server's history ends below it.
    const lost2 = [];
    const c2 = new DealwireClient(options);
    c2.on("history_lost", (l) => lost2.push(l));
    c2.connect();
    await tick();
    out.reloadUrl = sockets[1].url;
    sockets[1].deliver(welcome({ last_seq: 0, recovered: false }));
    out.lost2 = lost2;
    out.afterLost = c2.lastSeq;
    sockets[1].deliver(alert(1));
    out.afterNew = c2.lastSeq;
    c2.close();
    // No storage: nothing kept between clients.
    const c3 = new DealwireClient({ ...options, storage: null });
    c3.connect();
    await tick();
    out.noStorageUrl = sockets[2].url;
    c3.close();
    return out;
})().then(done, (err) => done({ error: String((err && err.stack) || err) }));
"""


def test_client_keeps_seq_acks_and_resumes_against_a_scripted_server(dealwire, page):
    d = dealwire()
    open_page(page, d.port, "?user_id=bad%20id")  # the page's own client stays idle
    out = page.execute_async_script(SCRIPTED_CLIENT)
    assert "error" not in out, out.get("error")
    assert "last_seq" not in out["firstUrl"], out  # a first connection asks for nothing
    # 3..5 are history, 6 is news; the second 4 reached no handler; no ack at once...
    assert out["replay"]["got"] == [[3, True], [4, True], [5, True], [6, False]], out
    assert out["replay"]["lastSeq"] == 6 and out["replay"]["acks"] == [], out
    # ... but one, of the highest, after ackDelayMs.
    assert out["ackLater"] == [{"type": "ack", "seq": 6}], out
    assert out["pending"] == {"lastSeq": 6, "acks": 1, "stored": "6"}, out
    assert out["settled"] == {"lastSeq": 7, "acks": [{"type": "ack", "seq": 6},
                                                     {"type": "ack", "seq": 7}],
                              "stored": "7"}, out
    assert out["resumes"] == [{"type": "resume", "last_seq": 7}], out
    assert out["resumesAfter"] == 1, out
    assert [s for s, _ in out["got"]] == [3, 4, 5, 6, 7, 8, 9, 10, 11], out
    assert out["ignored"] == [[4, "duplicate"], [9, "gap"], [10, "resuming"], [8, "resuming"]]
    assert out["lastSeq"] == 11 and out["lost"] == 0, out
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(out["reloadUrl"]).query) == {
        "user_id": ["u1"], "last_seq": ["11"]}, out
    assert [(x["reason"], x["lastSeq"], x["serverLastSeq"]) for x in out["lost2"]] == [
        ("server_behind", 11, 0)], out
    assert out["afterLost"] == 0 and out["afterNew"] == 1, out
    assert "last_seq" not in out["noStorageUrl"], out
    assert console_errors(page) == []


def start_with_db(dealwire, url, port=None):
    d = dealwire("--db", url, port=port)
    wait_until(lambda: http_get(d.port, "/readyz")[0] == 200, t(30), "the schema")
    return d


def critical_alert(user, name):
    return {"target": {"user_id": user}, "critical": True, "message": {
        "type": "price_alert", "deal_id": name, "title": f"Alert {name}", "current_price": 90,
        "threshold": 100}}


def handled(driver):
    """What the page handled with a seq, in order: [{seq, type, replayed, dealId}]."""
    return driver.execute_script("return window.dealwireDashboard.handled.slice()")


def page_last_seq(driver):
    """(the client's lastSeq, the seq the page shows)."""
    return tuple(driver.execute_script(
        "return [window.dealwireDashboard.client.lastSeq,"
        " document.getElementById('last-seq').dataset.seq]"))


def wait_handled(driver, n, what, timeout=10):
    """Waits until the page handled n messages with seq; returns them."""
    return wait_for(driver, lambda d: (lambda h: h if len(h) >= n else None)(handled(d)),
                    what, timeout)


def inbox(server, db, user):
    """{seq: (deal_id, acknowledged)} of user's stored messages."""
    rows = server.psql(f"SELECT seq, payload->>'deal_id', acked_at IS NOT NULL FROM alert_inbox"
                       f" WHERE user_id = '{user}' ORDER BY seq", db)
    return {int(s): (deal, acked == "t") for s, deal, acked in rows}


class Burst:
    """Critical price alerts "<prefix>-0" .. "<prefix>-<total-1>" to user, published by a few
    threads, each retried with the same content until it is answered 200 (within a deadline).
    A publish refused at the socket or answered 503 is retried; an answer lost with the
    daemon may have been stored, so its alert may be stored twice."""

    def __init__(self, port, user, prefix, total, threads=2):
        self.port, self.user, self.prefix, self.total = port, user, prefix, total
        self.unsent = iter(range(total))  # alert numbers no thread took yet
        self.lock = threading.Lock()
        self.seq_of = {}  # deal id -> the seq of its 200
        self.attempts = Counter()
        self.failures = []
        self.errors = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        for th in self.threads:
            th.start()
        return self

    def answered(self):
        with self.lock:
            return len(self.seq_of)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        assert not any(th.is_alive() for th in self.threads), "the publishers did not finish"
        assert not self.errors, self.errors

    def _next(self):
        with self.lock:
            return next(self.unsent, None)

    def _run(self):
        deadline = time.monotonic() + t(90)
        try:
            while (n := self._next()) is not None:
                self._publish(f"{self.prefix}-{n}", deadline)
        except Exception as exc:  # reported by join()
            self.errors.append(exc)

    def _publish(self, name, deadline):
        while not self.stop.is_set():
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: no 200 within the deadline: {self.failures[-3:]}")
            with self.lock:
                self.attempts[name] += 1
            try:
                r = http_request(self.port, "POST", "/api/publish",
                                 body=critical_alert(self.user, name), timeout=t(5))
            except (OSError, http.client.HTTPException) as exc:
                failure = repr(exc)  # the daemon is away, or went away with the request
            else:
                if r.status == 200:
                    with self.lock:
                        self.seq_of[name] = r.json["seq"]
                    return
                assert r.status == 503, f"{name}: {r.status} {r.json}"
                failure = f"503 {r.json}"
            with self.lock:
                self.failures.append((name, failure))
            self.stop.wait(0.02)  # pace the retries while the daemon is away


def test_page_holds_every_critical_alert_once_through_a_kill_9(dealwire, page, pg_db):
    """300 critical alerts; the daemon is SIGKILLed in the middle of them and started again on
    the same port and database; the page reconnects by itself (with the last seq it handled)
    and ends up with every stored alert exactly once, in seq order, seq for seq as stored."""
    server, db, url = pg_db
    d1 = start_with_db(dealwire, url)
    user = "web-burst"
    open_page(page, d1.port, f"?user_id={user}")
    wait_connected(page, user)

    total = 300
    burst = Burst(d1.port, user, "burst", total).start()
    wait_until(lambda: burst.answered() >= 120, t(30), "120 alerts answered")
    d1.kill_9()  # by the PID of the process this test started
    assert d1.returncode == -signal.SIGKILL
    killed_at = burst.answered()
    d2 = dealwire("--db", url, port=d1.port)
    burst.join(t(120))
    assert killed_at < total and burst.failures, "the kill did not land inside the burst"

    stored = inbox(server, db, user)
    last = max(stored)
    assert sorted(stored) == list(range(1, last + 1))
    got = wait_handled(page, last, f"the page to handle seq 1..{last}", timeout=30)
    wait_for(page, lambda p: page_last_seq(p) == (last, str(last)), f"last seq {last} shown")
    # Every seq once, in order (no duplicate, no gap), and the page's alert is the stored one.
    assert [h["seq"] for h in got] == list(range(1, last + 1)), [h["seq"] for h in got]
    assert {h["seq"]: h["dealId"] for h in got} == {s: deal for s, (deal, _) in stored.items()}
    # Every alert answered 200 is there under the seq of its answer; one is there twice only
    # if a publish of it was lost with the daemon and published again.
    for name, seq in burst.seq_of.items():
        assert got[seq - 1]["dealId"] == name, (name, seq, got[seq - 1])
    names = Counter(h["dealId"] for h in got)
    assert set(names) == {f"burst-{n}" for n in range(total)}
    assert all(count <= burst.attempts[name] for name, count in names.items()), names
    # (at most one answer per publisher thread went down with the daemon)
    assert len(got) - total == sum(c - 1 for c in names.values()) <= len(burst.threads), names
    assert counter(page, "reconnects") == 1  # by itself, once
    status, stats = http_get(d2.port, f"/api/websocket/users/{user}")
    assert status == 200 and stats["connections"] == 1, (status, stats)
    assert not [m for m in console_errors(page) if "WebSocket connection to" not in m]


def test_page_opened_later_gets_what_was_sent_while_away_marked_replayed(dealwire, page, pg_db):
    """Offline delivery: messages published while no one was connected arrive on the first
    connection (which has no last seq), marked replayed; what is published after is not."""
    server, db, url = pg_db
    d = start_with_db(dealwire, url)
    user = "web-offline"
    for n in range(4):
        assert publish(d.port, critical_alert(user, f"away-{n}"))["recipients"] == 0
    assert publish(d.port, {"target": {"user_id": user}, "critical": True, "message": {
        "type": "notification", "message": f"while away {XSS}", "level": "info"}})["seq"] == 5

    open_page(page, d.port, f"?user_id={user}")
    wait_connected(page, user)
    got = wait_handled(page, 5, "the messages sent while away")
    assert [(h["seq"], h["replayed"]) for h in got] == [(s, True) for s in range(1, 6)], got
    alerts = items(page, "price-alerts")
    assert [(i["seq"], i.get("replayed")) for i in alerts] == [
        (str(s), "true") for s in (4, 3, 2, 1)], alerts
    assert all("replayed" in i["text"] and f"#{i['seq']}" in i["text"] for i in alerts), alerts
    note = wait_item(page, "notifications", lambda i: "while away" in i["text"], "the note")
    assert note["seq"] == "5" and note["replayed"] == "true" and XSS in note["text"], note
    assert counter(page, "replayed") == 5 and page_last_seq(page) == (5, "5")

    publish(d.port, critical_alert(user, "live-0"))
    live = wait_item(page, "price-alerts", lambda i: i.get("dealId") == "live-0", "the live one")
    assert live["seq"] == "6" and "replayed" not in live and "replayed" not in live["text"], live
    assert handled(page)[-1] == {"seq": 6, "type": "price_alert", "replayed": False,
                                 "dealId": "live-0"}
    wait_for(page, lambda p: page_last_seq(p) == (6, "6"), "last seq 6 shown")
    assert page.execute_script("return document.querySelectorAll('img').length") == 0
    assert page.execute_script("return document.getElementById('history-notice').hidden")
    assert console_errors(page) == []


def test_page_acknowledges_what_it_handled(dealwire, page, pg_db):
    """The page acks what it handled: every row of alert_inbox gets acked_at; the acks are
    coalesced (a burst of 120 is a few acks, not 120)."""
    server, db, url = pg_db
    d = start_with_db(dealwire, url)
    user = "web-acks"
    open_page(page, d.port, f"?user_id={user}")
    wait_connected(page, user)
    answer = publish(d.port, [critical_alert(user, f"ack-{n}") for n in range(120)])
    assert [r["seq"] for r in answer["results"]] == list(range(1, 121)), answer
    wait_handled(page, 120, "120 alerts handled")
    wait_until(lambda: all(acked for _, acked in inbox(server, db, user).values()), t(10),
               "every stored alert acknowledged")
    assert len(inbox(server, db, user)) == 120
    acks = page.execute_script("return window.dealwireDashboard.client.acksSent")
    assert 1 <= acks <= 10, acks


def test_reloaded_page_goes_on_from_the_seq_it_stored(dealwire, page, pg_db):
    """The last seq is kept in the page's localStorage, per origin: a reloaded page asks for
    what follows its own last seq. Another device (another origin: localhost) acknowledges
    messages meanwhile; the reloaded page still gets them, so it did not rely on the acks."""
    server, db, url = pg_db
    d = start_with_db(dealwire, url)
    user = "web-reload"
    open_page(page, d.port, f"?user_id={user}")
    wait_connected(page, user)
    for n in range(3):
        publish(d.port, critical_alert(user, f"first-{n}"))
    wait_handled(page, 3, "the first three")
    wait_until(lambda: all(a for _, a in inbox(server, db, user).values()), t(10), "3 acks")
    page.get("about:blank")
    for n in range(3):
        publish(d.port, critical_alert(user, f"second-{n}"))

    # The other device: a first connection, so it gets what is unacknowledged, and acks it.
    page.get(f"http://localhost:{d.port}/?user_id={user}")
    wait_connected(page, user, "the other device")
    assert [h["seq"] for h in wait_handled(page, 3, "4..6 on the other device")] == [4, 5, 6]
    wait_until(lambda: all(a for _, a in inbox(server, db, user).values()), t(10), "6 acks")
    page.get("about:blank")

    open_page(page, d.port, f"?user_id={user}")
    wait_connected(page, user, "the reloaded page")
    got = wait_handled(page, 3, "4..6 on the reloaded page")
    assert [(h["seq"], h["dealId"], h["replayed"]) for h in got] == [
        (4, "second-0", True), (5, "second-1", True), (6, "second-2", True)], got
    assert page_last_seq(page) == (6, "6")
    assert console_errors(page) == []


def test_page_says_when_its_history_is_gone(dealwire, page, pg_db):
    """A page whose stored last seq the server does not have (a new database) shows the notice,
    and counts again from the server's seq instead of dropping new messages as duplicates."""
    server, db, url = pg_db
    d1 = start_with_db(dealwire, url)
    user = "web-lost"
    open_page(page, d1.port, f"?user_id={user}")
    wait_connected(page, user)
    for n in range(3):
        publish(d1.port, critical_alert(user, f"old-{n}"))
    wait_handled(page, 3, "three alerts")
    page.get("about:blank")
    assert d1.stop() == 0

    other = server.create_db()  # same port, same origin, same localStorage: another history
    d2 = start_with_db(dealwire, server.url(other), port=d1.port)
    open_page(page, d2.port, f"?user_id={user}")
    wait_connected(page, user)
    notice = wait_for(page, lambda p: p.execute_script(
        "const n = document.getElementById('history-notice');"
        "return n.hidden ? null : [n.dataset.reason, n.textContent]"), "the notice")
    assert notice[0] == "server_behind" and "#3" in notice[1], notice
    assert any(i.get("event") == "history_lost" for i in items(page, "connection-log"))
    publish(d2.port, critical_alert(user, "new-0"))
    alert = wait_item(page, "price-alerts", lambda i: i.get("dealId") == "new-0", "the new one")
    assert alert["seq"] == "1", alert
    wait_for(page, lambda p: page_last_seq(p) == (1, "1"), "last seq 1 shown")
    assert console_errors(page) == []

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
  connects only when the daemon's own origin is listed.

Nothing waits by sleeping: WebDriverWait polls DOM conditions, within scaled deadlines.
One Chromium serves the whole module (started once, stopped with driver.quit(), its
chromedriver by PID if it outlives that); each test loads a fresh page.
"""

import re
import shutil
import socket
import urllib.parse

import pytest

from conftest import REPO, free_port, http_get, http_request, publish, t, wait_until
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


def test_page_is_refused_when_its_origin_is_not_allowed(dealwire, page):
    d = dealwire("--allowed-origins", "https://deals.example")
    open_page(page, d.port, "?user_id=web-erin")
    wait_for(page, lambda p: state(p)[0] == "reconnecting", "a refused attempt")
    refused = wait_until(lambda: http_get(d.port, "/api/websocket/stats")[1]["security"]
                         ["refused"]["origin"], t(10), "the daemon's count of refused origins")
    assert refused >= 1
    assert http_get(d.port, "/api/websocket/users/web-erin")[0] == 404

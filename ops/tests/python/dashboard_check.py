#!/usr/bin/env python3
"""Drives the edge's admin dashboard in headless Chromium (Playwright, sync API).

Checks that the page shows every instance healthy and the breaker closed, that an
operator can force the breaker open from the page (after confirming), that a REST call
through the edge is then refused fast with 503 (the breaker's not_permitted_calls
grows), that dismissing the confirmation changes nothing, and that "normal" closes
the breaker again so the same call succeeds.

Prints one "ok: ..." line per check; on the first failed check prints
"FAIL: expected ..., saw ..." and exits 1. Every wait polls with a deadline.
"""

import argparse
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

POLL_S = 0.2
HTTP_TIMEOUT_S = 10.0

# Reads one element's text in a single JS turn, so a table re-rendered between two
# Playwright calls cannot detach the element under us.
JS_TEXT = """(sel) => {
  const el = document.querySelector(sel);
  return el === null ? null : el.textContent.replace(/\\s+/g, ' ').trim();
}"""
JS_COUNT = "(sel) => document.querySelectorAll(sel).length"
JS_READY = "() => document.body !== null && document.body.dataset.ready === '1'"


class Fail(Exception):
    """A failed check; its message says what was expected and what was seen."""


def ok(msg):
    print(f"ok: {msg}", flush=True)


def css_string(value):
    """A CSS string literal (double-quoted) holding `value`, for attribute selectors."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\a ")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def endpoint_row(name):
    return f"tr[data-endpoint={css_string(name)}]"


def breaker_row(name):
    return f"tr[data-breaker={css_string(name)}]"


def normalize(text):
    return None if text is None else " ".join(text.split()).lower()


def parse_endpoints(value):
    names = [n.strip() for n in value.split(",")]
    return [n for n in names if n]


def wait_until(what, probe, timeout_s, pause=None):
    """Polls `probe()` every POLL_S until it returns (True, seen) or the deadline passes.

    `probe` returns (done, seen); `seen` describes the last observation for the FAIL
    message. `pause(seconds)` waits between polls (the page's own wait, so Playwright
    keeps handling events such as dialogs while we wait).
    """
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        done, seen = probe()
        if done:
            return seen
        if time.monotonic() >= deadline:
            raise Fail(f"expected {what} within {timeout_s:g} s; last seen: {seen}")
        (pause or time.sleep)(POLL_S)


# ---------------------------------------------------------------- HTTP (std lib)


def http(method, url, token=None, body=None, timeout=HTTP_TIMEOUT_S):
    """Returns (status, text, json_or_None); HTTP error statuses are returned, not raised."""
    headers = {"accept": "application/json"}
    data = None
    if token:
        headers["authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise Fail(f"expected an HTTP answer from {method} {url}, saw a connection error: {e}")
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = None
    return status, text, parsed


def short(text, limit=400):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def find_breaker(doc, name):
    """The entry named `name` in a `GET /breakers` document, or None."""
    if not isinstance(doc, dict) or not isinstance(doc.get("breakers"), list):
        return None
    for b in doc["breakers"]:
        if isinstance(b, dict) and b.get("name") == name:
            return b
    return None


class Mesh:
    def __init__(self, args):
        self.admin = args.admin.rstrip("/")
        self.edge = args.edge.rstrip("/")
        self.admin_token = args.admin_token
        self.call_token = args.call_token
        self.merchant = args.merchant
        self.breaker = args.breaker

    def breaker_entry(self):
        url = f"{self.admin}/breakers"
        status, text, doc = http("GET", url, token=self.admin_token)
        if status != 200:
            raise Fail(f"expected 200 from GET {url}, saw {status}: {short(text)}")
        entry = find_breaker(doc, self.breaker)
        if entry is None:
            names = [b.get("name") for b in (doc or {}).get("breakers", []) if isinstance(b, dict)]
            raise Fail(f"expected breaker {self.breaker!r} in GET {url}, saw breakers {names}")
        return entry

    def not_permitted(self):
        entry = self.breaker_entry()
        n = entry.get("not_permitted_calls")
        if not isinstance(n, int) or isinstance(n, bool):
            raise Fail(f"expected an integer not_permitted_calls for {self.breaker!r}, saw {entry}")
        return n

    def authorize(self):
        url = f"{self.edge}/api/payments/authorize"
        key = f"dash-{uuid.uuid4()}"
        body = {"merchant_id": self.merchant, "amount": 1500, "currency": "KRW", "idempotency_key": key}
        status, text, doc = http("POST", url, token=self.call_token, body=body)
        return status, text, doc, key

    def force(self, state):
        """Best-effort direct admin call (used only to clean up after a failure)."""
        name = urllib.parse.quote(self.breaker, safe="@:")
        return http("POST", f"{self.admin}/breakers/{name}?state={state}", token=self.admin_token)


# ---------------------------------------------------------------- the page


class Dashboard:
    def __init__(self, page, breaker):
        self.page = page
        self.breaker = breaker
        self.dialog_mode = "dismiss"  # what the next confirm() gets: "accept" or "dismiss"
        self.dialogs = []  # (message, what we did)
        self.posts = []  # Request objects of every POST the page made
        self.state_polls = 0  # finished /dashboard/state responses
        self.page_errors = []
        self.console_errors = []
        page.on("dialog", self._on_dialog)
        page.on("request", self._on_request)
        page.on("requestfinished", self._on_finished)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("console", self._on_console)

    def _on_dialog(self, dialog):
        message = dialog.message
        if self.dialog_mode == "accept" and self.breaker in message:
            self.dialogs.append((message, "accepted"))
            dialog.accept()
        else:
            self.dialogs.append((message, "dismissed"))
            dialog.dismiss()

    def _on_request(self, request):
        if request.method == "POST":
            self.posts.append(request)

    def _on_finished(self, request):
        if "/dashboard/state" in request.url:
            self.state_polls += 1

    def _on_console(self, msg):
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            if not where.endswith("/favicon.ico"):
                self.console_errors.append(f"{msg.text} ({where})" if where else msg.text)

    def pause(self, seconds):
        self.page.wait_for_timeout(seconds * 1000)

    def text(self, selector):
        return self.page.evaluate(JS_TEXT, selector)

    def count(self, selector):
        return self.page.evaluate(JS_COUNT, selector)

    def wait(self, what, probe, timeout_s):
        return wait_until(what, probe, timeout_s, pause=self.pause)

    def wait_text(self, selector, want, timeout_s):
        def probe():
            seen = self.text(selector)
            if seen is None:
                return False, f"no element {selector}"
            return normalize(seen) == want, repr(seen)

        return self.wait(f"{selector} to show {want!r}", probe, timeout_s)

    def breaker_state_selector(self):
        return f"{breaker_row(self.breaker)} .breaker-state"

    def button(self, action):
        return self.page.locator(f'{breaker_row(self.breaker)} button[data-action="{action}"]').first

    def wait_polls(self, n, timeout_s):
        start = self.state_polls
        self.wait(
            f"{n} more /dashboard/state polls by the page",
            lambda: (self.state_polls - start >= n, f"{self.state_polls - start} polls finished"),
            timeout_s,
        )

    def click_and_answer(self, action, mode, timeout_s):
        """Clicks the breaker's button and answers its confirm() with `mode` ("accept"
        or "dismiss"); returns the index in self.posts from which the click's POSTs come."""
        self.dialog_mode = mode
        dialogs_before = len(self.dialogs)
        posts_before = len(self.posts)
        try:
            self.button(action).click(timeout=timeout_s * 1000)
        except Exception as e:
            selector = f'{breaker_row(self.breaker)} button[data-action="{action}"]'
            raise Fail(f"expected to click {selector}, saw {type(e).__name__}: {short(e)}")
        self.wait(
            f'a confirm() after clicking [data-action="{action}"]',
            lambda: (len(self.dialogs) > dialogs_before, "no dialog yet"),
            timeout_s,
        )
        self.dialog_mode = "dismiss"
        message, done = self.dialogs[dialogs_before]
        if self.breaker not in message:
            raise Fail(f"expected the confirm() message to name {self.breaker!r}, saw {message!r} (dismissed it)")
        if done != mode + "ed":
            raise Fail(f"expected to {mode} the confirm(), but it was {done}: {message!r}")
        ok(f'[data-action="{action}"] asked confirm({message!r}) naming the breaker; {done} it')
        return posts_before

    def diagnostics(self):
        lines = []
        try:
            lines.append(f"#action-status at failure: {self.text('#action-status')!r}")
        except Exception:
            pass
        if self.page_errors:
            lines.append("page errors: " + " | ".join(self.page_errors[-5:]))
        if self.console_errors:
            lines.append("console errors: " + " | ".join(self.console_errors[-5:]))
        return lines


# ---------------------------------------------------------------- the checks


def run(args, dash, mesh):
    page = dash.page
    t = args.timeout

    # 1. Open the page and wait for its first render.
    page.goto(f"{mesh.admin}/", wait_until="domcontentloaded", timeout=t * 1000)
    dash.wait(
        'body[data-ready="1"] (the first render)',
        lambda: (page.evaluate(JS_READY), f"data-ready={page.evaluate('() => document.body && document.body.dataset.ready')!r}"),
        t,
    )
    ok(f"dashboard at {mesh.admin}/ rendered (body[data-ready=1])")

    # 2. Instances healthy, breaker closed, relays and workers shown.
    for name in args.endpoints:
        dash.wait_text(f"{endpoint_row(name)} .health", "healthy", t)
        ok(f"instance {name} shows healthy")
    dash.wait_text(dash.breaker_state_selector(), "closed", t)
    ok(f"breaker {mesh.breaker} shows closed")
    for sel, what in (("tr[data-relay]", "relay"), ("tr[data-worker]", "worker")):
        n = dash.wait(f"at least one {what} row ({sel})", lambda sel=sel: (lambda c: (c > 0, c))(dash.count(sel)), t)
        ok(f"{what} rows shown: {n}")
    rate = dash.text("#req-rate")
    if rate is None:
        raise Fail("expected a #req-rate element (calls/s), saw none")
    ok(f"#req-rate shows {rate!r}")
    page.screenshot(path=os.path.join(args.screenshots, "dashboard.png"), full_page=True)
    ok("saved dashboard.png")

    # 3. A call through the edge succeeds.
    status, text, doc, key = mesh.authorize()
    if status != 200 or not isinstance(doc, dict) or not doc.get("paymentId"):
        raise Fail(f"expected 200 with a paymentId from POST /api/payments/authorize ({key}), saw {status}: {short(text)}")
    ok(f"authorize through the edge: 200, paymentId {doc['paymentId']}")

    # 4. The breaker's refusals so far.
    refused_before = mesh.not_permitted()
    ok(f"GET /breakers: {mesh.breaker} not_permitted_calls={refused_before}")

    # 5. Force the breaker open from the page.
    token_box = page.locator("#admin-token")
    if token_box.count() > 0 and token_box.first.is_visible():
        token_box.first.fill(args.admin_token)
        ok("filled #admin-token")
        token_filled = True
    else:
        print("note: #admin-token is not shown (admin auth off on this edge); not filling it", flush=True)
        token_filled = False
    posts_from = dash.click_and_answer("open", "accept", t)
    check_post(dash, posts_from, args.admin_token if token_filled else None, t)
    dash.wait_text(dash.breaker_state_selector(), "forced_open", t)
    ok(f"page shows {mesh.breaker} forced_open")
    wait_admin_state(mesh, "forced_open", t)
    ok(f"GET /breakers says {mesh.breaker} forced_open")
    status_text = dash.wait("#action-status to report the action", lambda: (bool(dash.text("#action-status")), repr(dash.text("#action-status"))), t)
    ok(f"#action-status shows {status_text}")
    page.screenshot(path=os.path.join(args.screenshots, "dashboard-breaker-open.png"), full_page=True)
    ok("saved dashboard-breaker-open.png")

    # 6. The same call is now refused by the edge without reaching the service.
    status, text, doc, key = mesh.authorize()
    if status != 503:
        raise Fail(f"expected 503 from authorize with {mesh.breaker} forced open ({key}), saw {status}: {short(text)}")
    ok(f"authorize with the breaker forced open: 503 ({short(text, 160)})")
    refused = wait_until(
        f"not_permitted_calls of {mesh.breaker} to grow past {refused_before}",
        lambda: (lambda n: (n >= refused_before + 1, n))(mesh.not_permitted()),
        t,
    )
    ok(f"not_permitted_calls grew {refused_before} -> {refused}")

    # 6b. The page lists the refused call among the latest failures.
    def refused_listed():
        seen = dash.text("#failures")
        return seen is not None and "UNAVAILABLE" in seen and "Authorize" in seen, short(seen or "", 200)

    dash.wait("#failures to list the refused Authorize (UNAVAILABLE)", refused_listed, t)
    ok("latest failures on the page list the refused Authorize")
    page.screenshot(path=os.path.join(args.screenshots, "dashboard-refused.png"), full_page=True)

    # 7. Dismissing the confirmation changes nothing.
    status_before = dash.text("#action-status")
    last_update_before = dash.text("#last-update")
    posts_from = dash.click_and_answer("closed", "dismiss", t)
    dash.wait_polls(2, t)
    if len(dash.posts) > posts_from:
        urls = [r.url for r in dash.posts[posts_from:]]
        raise Fail(f"expected no POST after dismissing the confirm(), saw {urls}")
    ok("no POST was sent after the dismissed confirm()")
    state = normalize(dash.text(dash.breaker_state_selector()))
    if state != "forced_open":
        raise Fail(f"expected the page to still show forced_open after a dismissed confirm(), saw {state!r}")
    entry = mesh.breaker_entry()
    if entry.get("state") != "forced_open":
        raise Fail(f"expected GET /breakers to still say forced_open after a dismissed confirm(), saw {entry.get('state')!r}")
    last_update = dash.text("#last-update")
    ok(
        f"still forced_open on the page and in GET /breakers after two polls "
        f"(#last-update {last_update_before!r} -> {last_update!r}; #action-status {status_before!r} -> {dash.text('#action-status')!r})"
    )

    # 8. Back to normal: closed again, and the call succeeds.
    posts_from = dash.click_and_answer("normal", "accept", t)
    check_post(dash, posts_from, args.admin_token if token_filled else None, t)
    dash.wait_text(dash.breaker_state_selector(), "closed", t)
    ok(f"page shows {mesh.breaker} closed")
    wait_admin_state(mesh, "closed", t)
    ok(f"GET /breakers says {mesh.breaker} closed")
    status, text, doc, key = mesh.authorize()
    if status != 200 or not isinstance(doc, dict) or not doc.get("paymentId"):
        raise Fail(f"expected 200 with a paymentId from authorize after normal ({key}), saw {status}: {short(text)}")
    ok(f"authorize after normal: 200, paymentId {doc['paymentId']}")


def check_post(dash, posts_from, token, timeout_s):
    """The accepted confirm() led to a POST; with a token filled in, it carries it."""
    dash.wait("a POST from the page after the accepted confirm()", lambda: (len(dash.posts) > posts_from, "no POST yet"), timeout_s)
    req = dash.posts[posts_from]
    if token is not None:
        got = req.all_headers().get("authorization")
        if got != f"Bearer {token}":
            shown = None if got is None else got.split(" ", 1)[0] + " <redacted>"
            raise Fail(f"expected the POST {req.url} to carry 'Authorization: Bearer <#admin-token>', saw {shown!r}")
    ok(f"the page sent POST {req.url}" + (" with the admin token" if token else ""))


def wait_admin_state(mesh, want, timeout_s):
    wait_until(
        f"GET /breakers to say {mesh.breaker} is {want}",
        lambda: (lambda e: (e.get("state") == want, e.get("state")))(mesh.breaker_entry()),
        timeout_s,
    )


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--admin", required=True, help="the edge admin listener, http://127.0.0.1:P")
    p.add_argument("--edge", required=True, help="the edge's public listener, http://127.0.0.1:Q")
    p.add_argument("--admin-token", required=True, help="bearer token with scope mesh:admin")
    p.add_argument("--call-token", required=True, help="bearer token of the merchant")
    p.add_argument("--merchant", required=True)
    p.add_argument("--breaker", required=True, help="the edge breaker guarding the merchant's shard")
    p.add_argument("--endpoints", required=True, type=parse_endpoints, help="instance names, comma-separated")
    p.add_argument("--screenshots", required=True, help="folder for the PNGs")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--timeout", type=float, default=20.0, help="deadline of each wait, seconds")
    args = p.parse_args(argv)
    if not args.endpoints:
        p.error("--endpoints names no instance")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.screenshots, exist_ok=True)
    mesh = Mesh(args)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        print(f"FAIL: expected the playwright package (pip install -r requirements.txt), saw {e}", flush=True)
        return 1

    code = 0
    dash = None
    with sync_playwright() as pw:
        browser = None
        try:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            dash = Dashboard(context.new_page(), args.breaker)
            run(args, dash, mesh)
            ok("dashboard check passed")
        except Fail as e:
            print(f"FAIL: {e}", flush=True)
            code = 1
        except Exception as e:  # a Playwright error, a timeout inside a Playwright call, ...
            print(f"FAIL: unexpected error: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            code = 1
        finally:
            if code != 0:
                for line in dash.diagnostics() if dash else []:
                    print(line, flush=True)
                if dash is not None:
                    try:
                        path = os.path.join(args.screenshots, "dashboard-failure.png")
                        dash.page.screenshot(path=path, full_page=True)
                        print(f"saved {path}", flush=True)
                    except Exception as e:
                        print(f"could not save dashboard-failure.png: {e}", flush=True)
                restore(mesh)
            if browser is not None:
                try:
                    browser.close()
                except Exception as e:
                    print(f"could not close the browser cleanly: {e}", flush=True)
    return code


def restore(mesh):
    """After a failure, put the breaker back to normal so later tests are not refused."""
    try:
        entry = mesh.breaker_entry()
        if entry.get("state") in ("forced_open", "forced_closed"):
            status, text, _ = mesh.force("normal")
            print(f"cleanup: {mesh.breaker} was {entry.get('state')}; POST state=normal -> {status} {short(text, 160)}", flush=True)
    except Exception as e:
        print(f"cleanup: could not read or reset {mesh.breaker}: {e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

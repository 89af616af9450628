#!/usr/bin/env python3
"""Drives the paymesh-mcp server with the official MCP Python SDK client, over stdio
and over streamable HTTP.

On each transport: initialize (serverInfo.name is paymesh-mcp), list the tools (each
with a description and an input schema), call the tools and check the JSON they
answer, and check that bad arguments give a clear tool error rather than a crash or a
silent success. On stdio every tool is called; on HTTP a subset.

Prints one "ok: ..." line per check; on the first failed check prints
"FAIL: expected ..., saw ..." and exits 1.
"""

import argparse
import asyncio
import json
import math
import os
import shlex
import sys
import time
import traceback
from datetime import timedelta

SERVER_NAME = "paymesh-mcp"
REQUIRED_TOOLS = ("list_clusters", "list_breakers", "force_breaker", "read_metrics", "pipeline_status", "run_load_test")
TRANSPORT_DEADLINE_S = 120.0
CALL_TIMEOUT_S = 30.0
LOAD_TEST_TIMEOUT_S = 60.0
POLL_S = 0.2
# The SDK closes the server's stdin, waits this long, then terminates it.
SDK_STDIO_GRACE_S = 2.0


class Fail(Exception):
    """A failed check; its message says what was expected and what was seen."""


def ok(msg):
    print(f"ok: {msg}", flush=True)


def short(value, limit=300):
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- pure checks of the tools' JSON


def check_clusters(doc):
    clusters = doc.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        raise Fail(f"expected list_clusters to give a non-empty 'clusters' list, saw {short(doc)}")
    endpoints = 0
    for c in clusters:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("endpoints"), list):
            raise Fail(f"expected each cluster to have 'name' and an 'endpoints' list, saw {short(c)}")
        for e in c["endpoints"]:
            if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not isinstance(e.get("healthy"), bool):
                raise Fail(f"expected each endpoint of cluster {c['name']!r} to have 'name' and a boolean 'healthy', saw {short(e)}")
            endpoints += 1
    return f"{len(clusters)} clusters, {endpoints} endpoints"


def breaker_state(doc, name):
    """The state list_breakers gives the edge breaker `name`; checks the document's shape."""
    edge = doc.get("edge")
    if not isinstance(edge, list):
        raise Fail(f"expected list_breakers to give an 'edge' list, saw {short(doc)}")
    if not isinstance(doc.get("relays"), list):
        raise Fail(f"expected list_breakers to give a 'relays' list, saw {short(doc)}")
    for b in edge:
        if not isinstance(b, dict) or not isinstance(b.get("name"), str) or not isinstance(b.get("state"), str):
            raise Fail(f"expected each edge breaker to have 'name' and 'state', saw {short(b)}")
    found = [b for b in edge if b["name"] == name]
    if not found:
        raise Fail(f"expected edge breaker {name!r} in list_breakers, saw {[b['name'] for b in edge]}")
    return found[0]["state"]


def check_metrics(doc, process, prefix):
    if doc.get("process") != process:
        raise Fail(f"expected read_metrics to answer process {process!r}, saw {doc.get('process')!r}")
    samples = doc.get("samples")
    if not isinstance(samples, list) or not samples:
        raise Fail(f"expected read_metrics to give a non-empty 'samples' list, saw {short(doc)}")
    for s in samples:
        if (
            not isinstance(s, dict)
            or not isinstance(s.get("name"), str)
            or not isinstance(s.get("labels"), dict)
            or not is_number(s.get("value"))
        ):
            raise Fail(f"expected each sample to have 'name', 'labels' (object) and a numeric 'value', saw {short(s)}")
        if not s["name"].startswith(prefix):
            raise Fail(f"expected every sample name to start with {prefix!r}, saw {s['name']!r}")
    return f"{len(samples)} samples, {len({s['name'] for s in samples})} metric names"


def check_pipeline(doc):
    relays, workers = doc.get("relays"), doc.get("workers")
    if not isinstance(relays, list) or not isinstance(workers, list):
        raise Fail(f"expected pipeline_status to give 'relays' and 'workers' lists, saw {short(doc)}")
    for r in relays:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise Fail(f"expected each relay to have a 'name', saw {short(r)}")
        if not (is_number(r.get("backlog")) or r.get("error")):
            raise Fail(f"expected relay {r['name']!r} to have a numeric 'backlog' or an 'error', saw {short(r)}")
    for w in workers:
        if not isinstance(w, dict) or not isinstance(w.get("name"), str):
            raise Fail(f"expected each worker to have a 'name', saw {short(w)}")
        if w.get("lag") is None and not w.get("error"):
            raise Fail(f"expected worker {w['name']!r} to have a 'lag' or an 'error', saw {short(w)}")
    errors = sum(1 for x in relays + workers if x.get("error"))
    return f"{len(relays)} relays, {len(workers)} workers, {errors} reporting an error"


def check_load(doc):
    report, analysis = doc.get("report"), doc.get("analysis")
    if not isinstance(report, dict) or not isinstance(analysis, dict):
        raise Fail(f"expected run_load_test to give 'report' and 'analysis' objects, saw {short(doc)}")
    count = report.get("count")
    if not is_number(count) or count <= 0:
        raise Fail(f"expected report.count > 0, saw {count!r}")
    if not is_number(report.get("rps")):
        raise Fail(f"expected a numeric report.rps, saw {report.get('rps')!r}")
    if not isinstance(report.get("latencyDistribution"), list):
        raise Fail(f"expected report.latencyDistribution to be a list, saw {short(report.get('latencyDistribution'))}")
    if not isinstance(report.get("statusCodeDistribution"), dict):
        raise Fail(f"expected report.statusCodeDistribution to be an object, saw {short(report.get('statusCodeDistribution'))}")
    for key in ("p50_ms", "p95_ms", "p99_ms", "error_rate", "throughput"):
        v = analysis.get(key)
        if not is_number(v) or (isinstance(v, float) and math.isnan(v)):
            raise Fail(f"expected a numeric analysis.{key}, saw {v!r}")
    grade = analysis.get("grade")
    if not isinstance(grade, str) or not grade.strip():
        raise Fail(f"expected analysis.grade to be a non-empty string, saw {grade!r}")
    summary = analysis.get("summary")
    if not isinstance(summary, str) or len(summary.split()) < 3 or summary.lstrip()[:1] in ("{", "["):
        raise Fail(f"expected analysis.summary to be plain words, saw {summary!r}")
    return (
        f"count={count} rps={report['rps']} p50={analysis['p50_ms']}ms p95={analysis['p95_ms']}ms "
        f"p99={analysis['p99_ms']}ms error_rate={analysis['error_rate']} grade={grade!r}; summary: {short(summary, 200)}"
    )


def mentions(text, alternatives):
    """True when `text` contains every word of at least one alternative (case-insensitive)."""
    low = text.lower()
    return any(all(w.lower() in low for w in words) for words in alternatives)


def leaf_exception(exc):
    """The first Fail inside (possibly nested) exception groups, else the first leaf."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [leaf_exception(e) for e in exc.exceptions]
        for leaf in leaves:
            if isinstance(leaf, Fail):
                return leaf
        return leaves[0] if leaves else exc
    return exc


def parse_stat(text):
    """(state, ppid) from the text of /proc/<pid>/stat."""
    rest = text[text.rfind(")") + 2 :].split()
    return rest[0], int(rest[1])


def live_children(pid):
    """Pids of the live (not zombie) children of `pid`."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = parse_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and state != "Z":
            out.add(int(entry))
    return out


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, _ = parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return False
    return state != "Z"


# ---------------------------------------------------------------- talking to the server


class Checker:
    def __init__(self, session, label, args, server_pids=None):
        self.s = session
        self.label = label
        self.args = args
        self.forced = False
        self.server_pids = server_pids or set()

    def gone(self):
        """A note for failure messages when the stdio server process is no longer running."""
        if self.server_pids and not any(pid_alive(p) for p in self.server_pids):
            return " (the server process has exited: it crashed or quit)"
        return ""

    def ok(self, msg):
        ok(f"[{self.label}] {msg}")

    async def initialize(self):
        try:
            init = await self.s.initialize()
        except Exception as e:
            raise Fail(f"[{self.label}] expected initialize() to succeed, saw {type(e).__name__}: {e}")
        name = init.serverInfo.name
        if name != SERVER_NAME:
            raise Fail(f"[{self.label}] expected serverInfo.name {SERVER_NAME!r}, saw {name!r}")
        self.ok(f"initialize: serverInfo {name} {init.serverInfo.version}, protocol {init.protocolVersion}")

    async def list_tools(self):
        from mcp import types

        tools, cursor = [], None
        for _ in range(50):
            res = await (self.s.list_tools(params=types.PaginatedRequestParams(cursor=cursor)) if cursor else self.s.list_tools())
            tools.extend(res.tools)
            cursor = res.nextCursor
            if not cursor:
                break
        by_name = {t.name: t for t in tools}
        missing = [n for n in REQUIRED_TOOLS if n not in by_name]
        if missing:
            raise Fail(f"[{self.label}] expected tools {list(REQUIRED_TOOLS)}, missing {missing}; saw {sorted(by_name)}")
        for n in REQUIRED_TOOLS:
            t = by_name[n]
            if not isinstance(t.description, str) or not t.description.strip():
                raise Fail(f"[{self.label}] expected tool {n} to have a description, saw {t.description!r}")
            if not isinstance(t.inputSchema, dict) or t.inputSchema.get("type") != "object":
                raise Fail(f"[{self.label}] expected tool {n} to have an object inputSchema, saw {short(t.inputSchema)}")
        self.ok(f"list_tools: {len(tools)} tools, each required one with a description and an inputSchema: {', '.join(sorted(by_name))}")

    async def call(self, name, arguments, timeout_s=CALL_TIMEOUT_S):
        from mcp.shared.exceptions import McpError

        try:
            return await self.s.call_tool(name, arguments, read_timeout_seconds=timedelta(seconds=timeout_s))
        except McpError as e:
            raise Fail(
                f"[{self.label}] expected {name}({json.dumps(arguments)}) to succeed, saw MCP error {e.error.code}: {e.error.message}{self.gone()}"
            )

    async def call_json(self, name, arguments, timeout_s=CALL_TIMEOUT_S):
        res = await self.call(name, arguments, timeout_s)
        text = tool_text(res)
        if res.isError:
            raise Fail(f"[{self.label}] expected {name}({json.dumps(arguments)}) to succeed, saw a tool error: {short(text)}")
        if not res.content or getattr(res.content[0], "type", None) != "text":
            raise Fail(f"[{self.label}] expected {name} to answer text content, saw {short(res.content)}")
        try:
            doc = json.loads(res.content[0].text)
        except ValueError as e:
            raise Fail(f"[{self.label}] expected {name} to answer JSON text, saw {short(res.content[0].text)} ({e})")
        if not isinstance(doc, dict):
            raise Fail(f"[{self.label}] expected {name} to answer a JSON object, saw {short(doc)}")
        return doc

    async def call_bad(self, name, arguments, alternatives, what):
        """A call that must be refused with a clear message: an isError result, or (some
        SDK versions, for invalid params) an McpError. Returns which one happened."""
        from mcp.shared.exceptions import McpError

        shown = f"{name}({json.dumps(arguments)})"
        want = " or ".join("+".join(words) for words in alternatives)
        try:
            res = await self.s.call_tool(name, arguments, read_timeout_seconds=timedelta(seconds=CALL_TIMEOUT_S))
        except McpError as e:
            msg = f"{e.error.message} {json.dumps(e.error.data) if e.error.data is not None else ''}"
            if not mentions(msg, alternatives):
                raise Fail(f"[{self.label}] expected the error of {shown} to mention {want}, saw MCP error {e.error.code}: {short(msg)}{self.gone()}")
            self.ok(f"{what}: {shown} refused with an McpError {e.error.code}: {short(msg, 200)}")
            return "McpError"
        text = tool_text(res)
        if not res.isError:
            raise Fail(f"[{self.label}] expected {shown} to be refused (isError true), saw a success: {short(text)}")
        if not mentions(text, alternatives):
            raise Fail(f"[{self.label}] expected the tool error of {shown} to mention {want}, saw {short(text)}")
        self.ok(f"{what}: {shown} refused with an isError result: {short(text, 200)}")
        return "isError"

    async def still_alive(self):
        try:
            await self.s.send_ping()
        except Exception as e:
            raise Fail(f"[{self.label}] expected the server to answer ping after the bad calls, saw {type(e).__name__}: {e}{self.gone()}")
        self.ok("server still answers ping after the bad calls")

    # -------------------------------------------------------- the checks

    async def list_clusters(self):
        doc = await self.call_json("list_clusters", {})
        self.ok(f"list_clusters: {check_clusters(doc)}")

    async def list_breakers(self, want=None):
        doc = await self.call_json("list_breakers", {})
        state = breaker_state(doc, self.args.breaker)
        if want is not None and state != want:
            raise Fail(f"[{self.label}] expected list_breakers to show {self.args.breaker!r} {want}, saw {state!r}")
        self.ok(f"list_breakers: {len(doc['edge'])} edge breakers, {len(doc['relays'])} relays; {self.args.breaker} is {state}")
        return state

    async def force(self, state, want):
        doc = await self.call_json("force_breaker", {"name": self.args.breaker, "state": state})
        self.forced = state != "normal"
        if doc.get("state") != want:
            raise Fail(f"[{self.label}] expected force_breaker {state} to answer state {want!r}, saw {short(doc)}")
        self.ok(f"force_breaker {self.args.breaker} {state}: {want}")

    async def restore(self):
        """After a failure, put the breaker back to normal (best effort)."""
        if not self.forced:
            return
        try:
            res = await self.s.call_tool(
                "force_breaker", {"name": self.args.breaker, "state": "normal"}, read_timeout_seconds=timedelta(seconds=10)
            )
            print(f"cleanup: [{self.label}] force_breaker normal -> {short(tool_text(res), 160)}", flush=True)
        except Exception as e:
            print(f"cleanup: [{self.label}] could not reset {self.args.breaker}: {e}", flush=True)

    async def read_metrics(self):
        args = {"process": self.args.process, "prefix": "paymesh_"}
        doc = await self.call_json("read_metrics", args)
        self.ok(f"read_metrics {self.args.process}: {check_metrics(doc, self.args.process, 'paymesh_')}")

    async def pipeline_status(self):
        doc = await self.call_json("pipeline_status", {})
        self.ok(f"pipeline_status: {check_pipeline(doc)}")

    async def run_load_test(self):
        args = {"method": "authorize", "rate": 20, "duration_s": 2, "concurrency": 2}
        doc = await self.call_json("run_load_test", args, timeout_s=LOAD_TEST_TIMEOUT_S)
        self.ok(f"run_load_test: {check_load(doc)}")

    async def bad_unknown_breaker(self):
        return await self.call_bad(
            "force_breaker", {"name": "no-such-breaker", "state": "open"}, [["no-such-breaker"]], "unknown breaker"
        )

    async def bad_state(self):
        return await self.call_bad(
            "force_breaker",
            {"name": self.args.breaker, "state": "sideways"},
            [["sideways"], ["open", "closed", "normal"]],
            "unknown state",
        )

    async def bad_rate(self):
        return await self.call_bad(
            "run_load_test",
            {"method": "authorize", "rate": 1000000, "duration_s": 2, "concurrency": 2},
            [["rate"]],
            "rate over the limit",
        )

    async def bad_target(self):
        target = "evil.example.com:80"
        return await self.call_bad("read_metrics", {"process": target}, [[target]], "target outside the mesh")


def tool_text(res):
    return "\n".join(c.text for c in (res.content or []) if getattr(c, "type", None) == "text")


async def full_checks(c):
    await c.initialize()
    await c.list_tools()
    try:
        await c.list_clusters()
        await c.list_breakers()
        await c.force("open", "forced_open")
        await c.list_breakers(want="forced_open")
        await c.force("normal", "closed")
        await c.list_breakers(want="closed")
        await c.read_metrics()
        await c.pipeline_status()
        await c.run_load_test()
        kinds = [await c.bad_unknown_breaker(), await c.bad_state(), await c.bad_rate(), await c.bad_target()]
        c.ok(f"the four bad calls were refused ({', '.join(kinds)})")
        await c.still_alive()
    finally:
        await c.restore()


async def http_checks(c):
    await c.initialize()
    await c.list_tools()
    await c.list_clusters()
    await c.list_breakers()
    await c.bad_unknown_breaker()
    await c.bad_target()
    await c.still_alive()


async def check_stdio(args):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    argv = shlex.split(args.stdio_command)
    if not argv:
        raise Fail("expected a command line in --stdio-command, saw an empty one")
    # The server inherits the whole environment (the SDK passes only a few variables by default).
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    before = live_children(os.getpid())
    server_pids = set()
    try:
        async with stdio_client(params) as (read, write):
            server_pids = live_children(os.getpid()) - before
            async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=CALL_TIMEOUT_S)) as session:
                await full_checks(Checker(session, "stdio", args, server_pids))
            closing = time.monotonic()
    except OSError as e:
        raise Fail(f"expected to start the stdio server {argv[0]!r}, saw {type(e).__name__}: {e}")
    took = time.monotonic() - closing
    await wait_exited(server_pids, took)


async def wait_exited(pids, took):
    if not pids:
        print("note: [stdio] could not see the server's pid; its exit was not checked", flush=True)
        return
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            raise Fail(f"expected the stdio server (pid {sorted(pids)}) to exit after the client closed, saw it still running")
        await asyncio.sleep(POLL_S)
    how = (
        "on its stdin closing"
        if took < SDK_STDIO_GRACE_S
        else f"only after {took:.1f} s (it did not exit on its stdin closing: the SDK had to terminate it)"
    )
    ok(f"[stdio] the server process (pid {', '.join(map(str, sorted(pids)))}) exited after the client closed, {how}")


async def check_http(args):
    from mcp import ClientSession

    try:
        from mcp.client.streamable_http import streamable_http_client as transport
    except ImportError:  # SDKs before streamable_http_client
        from mcp.client.streamable_http import streamablehttp_client as transport

    async with transport(args.http_url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=CALL_TIMEOUT_S)) as session:
            await http_checks(Checker(session, "http", args))


async def run_transport(label, target, coro):
    try:
        await asyncio.wait_for(coro, TRANSPORT_DEADLINE_S)
    except asyncio.TimeoutError:
        raise Fail(f"expected the {label} checks ({target}) to finish within {TRANSPORT_DEADLINE_S:g} s, saw them still running")
    except BaseException as e:
        leaf = leaf_exception(e)
        if isinstance(leaf, Fail):
            msg = str(leaf)
            raise Fail(msg if msg.startswith("[") else f"[{label}] {msg}") from None
        if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
            raise
        traceback.print_exception(e)
        raise Fail(f"expected the {label} session to connect and run, saw {type(leaf).__name__}: {leaf} ({target})") from None
    ok(f"[{label}] all checks passed")


async def main(args):
    await run_transport("stdio", args.stdio_command, check_stdio(args))
    await run_transport("http", args.http_url, check_http(args))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stdio-command", required=True, help='"<path to paymesh-mcp> --config <file> ..." (split like a shell)')
    p.add_argument("--http-url", required=True, help="the same server's streamable HTTP endpoint, http://127.0.0.1:P/mcp")
    p.add_argument("--breaker", required=True, help="an edge breaker name")
    p.add_argument("--process", required=True, help="a process whose metrics can be read, e.g. edge")
    return p.parse_args(argv)


def entry(argv=None):
    args = parse_args(argv)
    try:
        import mcp  # noqa: F401
    except ImportError as e:
        print(f"FAIL: expected the mcp package (pip install -r requirements.txt), saw {e}", flush=True)
        return 1
    try:
        asyncio.run(main(args))
    except Fail as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    ok("mcp check passed")
    return 0


if __name__ == "__main__":
    sys.exit(entry())

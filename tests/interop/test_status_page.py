"""The status page in a real browser: headless Chromium (Debian package `chromium`, driven over the DevTools
protocol with the `websockets` client) loads `/` from a running crossl-serve while this test streams a
device over the WebSocket ingest route; the page must show the device with the server's activity, then
follow the live feed to the next activity. A screenshot is left at target/status-page.png."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import launch_server
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000
DEVICE = "status-page-1"
SCREENSHOT = REPO / "target" / "status-page.png"


def chromium_binary() -> str:
    for candidate in (os.environ.get("CROSSL_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("chromium not found: `scripts/setup.sh dev` installs Debian's package (root), or set CROSSL_CHROMIUM")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def golden_cases() -> list[dict]:
    return json.loads((REPO / "models" / "crossl-dsads" / "golden.json").read_text())["cases"]


def stream_case(http: str, manifest: dict, case: dict, t0: int, seconds: int, key: str | None = None, device: str = DEVICE) -> None:
    """`seconds` of one golden window (repeated) as JSON chunks, one per modality and second."""
    query = f"?access_token={key}" if key else ""
    with connect(f"ws://{http}/v1/ws/devices/{device}{query}", max_size=None) as ws:
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["type"] == "welcome", welcome
        for k in range(seconds):
            for spec in manifest["modalities"]:
                rows = case["modalities"].get(spec["name"])
                if rows is None:
                    continue
                n = round(spec["sample_rate_hz"])
                samples = [rows[(k * n + i) % len(rows)] for i in range(n)]
                ws.send(json.dumps({"modality": spec["name"], "start_unix_nanos": t0 + k * SECOND, "samples": samples}))
        # Refusals come back as error frames; a clean stream has none by the time we close.
        try:
            while True:
                frame = json.loads(ws.recv(timeout=0.5))
                assert frame.get("type") != "error", frame
        except TimeoutError:
            pass


def wait_until(what: str, probe, timeout: float = 60.0, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigates and waits until the page and its deferred script have run."""
        self.call("Emulation.setDeviceMetricsOverride", width=1500, height=950, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        wait_until(
            f"{url} to load",
            lambda: self.eval("location.href") == url and self.eval("document.readyState") == "complete",
        )


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="crossl-chromium-")
    process = subprocess.Popen(
        [
            chromium_binary(),
            "--headless=new",
            "--no-sandbox",  # root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        wait_until("Chromium's DevTools port", lambda: port_file.is_file() and port_file.read_text().strip(), 60)
        port = int(port_file.read_text().split()[0])
        targets = wait_until(
            "a page target",
            lambda: [t for t in get_json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"],
            30,
        )
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Page(ws)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def row_of(device: str) -> str:
    return f'document.querySelector(\'#fleet .row[data-device-id="{device}"]\')'


ROW = row_of(DEVICE)


def row_state(page: Page, device: str = DEVICE):
    return page.eval(
        f"(() => {{ const r = {row_of(device)}; if (!r) return null;"
        " return {label: r.querySelector('.label').textContent, updates: Number(r.dataset.updates),"
        " windowEnd: r.dataset.windowEnd || null,"
        " cells: Array.from(r.querySelectorAll('.cell')).map(c => c.dataset.state)}; })()"
    )


def latest(http: str):
    try:
        return get_json(f"http://{http}/v1/devices/{DEVICE}/prediction")
    except OSError:
        return None


def settled_latest(http: str, not_label: str | None = None) -> dict:
    """The device's latest prediction once no newer one came for 3 s (the stall timeout, 2 s, closes the
    windows a stream left open), and, with `not_label`, once its label differs from that one."""
    previous = None

    def probe():
        nonlocal previous
        now = latest(http)
        settled = now is not None and previous is not None and now["window_end_unix_nanos"] == previous["window_end_unix_nanos"]
        previous = now
        return settled and (not_label is None or now["label"] != not_label) and now

    return wait_until("the device's predictions to settle", probe, timeout=90, interval=3.0)


def test_status_page_shows_a_streaming_device_and_follows_its_activity(server, browser):
    manifest = get_json(f"http://{server.http}/v1/model")["manifest"]
    cases = golden_cases()
    # Static postures: a repeated window of them stays the same activity.
    first = next(c for c in cases if c["label"] == "sitting")
    second = next(c for c in cases if c["label"] == "lying_on_back")
    t0 = (time.time_ns() // SECOND - 60) * SECOND

    stream_case(server.http, manifest, first, t0, 15)
    latest_a = settled_latest(server.http)
    label_a = latest_a["label"]

    page = browser
    page.open(f"http://{server.http}/")
    # The device list (REST) shows the device with the server's activity, and the feed connects.
    state = wait_until("the device row", lambda: (s := row_state(page)) and s["label"] == label_a and s)
    assert len(state["cells"]) == len(manifest["modalities"])
    assert state["cells"].count("present") == len(latest_a["present_modalities"]), (state, latest_a)
    wait_until("the live feed", lambda: page.eval("document.getElementById('feed-state').textContent") == "feed: live")
    health = wait_until(
        "service health",
        lambda: page.eval(
            "Object.fromEntries(Array.from(document.querySelectorAll('#health-list dd'))"
            ".map(d => [d.dataset.key, d.textContent]))"
        ).get("execution provider"),
    )
    assert health.startswith("cpu"), health

    # Open the device: its timeline and probabilities come from the history endpoint.
    page.eval(f"{ROW}.click()")
    wait_until("the probabilities", lambda: page.eval("document.querySelectorAll('#probabilities li').length") == len(manifest["classes"]))
    assert page.eval("document.querySelector('#probabilities li.top span').textContent") == label_a
    assert label_a in page.eval("document.getElementById('timeline-legend').textContent")

    # The next activity arrives over the WebSocket feed (the REST list only refreshes every 10 s).
    before = row_state(page)
    stream_case(server.http, manifest, second, t0 + 15 * SECOND, 20)
    latest_b = settled_latest(server.http, not_label=label_a)
    label_b = latest_b["label"]
    state = wait_until(
        "the row to follow the feed",
        lambda: (s := row_state(page))
        and s["label"] == label_b
        and s["windowEnd"] == str(latest_b["window_end_unix_nanos"])
        and s["updates"] > before["updates"]
        and s,
    )
    # The second case lacks the right leg: heard from before, so stale now, not present.
    present_b = latest_b["present_modalities"]
    assert state["cells"].count("present") == len(present_b), (state, latest_b)
    assert state["cells"].count("stale") == len(manifest["modalities"]) - len(present_b), state
    assert not any(m.startswith("right_leg") for m in present_b), present_b
    assert page.eval("document.querySelector('#detail-summary .detail-label').textContent") == label_b
    wait_until("the timeline legend", lambda: label_b in page.eval("document.getElementById('timeline-legend').textContent"))

    shot = page.call("Page.captureScreenshot", format="png")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert SCREENSHOT.stat().st_size > 10_000

    # Personalised predictions (a prediction with `personalized` and `general`, not produced by this
    # server's model): the feed handler shows a badge and the general label. Fed to the page's own handler.
    personal = dict(latest_b, window_end_unix_nanos=latest_b["window_end_unix_nanos"] + SECOND, personalized=True, general={"label": label_a})
    page.eval(f"onPrediction({json.dumps(personal)})")
    wait_until("the personal badge", lambda: page.eval(f"{ROW}.querySelector('.badge') !== null"))
    assert page.eval(f"{ROW}.querySelector('.badge').textContent") == "personal"
    assert page.eval(f"{ROW}.querySelector('.general').textContent") == f"general: {label_a}"
    plain = dict(latest_b, window_end_unix_nanos=latest_b["window_end_unix_nanos"] + 2 * SECOND)
    page.eval(f"onPrediction({json.dumps(plain)})")
    wait_until("the badge to go", lambda: page.eval(f"{ROW}.querySelector('.badge') === null"))


FLEET = 2400
FLEET_PREFIX = "zz-fleet-"  # sorts after the other tests' devices


def test_status_page_lists_thousands_of_devices_virtualised_and_filters_on_the_server(server, stubs, browser):
    """2,400 devices (three gRPC streams, one chunk each, under the per-stream cap of 1,000): the page
    pages through GET /v1/devices, keeps only the rows in view in the DOM, and filters by prefix on the
    server."""
    import grpc

    pb, pb_grpc = stubs
    manifest = get_json(f"http://{server.http}/v1/model")["manifest"]
    spec = manifest["modalities"][0]
    n = round(spec["sample_rate_hz"])
    ids = [f"{FLEET_PREFIX}{i:04d}" for i in range(FLEET)]
    ingest = pb_grpc.IngestStub(grpc.insecure_channel(server.grpc))
    t0 = time.time_ns()
    for part in range(3):
        chunk_ids = ids[part * 800 : (part + 1) * 800]
        requests = (
            pb.StreamRequest(
                sequence=i,
                chunk=pb.SensorChunk(device_id=d, modality=spec["name"], start_unix_nanos=t0, samples=[0.5] * (n * spec["channels"])),
            )
            for i, d in enumerate(chunk_ids)
        )
        errors = [r.chunk_error for r in ingest.Stream(requests, timeout=120) if r.WhichOneof("kind") == "chunk_error"]
        assert errors == [], errors[:3]
    total = get_json(f"http://{server.http}/v1/devices?prefix={FLEET_PREFIX}&limit=1")["total"]
    assert total == FLEET
    everything = get_json(f"http://{server.http}/v1/devices?limit=1")["total"]

    page = browser
    page.open(f"http://{server.http}/")
    wait_until("the whole fleet listed", lambda: page.eval("document.getElementById('fleet-count').textContent") == f"({everything})")
    rows = page.eval("document.querySelectorAll('#fleet .row').length")
    assert 0 < rows < 60, f"{rows} rows in the DOM for {everything} devices: the list is not virtualised"
    assert page.eval("document.getElementById('fleet-spacer').offsetHeight") == 40 * everything

    # Scrolled to the end, the last device is rendered (and still only a screenful of rows).
    page.eval("(() => { const f = document.getElementById('fleet'); f.scrollTop = f.scrollHeight; })()")
    last = f'document.querySelector(\'#fleet .row[data-device-id="{ids[-1]}"]\') !== null'
    wait_until("the last device after scrolling", lambda: page.eval(last))
    assert page.eval("document.querySelectorAll('#fleet .row').length") < 60

    # A prefix goes to the server (?prefix=) and the list shrinks to its matches.
    page.eval(
        "(() => { const f = document.getElementById('filter'); f.value = 'zz-fleet-01';"
        " f.dispatchEvent(new Event('input')); })()"
    )
    wait_until("the filtered count", lambda: page.eval("document.getElementById('fleet-count').textContent") == "(100)")
    shown = page.eval("Array.from(document.querySelectorAll('#fleet .row')).map(r => r.dataset.deviceId)")
    assert shown and all(d.startswith("zz-fleet-01") for d in shown), shown
    assert page.eval(
        "performance.getEntriesByType('resource').some(e => e.name.includes('prefix=zz-fleet-01'))"
    ), "the filter was not sent to the server"


def test_status_page_with_api_keys_reads_with_the_key_typed_in(browser):
    """Auth on: the page loads without a key but its data needs one; the key typed in is kept in
    localStorage and used for the REST calls (Bearer) and the live feed (`?access_token=`)."""
    with launch_server("--api-key", "reader:read", "--api-key", "feeder:ingest") as srv:
        page = browser
        page.open(f"http://{srv.http}/")
        banner = wait_until("the auth banner", lambda: page.eval("document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent"))
        assert "401" in banner, banner
        assert page.eval("document.querySelectorAll('#fleet .row').length") == 0

        page.eval("document.getElementById('api-key').value = 'reader'; document.getElementById('key-form').requestSubmit()")
        wait_until("the live feed with the key", lambda: page.eval("document.getElementById('feed-state').textContent") == "feed: live")
        wait_until("the banner to clear", lambda: page.eval("document.getElementById('banner').hidden"))
        assert page.eval("localStorage.getItem('crossl.apiKey')") == "reader"

        # Data streamed now reaches the page over the authenticated feed.
        request = urllib.request.Request(f"http://{srv.http}/v1/model", headers={"authorization": "Bearer reader"})
        with urllib.request.urlopen(request, timeout=10) as r:
            manifest = json.load(r)["manifest"]
        case = next(c for c in golden_cases() if c["label"] == "sitting")
        t0 = (time.time_ns() // SECOND - 30) * SECOND
        stream_case(srv.http, manifest, case, t0, 12, key="feeder", device="keyed-1")
        state = wait_until("the keyed device from the feed", lambda: (s := row_state(page, "keyed-1")) and s["updates"] > 0 and s)
        assert state["label"] in manifest["classes"]
        # A reload keeps the key.
        page.open(f"http://{srv.http}/")
        wait_until("the device after a reload", lambda: row_state(page, "keyed-1"))
        assert page.eval("document.getElementById('api-key').value") == "reader"


def test_swagger_ui_renders_the_openapi_document(server, browser):
    """/docs in a browser: the embedded Swagger UI loads /openapi.json and lists every operation."""
    spec = get_json(f"http://{server.http}/openapi.json")
    operations = sum(len(methods) for methods in spec["paths"].values())
    page = browser
    page.open(f"http://{server.http}/docs/")
    wait_until("every operation", lambda: page.eval("document.querySelectorAll('.opblock').length") == operations)
    paths = page.eval("Array.from(document.querySelectorAll('.opblock-summary-path')).map(e => e.textContent.replace(/\\u200b/g, ''))")
    assert "/v1/status" in paths and "/v1/devices" in paths, paths
    assert page.eval("document.querySelector('.btn.authorize') !== null"), "no Authorize button for API keys"

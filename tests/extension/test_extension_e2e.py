"""The browser extension end to end: headless Chromium with extension/ loaded, a real `covertune serve`.

A job page is served on 127.0.0.1; the extension's own options page and popup (opened as pages) are
driven through Playwright. The server runs a tiny random model saved to a temporary folder (or the
model named by COVERTUNE_E2E_MODEL, e.g. ``embedded`` for the default model); the letter and grounding
the popup shows are checked against the server's own answer, read from the network. Set COVERTUNE_E2E_SCREENSHOTS to a folder to keep the
screenshots there (docs/images/ holds the README's).

Chromium grants an extension access to the page under its toolbar button only when a person clicks
it (activeTab), which a test cannot do; the copy of the extension loaded here is the real one with the
test page's origin added to its host permissions, which is what that click grants.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "extension"
PAGES = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("COVERTUNE_CHROMIUM", "/usr/bin/chromium"))
API_KEY = "e2e-secret-key"
MAX_NEW_TOKENS = int(os.environ.get("COVERTUNE_E2E_MAX_TOKENS", "40"))
# a random model's most likely letter is one token repeated (often one that decodes to nothing): sample
TEMPERATURE = os.environ.get("COVERTUNE_E2E_TEMPERATURE", "1")

PROFILE = {
    "applicant_name": "John Smith",
    "current_experience": "Senior Data Scientist at DEF Corporation",
    "past_experience": "Data Analyst at ABC Company",
    "skillsets": "Python, SQL, machine learning, data analysis, communication",
    "qualifications": "Bachelor's degree in Computer Science, Master's degree in Data Science",
}
JOB = {  # what the extension must read from job_page.html's JSON-LD
    "job_title": "Senior Data Scientist",
    "hiring_company": "XYZ Tech Solutions",
    "preferred_qualifications": "- Minimum of 3 years validated experience\n- Outstanding communication skills",
}


def _missing(what: str) -> None:
    """Fail in CI (the tests must run there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI installs it with `make install` (scripts/install.sh)")
    pytest.skip(what)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_written(popup, timeout_s: float = 300) -> None:
    """Wait until the popup has finished writing; fail with its message if writing failed."""
    popup.wait_for_selector("body[data-state=done], body[data-state=failed]", state="attached", timeout=timeout_s * 1000)
    if popup.get_attribute("body", "data-state") == "failed":
        pytest.fail(f"writing failed: {popup.text_content('#error')}")


def _events(stream: bytes) -> list:
    """The data of each event in a text/event-stream body."""
    return [block[len("data: "):] for block in stream.decode().replace("\r\n", "\n").split("\n\n")
            if block.startswith("data: ")]


# ------------------------------------------------------------------ the real server, the test pages


SERVER_LOG: dict[str, Path] = {}  # the server fixture's log file


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """`covertune serve` on a free 127.0.0.1 port with an API key, in its own process."""
    model = os.environ.get("COVERTUNE_E2E_MODEL") or str(request.getfixturevalue("tiny_model_dir"))
    port = _free_port()
    import covertune

    env = dict(os.environ, COVERTUNE_API_KEY=API_KEY, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(covertune.__file__).parents[1]), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "covertune", "serve", "--port", str(port), "--max-new-tokens", str(MAX_NEW_TOKENS)]
    if model != "embedded":
        command += ["--model", model]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"covertune serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"covertune serve did not answer /health within 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        SERVER_LOG["path"] = log
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def site():
    """The test job pages, served from 127.0.0.1."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(PAGES))
    handler.log_message = lambda *args: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# ------------------------------------------------------------------ Chromium with the extension


class Browser:
    def __init__(self, context, extension_id: str, site: str, shots: Path):
        self.context = context
        self.id = extension_id
        self.site = site
        self.shots = shots
        self.errors: list[str] = []
        self.helper = None

    def url(self, page: str) -> str:
        return f"chrome-extension://{self.id}/{page}"

    def open(self, path: str):
        page = self.context.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{path}: {e}"))
        page.on("console", lambda m: self.errors.append(f"{path}: {m.text}")
                if "Content Security Policy" in m.text else None)
        page.goto(self.url(path))
        page.wait_for_selector("body[data-ready=true]")
        return page

    def run(self, script: str, arg=None):
        """Runs a script with the extension's APIs (in one of its pages: the service worker may be asleep)."""
        if self.helper is None or self.helper.is_closed():
            self.helper = self.open("options.html")
        return self.helper.evaluate(script, arg)

    def tab_id(self, url: str) -> int:
        ids = self.run("async (url) => (await chrome.tabs.query({url})).map((t) => t.id)", url)
        assert len(ids) == 1, ids
        return ids[0]

    def save_options(self, server: str, key: str = API_KEY, profile: dict = PROFILE, screenshot: str = "",
                     temperature: str = TEMPERATURE):
        page = self.open("options.html")
        for field, value in profile.items():
            page.fill(f"#{field}", value)
        page.fill("#serverUrl", server)
        page.fill("#apiKey", key)
        page.click("summary")  # the writing settings
        page.fill("#maxNewTokens", str(MAX_NEW_TOKENS))
        page.fill("#temperature", temperature)
        page.click("#save")
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Saved')")
        if screenshot:
            page.screenshot(path=str(self.shots / screenshot), full_page=True)
        return page

    def popup_for(self, page_url: str, keep_draft: bool = False):
        """The job page in a tab, and the popup for that tab (without the last letter kept for it, unless asked)."""
        if not keep_draft:
            self.run("() => chrome.storage.session.clear()")
        job = self.context.new_page()
        job.goto(page_url)
        return job, self.open(f"popup.html?tab={self.tab_id(page_url)}")


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    if not CHROMIUM.exists():
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("chromium")
    extension = root / "extension"
    shutil.copytree(EXTENSION, extension, ignore=shutil.ignore_patterns("tests"))
    manifest = json.loads((extension / "manifest.json").read_text())
    manifest["host_permissions"].append(f"{site}/*")  # what clicking the toolbar button grants (activeTab)
    (extension / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shots = Path(os.environ.get("COVERTUNE_E2E_SCREENSHOTS") or root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(root / "profile"), executable_path=str(CHROMIUM), headless=True,
            viewport={"width": 900, "height": 900}, device_scale_factor=1,
            args=["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--disable-extensions-except={extension}",
                  f"--load-extension={extension}"])
        try:
            worker = context.service_workers[0] if context.service_workers else context.wait_for_event("serviceworker")
            extension_id = worker.url.split("/")[2]
            # on install (no profile yet) the extension opens its options page itself; a test opening that page
            # at the same moment had its navigation interrupted by it: let it open, then close it
            options = f"chrome-extension://{extension_id}/options.html"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(pg.url == options for pg in context.pages):
                time.sleep(0.1)
            for pg in [pg for pg in context.pages if pg.url == options]:
                pg.wait_for_load_state()
                pg.close()
            yield Browser(context, extension_id, site, shots)
        finally:
            context.close()


# ------------------------------------------------------------------ the tests


def test_the_server_writes_with_the_fast_cpu_engine(server):
    """With llama-cpp-python installed and no GPU, `covertune serve` (engine auto) writes with llama.cpp."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'covertune[llamacpp]')")
    from covertune.models.load import has_cuda

    if has_cuda():
        pytest.skip("a CUDA GPU: engine auto writes with torch")
    assert "(llama.cpp, q8_0)" in SERVER_LOG["path"].read_text()


def test_options_page_saves_the_profile_and_reaches_the_server(browser, server):
    page = browser.save_options(server, screenshot="extension-options.png")
    stored = page.evaluate("chrome.storage.local.get(['profile', 'settings'])")
    assert stored["profile"] == PROFILE
    assert stored["settings"]["serverUrl"] == server
    assert stored["settings"]["apiKey"] == API_KEY
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#applicant_name") == PROFILE["applicant_name"]
    page.click("#test")
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Connected')")
    health = json.loads(urllib.request.urlopen(server + "/health", timeout=10).read())
    assert page.text_content("#status") == f"Connected: {server} serves {health['model']}."
    assert browser.errors == []


def test_options_page_shows_the_extension_id_to_pin(browser):
    page = browser.open("options.html")
    assert page.text_content("#extensionId") == browser.id
    assert page.text_content("#pinCommand") == f"covertune serve --cors-origins chrome-extension://{browser.id}"


def test_popup_reads_the_job_page_writes_the_letter_and_checks_it(browser, server):
    browser.save_options(server)
    job_page, popup = browser.popup_for(browser.site + "/job_page.html")
    for field, value in JOB.items():
        assert popup.input_value(f"#{field}") == value
    assert "job posting data" in popup.text_content("#source")
    assert "John Smith" in popup.text_content("#profile-line")

    with popup.expect_response(lambda r: r.url == server + "/v1/cover-letter") as answer:
        popup.click("#write")
    assert answer.value.status == 200
    assert answer.value.headers["content-type"].startswith("text/event-stream")
    _wait_written(popup)
    sent = answer.value.request.post_data_json
    settings = {"max_new_tokens": MAX_NEW_TOKENS} | ({"temperature": float(TEMPERATURE)} if float(TEMPERATURE) > 0 else {})
    assert sent == {**JOB, **PROFILE, "stream": True, "form": "full", **settings}  # a full letter by default

    # the letter shown is the one the server streamed: its deltas, then its "done" event
    events = _events(answer.value.body())
    assert events[-1] == "[DONE]"
    received = [json.loads(e) for e in events[:-1]]
    progress = [e for e in received if e["type"] == "progress"]  # a recipe with candidates: while they are written
    assert received[:len(progress)] == progress
    *deltas, done = received[len(progress):]
    assert [d["type"] for d in deltas] == ["delta"] * len(deltas) and done["type"] == "done"
    shown = popup.text_content("#letter")
    assert shown == done["letter"] == "".join(d["text"] for d in deltas)
    assert shown.strip()
    grounding = done["grounding"]
    marked = popup.eval_on_selector_all("#letter mark", "ms => ms.map(m => [m.textContent, m.className])")
    claims = {c.lower() for c in grounding["unsupported_numbers"] + grounding["unsupported_orgs"]}
    assert all(text.lower() in claims for text, _ in marked), (marked, claims)
    for claim in grounding["unsupported_numbers"]:
        assert any(text == claim and "number" in cls for text, cls in marked), (claim, marked)

    # the grounding checklist says what the server's check says
    status = dict(popup.eval_on_selector_all(
        "#checks > li", "ls => ls.map(l => [l.dataset.check, l.className.replace('check ', '')])"))
    mention = {True: "ok", False: "bad", None: "na"}
    assert grounding["name_mentioned"] is True and done["letter"].rstrip().endswith("John Smith")  # its sign-off
    assert status["Your name"] == mention[grounding["name_mentioned"]]
    assert status["Company"] == mention[grounding["company_mentioned"]]
    assert status["Job title"] == mention[grounding["job_title_mentioned"]]
    assert status["Numbers"] == ("bad" if grounding["unsupported_numbers"] else "ok")
    assert status["Organisations"] == ("bad" if grounding["unsupported_orgs"] else "ok")
    skills = popup.text_content("#checks > li[data-check=Skills]")
    assert f"{grounding['skills_mentioned']} of {grounding['skills_total']}" in skills
    for skill in grounding["skills_missing"]:
        assert skill in skills
    assert done["model"] in popup.text_content("#model")
    popup.locator("body").screenshot(path=str(browser.shots / "extension-popup.png"))

    # Copy puts the letter on the clipboard; Regenerate writes a sampled letter
    popup.bring_to_front()
    popup.click("#copy")
    popup.wait_for_function("() => document.querySelector('#copied').textContent === 'Copied.'")
    job_page.bring_to_front()  # paste it into a text box on the job page
    job_page.evaluate("() => { const t = document.createElement('textarea'); t.id = 'paste'; document.body.append(t); }")
    job_page.focus("#paste")
    job_page.keyboard.press("Control+V")
    # (a text box keeps line breaks as "\n" only; a random model's letter may hold a "\r")
    assert job_page.input_value("#paste") == done["letter"].replace("\r\n", "\n").replace("\r", "\n")
    popup.bring_to_front()
    with popup.expect_request(lambda r: r.url == server + "/v1/cover-letter") as again:
        popup.click("#regenerate")
    body = again.value.post_data_json
    assert body["temperature"] > 0 and isinstance(body["seed"], int) and "seed" not in sent
    _wait_written(popup)
    popup.wait_for_function("() => !document.querySelector('#write').disabled")
    letter = popup.text_content("#letter")
    assert letter.strip()
    assert popup.is_hidden("#error")

    # a popup closes when it loses focus: opened again on the same page, it shows the last letter
    popup.close()
    popup = browser.open(f"popup.html?tab={browser.tab_id(browser.site + '/job_page.html')}")
    assert popup.text_content("#letter") == letter
    assert "last letter for this page" in popup.text_content("#source")
    assert popup.is_visible("#checks > li[data-check=Skills]")
    assert browser.errors == []
    job_page.close()


def test_popup_uses_the_selected_text_on_a_page_without_job_data(browser, server):
    browser.save_options(server)
    job = browser.context.new_page()
    job.goto(browser.site + "/plain_page.html")
    job.evaluate("""() => { const r = document.createRange();
        r.selectNodeContents(document.getElementById('requirements'));
        getSelection().removeAllRanges(); getSelection().addRange(r); }""")
    popup = browser.open(f"popup.html?tab={browser.tab_id(browser.site + '/plain_page.html')}")
    assert popup.input_value("#preferred_qualifications") == "Two years of kitchen experience and a food safety certificate."
    assert popup.input_value("#job_title") == "" and popup.input_value("#hiring_company") == ""
    assert "selected text" in popup.text_content("#source")
    # every field stays editable
    popup.fill("#job_title", "Line Cook")
    assert popup.input_value("#job_title") == "Line Cook"
    assert browser.errors == []


def test_page_and_letter_text_is_shown_as_text_never_as_html(browser, server):
    markup = '<img src="x" id="injected" onerror="document.title=\'pwned\'">'
    browser.save_options(server, profile={**PROFILE, "skillsets": f"Python, {markup}"})
    job_page, popup = browser.popup_for(browser.site + "/job_page.html")
    popup.fill("#hiring_company", "Acme <b id='bold'>Labs</b>")
    popup.click("#write")
    _wait_written(popup)
    assert popup.query_selector("#injected") is None and popup.query_selector("#bold") is None
    assert popup.title() == "covertune"
    # the markup is a skill the tiny model's letter does not use: it is listed, as text
    skills = popup.text_content("#checks > li[data-check=Skills]")
    assert markup in skills
    assert browser.errors == []
    job_page.close()


def test_popup_says_what_to_do_on_a_wrong_key_and_when_the_server_is_down(browser, server):
    browser.save_options(server, key="wrong-key")
    job_page, popup = browser.popup_for(browser.site + "/job_page.html")
    popup.click("#write")
    popup.wait_for_selector("#error:not([hidden])")
    assert "refused the API key" in popup.text_content("#error")
    assert "Options" in popup.text_content("#error")
    assert popup.is_hidden("#result")

    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    browser.save_options(down)
    popup.reload()
    popup.wait_for_selector("body[data-ready=true]")
    popup.click("#write")
    popup.wait_for_selector("#error:not([hidden])")
    message = popup.text_content("#error")
    assert message == (f"Cannot reach the covertune server at {down}. "
                       "Start it with `covertune serve` (or check the server URL under Options).")
    assert not popup.is_disabled("#write")
    popup.locator("body").screenshot(path=str(browser.shots / "extension-popup-server-down.png"))
    assert browser.errors == []
    job_page.close()

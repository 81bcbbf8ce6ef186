"""The review page: Streamlit's AppTest for its behaviour, headless Chromium for how it looks.

Results are produced by the real ingest and worker (wheel and Lanczos backends) into a real
inbox; the page's buttons must move files exactly like a reviewer, and the daemon's own
reviewer must then act on those moves.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from extras import require
from feedback_env import Env, _ingest_and_run
from harness import corrected_theme_bytes, make_image, theme_bytes

from astrowatch.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((Path(found) for name in BROWSERS if (found := shutil.which(name))), None)
APP = Path(__file__).resolve().parents[2] / "astrowatch" / "ui" / "page.py"


@pytest.fixture
def inbox(tmp_path: Path) -> dict[str, Any]:
    """Two results waiting: lou's photo (enhance), then gaby's theme (astro)."""
    env = Env(tmp_path, learn=False)
    users = env.layout.root / "Utilisateurs"
    photo = users / "lou" / "beach.png"
    make_image(photo, (160, 120))
    theme = users / "gaby" / "theme_gaby.json"
    theme.parent.mkdir(parents=True)
    theme.write_bytes(theme_bytes())
    out = {"env": env, "photo": _ingest_and_run(env, photo), "theme": _ingest_and_run(env, theme)}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(env.mapping), encoding="utf-8")
    out["config"] = config
    return out


def _image(inbox: dict[str, Any], which: str) -> Path:
    job = inbox[which]["job"]
    return inbox["env"].layout.inbox_dir(job.user) / job.result["image"]


def _app(inbox: dict[str, Any], monkeypatch) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ASTROWATCH_CONFIG", str(inbox["config"]))
    return AppTest.from_file(str(APP), default_timeout=30).run()


@pytest.fixture(autouse=True)
def _needs_streamlit() -> None:
    require("streamlit", "ui")


def test_lists_the_inbox_with_originals_and_fields(inbox, monkeypatch) -> None:
    at = _app(inbox, monkeypatch)
    assert not at.exception
    assert [s.value for s in at.subheader] == ["beach.png · enhance", "theme_gaby.json · astro"]
    photo, theme = inbox["photo"]["job"], inbox["theme"]["job"]
    assert at.text_area(key=f"caption-{photo.id}").value == _image(inbox, "photo").with_suffix(".txt").read_text()
    assert json.loads(at.text_area(key=f"params-{theme.id}").value)["style"] == "figuratif"
    assert len(at.image) == 4  # original + result for each (the astro original is the chart wheel)
    assert at.sidebar.radio[0].options == ["everyone (2)", "gaby (1)", "lou (1)"]
    at.sidebar.radio[0].set_value("lou").run()
    assert [s.value for s in at.subheader] == ["beach.png · enhance"]


def test_an_older_theme_result_is_marked_stale_when_a_newer_one_arrives(inbox, monkeypatch) -> None:
    env, old = inbox["env"], inbox["theme"]["job"]
    theme = env.layout.root / "Utilisateurs" / "gaby" / "theme_gaby.json"
    theme.write_bytes(corrected_theme_bytes())  # the upstream app rewrote the chart
    newer = _ingest_and_run(env, theme)["job"]
    assert json.loads(_image(inbox, "theme").with_suffix(".json").read_text())["stale"]["newer_job"] == newer.id
    at = _app(inbox, monkeypatch)
    stale = [w.value for w in at.warning if w.value.startswith("stale result")]
    assert len(stale) == 1 and f"job {newer.id}" in stale[0] and f"review approve {old.id} --force" in stale[0]


def test_the_sidebar_shows_the_running_job_progress(inbox, monkeypatch) -> None:
    layout = inbox["env"].layout
    state = {"pid": os.getpid(), "stopped": False, "workers": [
        {"name": "worker-0", "current_job": "abc123", "stats": {},
         "progress": {"job_id": "abc123", "step": 12, "total": 30, "elapsed_s": 4.0, "eta_s": 6.0}}]}
    layout.daemon_state_path.parent.mkdir(parents=True, exist_ok=True)
    layout.daemon_state_path.write_text(json.dumps(state))
    at = _app(inbox, monkeypatch)
    assert not at.exception
    bars = [e for e in at.sidebar.get("progress")]
    assert len(bars) == 1 and bars[0].value == 40
    assert "running abc123: step 12/30, 4 s elapsed, ETA 6 s" in bars[0].proto.text


def test_editing_the_caption_writes_the_txt(inbox, monkeypatch) -> None:
    at = _app(inbox, monkeypatch)
    job = inbox["photo"]["job"]
    at.text_area(key=f"caption-{job.id}").set_value("a sunny beach, blue sky\nsecond line")
    at.button(key=f"save-{job.id}").click().run()
    assert _image(inbox, "photo").with_suffix(".txt").read_text() == "a sunny beach, blue sky\nsecond line\n"
    assert "saved" in at.success[0].value


def test_approve_moves_the_image_and_the_daemon_delivers_it(inbox, monkeypatch) -> None:
    at = _app(inbox, monkeypatch)
    env, job = inbox["env"], inbox["theme"]["job"]
    image = _image(inbox, "theme")
    at.button(key=f"approve-{job.id}").click().run()
    moved = env.layout.root / "approved" / image.name
    assert moved.is_file() and moved.with_suffix(".json").is_file() and not image.exists()
    assert [s.value for s in at.subheader] == ["beach.png · enhance"]
    assert "approved: moved to approved/" in at.success[0].value
    from astrowatch.intake.ingest import Ingest

    assert Ingest(env.config, env.layout, env.ledger, env.reviewer).handle(str(moved)) == "decided"
    assert env.ledger.get(job.id).state == "delivered"
    assert (env.layout.root / "Utilisateurs" / "gaby" / "theme_gaby.png").is_file()


def test_redo_writes_the_params_then_moves_into_redo(inbox, monkeypatch) -> None:
    at = _app(inbox, monkeypatch)
    env, job = inbox["env"], inbox["theme"]["job"]
    image = _image(inbox, "theme")
    box = at.text_area(key=f"params-{job.id}")
    box.set_value(json.dumps({**json.loads(box.value), "style": "cosmique"}))
    at.text_area(key=f"caption-{job.id}").set_value("edited before the redo")
    at.button(key=f"redo-{job.id}").click().run()
    moved = env.layout.root / "redo" / image.name
    assert moved.is_file() and not image.exists()
    assert json.loads(moved.with_suffix(".json").read_text())["params"]["style"] == "cosmique"
    assert moved.with_suffix(".txt").read_text() == "edited before the redo\n"
    from astrowatch.intake.ingest import Ingest

    assert Ingest(env.config, env.layout, env.ledger, env.reviewer).handle(str(moved)) == "decided"
    child = next(j for j in env.ledger.by_state("queued") if j.parent_id == job.id)
    assert child.params == {"style": "cosmique"}


def test_bad_params_json_moves_nothing(inbox, monkeypatch) -> None:
    at = _app(inbox, monkeypatch)
    job = inbox["photo"]["job"]
    at.text_area(key=f"params-{job.id}").set_value("{not json")
    at.button(key=f"redo-{job.id}").click().run()
    assert _image(inbox, "photo").is_file()
    assert "parameters are not valid JSON" in at.error[0].value


def test_empty_inbox_and_bad_config(tmp_path: Path, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    env = Env(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(env.mapping), encoding="utf-8")
    monkeypatch.setenv("ASTROWATCH_CONFIG", str(config))
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert "The inbox is empty" in at.info[0].value
    monkeypatch.setenv("ASTROWATCH_CONFIG", str(tmp_path / "missing.yaml"))
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert "config file not found" in at.error[0].value


def test_ui_command_refuses_a_bad_config_with_one_line(tmp_path: Path, capsys) -> None:
    assert main(["ui", "-c", str(tmp_path / "missing.yaml")]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config file not found" in err[0]


# -- once in a real browser ----------------------------------------------------------------------------
class Chromium:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (DevTools protocol on fds 3/4).

    ``--screenshot --virtual-time-budget`` does not wait for Streamlit's websocket (virtual time
    runs ahead while the page waits for the server), so its screenshots are often blank; here we
    wait until the page's images are loaded, then capture."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]

    def __init__(self, profile: Path, size: tuple[int, int]) -> None:
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()
        ours = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome, from_chrome)]
        os.close(to_chrome)
        os.close(from_chrome)
        script = f'exec "$0" "$@" 3<&{ours[0]} 4>&{ours[1]} {ours[0]}<&- {ours[1]}>&-'
        flags = [*self.FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                 "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", script, str(CHROMIUM), *flags], pass_fds=ours,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in ours:
            os.close(fd)
        self._buf, self._id, self.session = b"", 0, None
        self.size = size

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 20.0) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, f"{method}: {reply['error']}"
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method}")
            chunk = os.read(self._r, 1 << 20)
            assert chunk, "Chromium closed the DevTools pipe"
            self._buf += chunk

    def open(self, url: str, ready: str, timeout: float = 30.0) -> None:
        """A new tab on ``url``, once the expression ``ready`` is true in it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.size[0], "height": self.size[1],
                                                         "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait(ready, "the review page did not finish loading in Chromium", timeout)

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def wait(self, expression: str, failure: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, failure
            time.sleep(0.1)
        return value

    def screenshot(self, url: str, ready: str, timeout: float = 30.0) -> bytes:
        self.open(url, ready, timeout)
        time.sleep(0.5)  # let the last layout settle
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def click(self, selector: str) -> None:
        """A left click, pressed and released by the mouse at the middle of the element."""
        x, y = self.wait(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
                         " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                         " return [r.x + r.width / 2, r.y + r.height / 2]; })()", f"no {selector} on the page")
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def key(self, key: str, code: int, text: str = "", ctrl: bool = False, commands: tuple[str, ...] = ()) -> None:
        down: dict[str, Any] = {"type": "keyDown" if text else "rawKeyDown", "key": key, "code": key,
                                "windowsVirtualKeyCode": code, "modifiers": 2 if ctrl else 0, "commands": list(commands)}
        if text:
            down["text"] = down["unmodifiedText"] = text
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code,
                                             "modifiers": down["modifiers"]})

    def retype(self, text: str) -> None:
        """Into the focused box: select all, delete, then one key a character (Enter for a new line)."""
        self.key("a", 65, ctrl=True, commands=("selectAll",))
        self.key("Backspace", 8)
        for char in text:
            if char == "\n":
                self.key("Enter", 13, "\r")
            else:
                self.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": char, "text": char, "unmodifiedText": char})
                self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (AssertionError, OSError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "astrowatch ui exited early"
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("astrowatch ui did not answer on its port")


@contextlib.contextmanager
def _served(inbox: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Chromium, str]]:
    """``astrowatch ui`` on a free port over the inbox, and a headless Chromium to look at it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "astrowatch", "ui", "-c", str(inbox["config"]),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_healthy(url, proc)
        browser = Chromium(tmp_path / "profile", (1280, 900))
        try:
            yield browser, url
        finally:
            browser.close()
    finally:
        proc.terminate()
        proc.wait(15)


READY = ("document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 4 && "
         "[...document.images].every(i => i.complete && i.naturalWidth > 0)")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (looked for " + ", ".join(BROWSERS) + "; "
                    "apt-get install chromium: the Makefile's test target tries as root)")
def test_page_in_headless_chromium(inbox, tmp_path: Path) -> None:
    from PIL import Image

    shot_path = Path(os.environ.get("ASTROWATCH_UI_SHOT") or tmp_path / "review.png")
    with _served(inbox, tmp_path) as (browser, url):
        shot_path.write_bytes(browser.screenshot(url, READY))
    with Image.open(shot_path) as img:
        rgb = img.convert("RGB")
    assert rgb.size == (1280, 900)
    colours = rgb.getcolors(1 << 22) or []
    assert len(colours) > 500, "the screenshot is blank"
    count = _near(rgb)
    assert count((20, 40, 220)) > 2000, "the photo's blue quadrant (original and result) is not on the page"
    assert count((200, 30, 60)) > 2000, "the photo's red part is not on the page"
    sidebar = rgb.crop((0, 0, 280, 900)).getcolors(1 << 20) or []
    assert max(sidebar)[1][0] > 200  # a light sidebar, not an error page or a dark blank


def _near(rgb: Any, tolerance: int = 40) -> Any:
    def count(target: tuple[int, int, int]) -> int:
        return sum(n for n, c in rgb.getcolors(1 << 22) if all(abs(a - b) <= tolerance for a, b in zip(c, target, strict=False)))
    return count


def test_an_original_browsers_cannot_show_is_previewed_decoded_and_oriented(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    from PIL import Image

    from astrowatch.core.config import Config
    from astrowatch.ui.views import original_preview

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (2000, 1500), (200, 30, 30)).save(tmp_path / "a.heic", format="HEIF", exif=exif.tobytes())
    root = tmp_path.resolve()
    preview = original_preview(tmp_path / "a.heic", Config(), root)
    assert isinstance(preview, Image.Image) and preview.size == (768, 1024)  # portrait, thumbnailed
    make_image(tmp_path / "b.jpg")
    assert original_preview(tmp_path / "b.jpg", Config(), root) == (tmp_path / "b.jpg").read_bytes()  # shown as is
    (tmp_path / "link.jpg").symlink_to(tmp_path / "b.jpg")
    assert original_preview(tmp_path / "link.jpg", Config(), root) is None  # never followed
    (tmp_path / "link.heic").symlink_to(tmp_path / "a.heic")
    assert original_preview(tmp_path / "link.heic", Config(), root) is None  # nor when decoded
    (tmp_path / "c.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    assert original_preview(tmp_path / "c.heic", Config(), root) is None


# the tag-editing scenario, for AppTest and for Chromium: the models proposed "sand, sky, sea"; the
# reviewer writes a sentence, removes sky, adds waves, moves sea first, then approves
SENTENCE, TAGS = "a quiet beach, at noon", "sea\nsand\nwaves"


def _propose_tags(inbox: dict[str, Any]) -> str:
    """Line 1 of lou's photo becomes ``trigger, sand, sky, sea``; returns the line to be filed."""
    from astrowatch.review.inbox import InboxItem, save_caption

    env, job = inbox["env"], inbox["photo"]["job"]
    image = _image(inbox, "photo")
    trigger = env.config.dataset.trigger_word
    technical = image.with_suffix(".txt").read_text().splitlines()[1:]
    proposed = ", ".join(p for p in (trigger, "sand", "sky", "sea") if p)  # no captioner here: tags only
    save_caption(InboxItem(job, image, env.layout.root), "\n".join([proposed, *technical]))
    return ", ".join(p for p in (trigger, SENTENCE, *TAGS.split("\n")) if p)


def _filed(inbox: dict[str, Any]) -> list[str]:
    """The daemon's reviewer acts on the approval; the dataset's .txt as filed."""
    from astrowatch.intake.ingest import Ingest

    env, job = inbox["env"], inbox["photo"]["job"]
    moved = env.layout.root / "approved" / _image(inbox, "photo").name
    assert Ingest(env.config, env.layout, env.ledger, env.reviewer).handle(str(moved)) == "decided"
    return next((env.layout.root / "datasets" / job.user).glob("*.txt")).read_text().splitlines()


def test_editing_tags_then_approving_files_exactly_those_tags_in_order(inbox, monkeypatch) -> None:
    """The caption and tag boxes of an enhance result: a tag removed, one added, one moved first;
    the sentence rewritten; approval files line 1 with exactly those parts in that order."""
    expected = _propose_tags(inbox)
    job = inbox["photo"]["job"]
    at = _app(inbox, monkeypatch)
    assert at.text_input(key=f"sentence-{job.id}").value == ""
    assert at.text_area(key=f"tags-{job.id}").value == "sand\nsky\nsea"
    at.text_input(key=f"sentence-{job.id}").set_value(SENTENCE)
    at.text_area(key=f"tags-{job.id}").set_value(TAGS)
    at.button(key=f"approve-{job.id}").click().run()
    assert not at.exception and not at.error
    assert _filed(inbox) == [expected]


def _box(key: str, tag: str) -> str:
    """The CSS selector of a keyed Streamlit widget's ``input``/``textarea``/``button``."""
    return f".st-key-{re.sub(r'[^a-zA-Z0-9_-]', '-', key)} {tag}"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (looked for " + ", ".join(BROWSERS) + ")")
def test_editing_tags_in_chromium_then_approving_files_exactly_those_tags(inbox, tmp_path: Path) -> None:
    """The same scenario typed and clicked in the page served by ``astrowatch ui``: the sentence
    (Enter applies it), the tags (Ctrl+Enter), each change reflected in line 1 of the description
    box, then Approve."""
    expected = _propose_tags(inbox)
    job = inbox["photo"]["job"]
    sentence, tags, description = (_box(f"sentence-{job.id}", "input"), _box(f"tags-{job.id}", "textarea"),
                                   _box(f"caption-{job.id}", "textarea"))

    def value(selector: str) -> str:
        return f"(document.querySelector({json.dumps(selector)}) || {{}}).value"

    def line_one_is(line: str) -> str:
        return f"({value(description)} || '').split('\\n')[0] === {json.dumps(line)}"

    with _served(inbox, tmp_path) as (browser, url):
        browser.open(url, f"{value(tags)} === 'sand\\nsky\\nsea' && {value(sentence)} === ''")
        browser.click(sentence)
        browser.retype(SENTENCE)
        browser.key("Enter", 13, "\r")
        trigger = inbox["env"].config.dataset.trigger_word
        with_sentence = ", ".join(p for p in (trigger, SENTENCE, "sand", "sky", "sea") if p)
        browser.wait(line_one_is(with_sentence), "Enter in the caption box did not reach line 1", 15)
        browser.click(tags)
        browser.retype(TAGS)
        browser.key("Enter", 13, "\r", ctrl=True)
        browser.wait(line_one_is(expected), "Ctrl+Enter in the tags box did not reach line 1", 15)
        browser.click(_box(f"approve-{job.id}", "button"))
        browser.wait("document.body.innerText.includes('approved: moved to approved/')",
                     "Approve did not report the move", 40)
    assert _filed(inbox) == [expected]


# -- several variants of one chart: side by side, one click to pick -------------------------------------
@pytest.fixture
def variants_inbox(tmp_path: Path) -> dict[str, Any]:
    """gaby's theme made into one job with three variants (the seeded ``fake`` backend: three
    different images), waiting in a real inbox."""
    from astrowatch.backends.base import CancelToken
    from astrowatch.intake.ingest import Ingest
    from astrowatch.review.reviewer import Reviewer
    from astrowatch.runtime.settings import config_from_mapping
    from astrowatch.runtime.worker import Worker

    env = Env(tmp_path, learn=False)
    env.mapping["astro"] = {"backend": "fake", "variants": 3}
    env.mapping["fake"] = {"size": 96}
    env.config = config_from_mapping(env.mapping, base_dir=tmp_path)
    env.reviewer = Reviewer(env.config, env.layout, env.ledger)
    theme = env.layout.root / "Utilisateurs" / "gaby" / "theme_gaby.json"
    theme.parent.mkdir(parents=True)
    theme.write_bytes(theme_bytes())
    assert Ingest(env.config, env.layout, env.ledger, env.reviewer).handle(str(theme)) == "job"
    worker = Worker(env.config, env.layout, {"astro": "fake", "enhance": "lanczos"}, CancelToken())
    job = worker.ledger.claim_next()
    worker.execute(job)
    worker.pool.close()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(env.mapping), encoding="utf-8")
    job = env.ledger.get(job.id)
    folder = env.layout.inbox_dir(job.user)
    variants = {int(v["variant"]): folder / v["image"] for v in job.result["variants"]}
    return {"env": env, "job": job, "config": config, "variants": variants, "sheet": folder / job.result["image"]}


def _delivered_after_pick(box: dict[str, Any], k: int) -> bytes:
    """The daemon's reviewer acts on the move; what ``theme_gaby.png`` holds then."""
    from astrowatch.intake.ingest import Ingest

    env = box["env"]
    moved = env.layout.root / "approved" / box["variants"][k].name
    assert moved.is_file() and not box["variants"][k].exists()
    assert Ingest(env.config, env.layout, env.ledger, env.reviewer).handle(str(moved)) == "decided"
    assert env.ledger.get(box["job"].id).state == "delivered"
    return (env.layout.root / "Utilisateurs" / "gaby" / "theme_gaby.png").read_bytes()


def test_variants_side_by_side_and_pick_delivers_exactly_that_one(variants_inbox, monkeypatch) -> None:
    box, job = variants_inbox, variants_inbox["job"]
    want = box["variants"][2].read_bytes()
    assert len({p.read_bytes() for p in box["variants"].values()}) == 3
    at = _app(box, monkeypatch)
    assert not at.exception
    assert [b.label for b in at.button if b.key.startswith(f"pick-{job.id}-")] == ["Pick v1", "Pick v2", "Pick v3"]
    assert not [b for b in at.button if b.key == f"approve-{job.id}"]  # the contact sheet is never approved
    assert len(at.image) == 4  # the chart wheel + three variants
    at.button(key=f"pick-{job.id}-2").click().run()
    assert not at.exception and not at.error
    assert "picked (variant 2): moved to approved/" in at.success[0].value
    assert box["sheet"].is_file()  # the sheet and the siblings wait for the daemon, which retires them
    assert _delivered_after_pick(box, 2) == want


def test_variant_cells_are_the_waiting_variants_in_order(variants_inbox) -> None:
    from astrowatch.review.inbox import inbox_items
    from astrowatch.ui.views import pick_caption, variant_cells, variant_columns

    env, job = variants_inbox["env"], variants_inbox["job"]
    item = next(i for i in inbox_items(env.layout, env.ledger) if i.job.id == job.id)
    cells = variant_cells(item)
    seeds = [v["seed"] for v in job.result["variants"]]
    assert [(c.k, c.image, c.caption, c.key) for c in cells] == [
        (k, variants_inbox["variants"][k], f"v{k} · seed {seeds[k - 1]}", f"pick-{job.id}-{k}") for k in (1, 2, 3)]
    variants_inbox["variants"][1].unlink()  # gone (moved by hand): not offered
    assert [c.k for c in variant_cells(item)] == [2, 3]
    assert [variant_columns(n) for n in (1, 3, 4, 8)] == [1, 3, 4, 4]
    assert pick_caption("text\n", "text\n") is None and pick_caption("text\n", "edited\n") == "edited\n"
    assert pick_caption("text\n", None) is None


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (looked for " + ", ".join(BROWSERS) + ")")
def test_pick_variant_two_in_chromium_delivers_its_bytes(variants_inbox, tmp_path: Path) -> None:
    """The page served by ``astrowatch ui``: the three variants side by side, one click on
    **Pick v2**; the daemon's reviewer then delivers ``theme_gaby.png`` with exactly variant 2's bytes."""
    box, job = variants_inbox, variants_inbox["job"]
    want = box["variants"][2].read_bytes()
    ready = ("document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 4 && "
             "[...document.images].every(i => i.complete && i.naturalWidth > 0) && "
             f"!!document.querySelector({json.dumps(_box(f'pick-{job.id}-2', 'button'))})")
    with _served(box, tmp_path) as (browser, url):
        browser.open(url, ready)
        assert browser.evaluate("[...document.querySelectorAll('button')].filter(b => /^Pick v[0-9]$/"
                                ".test(b.innerText.trim())).map(b => b.innerText.trim())") == ["Pick v1", "Pick v2", "Pick v3"]
        browser.click(_box(f"pick-{job.id}-2", "button"))
        browser.wait("document.body.innerText.includes('picked (variant 2): moved to approved/')",
                     "Pick v2 did not report the move", 40)
    assert _delivered_after_pick(box, 2) == want

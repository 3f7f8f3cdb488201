"""The selector site: rendering, and the real page driven in headless Chromium.

The browser tests run Debian's ``chromium`` through Playwright against a real
``asu-ci serve`` on 127.0.0.1, whose index was rendered from the local
upstream mirror and whose builds run the test ImageBuilder. Screenshots of
the main states go to ``tests/screenshots/`` (not committed).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asu_ci.config import Settings, load_settings
from asu_ci.site import ASSETS, render_site, source_dir
from tests.support.frontends import Serve, free_port, write_config
from tests.support.tools import require

pytest_plugins = ["tests.support.fixtures"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parents[1] / "screenshots"
VERSION = "23.05.4"
TARGET = "ath79/generic"
PROFILE = "tplink_archer-c7-v5"
TITLE = "TP-Link Archer C7 v5"
BUILD_TIMEOUT_MS = 90_000


# --- rendering (no browser) ----------------------------------------------------


def _settings(tmp_path: Path, **server: Any) -> Settings:
    return load_settings(
        None,
        {"public": str(tmp_path / "public"), "data": str(tmp_path / "data"), "server": server},
        environ={},
    )


def test_sources_are_found() -> None:
    assert (source_dir("templates") / "index.html").is_file()
    assert (source_dir("site") / "app.js").is_file()
    with pytest.raises(FileNotFoundError):
        source_dir("no-such-folder")


def test_render_site_writes_pages_and_assets_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path, contact="ops@example.org")
    public = settings.public_dir
    written, unchanged = render_site(settings)
    assets = sorted(p.name for p in (source_dir("site")).iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in (public / ASSETS).iterdir()) == assets
    assert (written, unchanged) == (len(assets) + 1, 0)
    html = (public / "index.html").read_text()
    for name in assets:
        data = (source_dir("site") / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert (public / ASSETS / name).read_bytes() == data
        assert f"{ASSETS}/{name}?v={digest}" in html
    assert '<meta name="asu-ci-api" content="">' in html
    assert "ops@example.org" in html
    before = {p: p.stat().st_mtime_ns for p in public.rglob("*") if p.is_file()}
    assert render_site(settings) == (0, len(assets) + 1)
    assert {p: p.stat().st_mtime_ns for p in public.rglob("*") if p.is_file()} == before


def test_render_site_options_and_stale_assets(tmp_path: Path) -> None:
    settings = _settings(tmp_path, contact="<script>x</script>", api_url="https://asu.example.org/")
    other = tmp_path / "elsewhere"
    (other / ASSETS / "old").mkdir(parents=True)
    (other / ASSETS / "old" / "gone.js").write_text("stale")
    (other / ASSETS / "gone.css").write_text("stale")
    render_site(settings, other)
    html = (other / "index.html").read_text()
    assert '<meta name="asu-ci-api" content="https://asu.example.org">' in html
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert not (other / ASSETS / "old").exists()
    assert not (other / ASSETS / "gone.css").exists()
    assert not settings.public_dir.exists()


# --- the live service --------------------------------------------------------


@dataclass
class Service:
    url: str
    public: Path
    upstream_url: str
    log: Path

    def device(self, profile: str = PROFILE) -> dict[str, Any]:
        path = self.public / f"json/v1/releases/{VERSION}/targets/{TARGET}/{profile}.json"
        return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def service(upstream_mirror: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``asu-ci serve`` on a free port; its first start renders the index and the site."""
    home = tmp_path_factory.mktemp("site")
    config = write_config(
        home / "asu-ci.yaml",
        {
            "upstream": upstream_mirror.url,
            # the mirror signs its sha256sums with its own key, not OpenWrt's
            "signatures": {"trusted_keys": [upstream_mirror.info.public_key]},
            "public": str(home / "public"),
            "data": str(home / "data"),
            "local": {"workers": 2},
        },
    )
    serve = Serve(config, free_port(), home / "serve.log").start(timeout=120)
    try:
        yield Service(serve.url, home / "public", upstream_mirror.url, serve.log)
    finally:
        serve.stop()


# --- the browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, with a fresh profile."""
    require(CHROMIUM, "apt-get install chromium")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """Errors the page logged; a test names the ones it expects (failed requests)."""

    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        self.expected.append(pattern)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(re.search(p, e) for p in self.expected)]


@dataclass
class Page:
    page: Any
    console: Console
    service: Service

    def open(self, query: str = "") -> None:
        self.page.goto(f"{self.service.url}/{query}")

    def shot(self, name: str, *, full: bool = True) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full)

    def search_and_open(self, query: str, label: str = TITLE) -> None:
        page = self.page
        page.wait_for_selector("#search:not([disabled])")
        page.fill("#search", query)
        option = page.locator("#results [role=option]", has_text=label).first
        option.wait_for()
        option.click()
        page.wait_for_selector("#device-view:not([hidden]) #official table")

    def packages(self) -> list[str]:
        return str(self.page.input_value("#packages")).split()

    def wait_build_end(self) -> str:
        """Wait until the build shows its result or its error; returns which one."""
        done = self.page.wait_for_selector("#build-result, #build-error", timeout=BUILD_TIMEOUT_MS)
        return str(done.get_attribute("id"))


@pytest.fixture
def site(browser: Any, service: Service) -> Iterator[Page]:
    """A fresh browser context on the service; fails on console errors not expected."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    console = Console()
    page.on("console", lambda m: console.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.errors.append(f"uncaught: {e}"))
    try:
        yield Page(page, console, service)
        assert console.unexpected() == []
    finally:
        context.close()


def _expected_packages(device: dict[str, Any]) -> list[str]:
    chosen = list(device["default_packages"])
    for name in device["device_packages"]:
        if name.startswith("-"):
            if name[1:] in chosen:
                chosen.remove(name[1:])
        elif name not in chosen:
            chosen.append(name)
    return chosen


def _image_rows(page: Any, scope: str) -> list[dict[str, str]]:
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        f"{scope} table.images tbody tr",
        """rows => rows.map(r => ({
            type: r.cells[0].textContent,
            filesystem: r.cells[1].textContent,
            name: r.cells[2].textContent,
            href: r.cells[2].querySelector('a') ? r.cells[2].querySelector('a').href : '',
            sha256: r.cells[3].textContent,
        }))""",
    )


# --- browser tests -----------------------------------------------------------


@pytest.mark.browser
def test_search_is_instant_and_opens_the_device(site: Page) -> None:
    page = site.page
    site.open()
    page.wait_for_selector("#search:not([disabled])")
    assert page.evaluate("document.activeElement.id") == "search"
    assert "1534 devices" in page.text_content("#search-hint")
    # Filtering 1534 profiles is synchronous on input: measure it in the page.
    took = page.evaluate(
        """() => {
            const input = document.getElementById('search');
            const t0 = performance.now();
            for (const q of ['n', 'ne', 'net', 'netg', 'netgear', 'netgear r']) {
                input.value = q;
                input.dispatchEvent(new Event('input'));
            }
            return (performance.now() - t0) / 6;
        }"""
    )
    assert took < 50, f"{took:.1f} ms per keystroke"
    page.fill("#search", "archer c7")
    page.wait_for_selector("#results [role=option]")
    labels = page.eval_on_selector_all(
        "#results [role=option] .name", "e => e.map(x => x.textContent)"
    )
    assert TITLE in labels and all("Archer C7" in label for label in labels)
    assert page.get_attribute("#search", "aria-expanded") == "true"
    site.shot("01-search")

    page.fill("#search", "archer c7 v5")
    page.keyboard.press("ArrowDown")
    active = page.get_attribute("#search", "aria-activedescendant")
    assert page.get_attribute(f"#{active}", "aria-selected") == "true"
    page.keyboard.press("Enter")
    page.wait_for_selector("#device-view:not([hidden]) #official table")
    assert page.text_content("#device-title") == TITLE
    assert f"profile={PROFILE}" in page.url and "target=ath79%2Fgeneric" in page.url

    device = site.service.device()
    rows = _image_rows(page, "#official")
    assert rows[0]["type"] == "sysupgrade"
    assert {(r["name"], r["sha256"]) for r in rows} == {
        (i["name"], i["sha256"]) for i in device["images"]
    }
    base = f"{site.service.upstream_url}/releases/{VERSION}/targets/{TARGET}/"
    assert all(r["href"] == base + r["name"] for r in rows)
    assert site.packages() == _expected_packages(device)
    assert page.is_visible("#defaults-field") and page.is_visible("#rootfs-field")
    assert page.get_attribute("#rootfs", "max") == "1024"
    site.shot("02-device")

    page.set_viewport_size({"width": 390, "height": 844})
    site.shot("03-device-phone")
    page.go_back()
    page.wait_for_selector("#search-view:not([hidden])")
    page.fill("#search", "linksys")
    page.wait_for_selector("#results [role=option]")
    site.shot("03-search-phone", full=False)


@pytest.mark.browser
def test_custom_build_finishes_and_downloads(site: Page, tmp_path: Path) -> None:
    page = site.page
    site.open(f"?version={VERSION}")
    site.search_and_open("archer c7 v5")
    wanted = [p for p in site.packages() if p != "ppp-mod-pppoe"] + ["htop"]
    page.fill("#packages", " ".join(wanted) + " -ppp-mod-pppoe")
    assert "adds htop" in page.text_content("#packages-changes")
    page.fill("#defaults", "uci set system.@system[0].hostname='from-the-site'\n")
    page.fill("#rootfs", "96")
    page.click("#submit")
    page.wait_for_selector("#build-progress .hash-row")
    assert page.is_disabled("#submit")
    step = page.text_content("#build-step")
    assert step in {
        "Queued",
        "Waiting to start",
        "Downloading the ImageBuilder",
        "Unpacking the ImageBuilder",
        "Resolving the packages",
        "Building the image",
    }
    site.shot("04-build-progress")

    assert site.wait_build_end() == "build-result"
    site.shot("05-build-done")
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("document.getElementById('result-title').scrollIntoView()")
    site.shot("05-build-done-phone", full=False)
    page.set_viewport_size({"width": 1100, "height": 900})
    summary = page.text_content("#build-result .changes")
    assert "adds htop; leaves out ppp-mod-pppoe." in summary
    assert "Root filesystem of 96 MiB." in summary and "first-boot script" in summary
    assert page.evaluate("document.activeElement.id") == "result-title"
    request_hash = page.input_value("#build-result input.hash")
    assert re.fullmatch(r"[0-9a-f]{64}", request_hash)
    rows = _image_rows(page, "#build-result")
    assert rows and rows[0]["type"] == "sysupgrade"
    assert all(r["href"].startswith(f"{site.service.url}/store/") for r in rows)
    page.click("#build-result summary")
    assert "htop" in page.text_content("#build-result .manifest")
    assert "ppp-mod-pppoe " not in page.text_content("#build-result .manifest")

    link = page.locator("#build-result table.images tbody tr").first.locator("a")
    with page.expect_download() as download_info:
        link.click()
    target = tmp_path / rows[0]["name"]
    download_info.value.save_as(target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == rows[0]["sha256"]
    assert b"htop" in target.read_bytes()

    page.click("#build-result .hash-row button")
    page.wait_for_selector("#build-result .hash-row .status:text('Copied.')")
    assert page.evaluate("navigator.clipboard.readText()") == request_hash

    # The address now restores this request; and a new visit lists the build.
    assert "htop" in page.url and "-ppp-mod-pppoe" in page.url
    page.reload()
    page.wait_for_selector("#mine:not([hidden]) table.images")
    assert page.input_value("#mine input.hash") == request_hash
    assert "htop" in page.input_value("#packages")
    site.shot("10-earlier-builds")


@pytest.mark.browser
def test_failed_build_shows_detail_and_logs(site: Page) -> None:
    page = site.page
    site.console.expect(r"status of 500")
    site.open()
    site.search_and_open("archer c7 v5")
    # Both packages exist in the index; only the ImageBuilder finds that they conflict.
    page.fill("#packages", " ".join([*site.packages(), "dnsmasq-full"]))
    page.click("#submit")
    assert site.wait_build_end() == "build-error"
    assert page.text_content("#build-error h3") == "The build failed"
    assert page.text_content("#build-error .detail").strip()
    logs = page.locator("#build-error details.log")
    assert logs.count() >= 1
    logs.first.locator("summary").click()
    assert "dnsmasq" in " ".join(page.locator("#build-error pre").all_text_contents())
    assert not page.is_disabled("#submit")
    site.shot("06-build-failed")


@pytest.mark.browser
def test_unknown_package_is_named(site: Page) -> None:
    page = site.page
    site.console.expect(r"status of 422")
    site.open()
    site.search_and_open("archer c7 v5")
    page.fill("#packages", " ".join([*site.packages(), "no-such-package"]))
    page.click("#submit")
    page.wait_for_selector("#build-error")
    assert page.text_content("#build-error h3") == "Unknown packages"
    assert page.locator("#build-error code.unknown").all_text_contents() == ["no-such-package"]
    assert "no-such-package" in page.text_content("#build-error .detail")
    site.shot("07-unknown-package")

    page.fill("#packages", "busybox bad$name")
    page.click("#submit")
    assert page.text_content("#packages-error") == "Not a package name: bad$name"
    assert page.evaluate("document.activeElement.id") == "packages"


@pytest.mark.browser
def test_queue_position_and_steps_in_words(site: Page) -> None:
    """States a quick build passes too fast to see, answered by the page's own route."""
    page = site.page
    site.console.expect(r"status of 404")
    fake = "f" * 64
    replies = [
        {
            "status": 202,
            "request_hash": fake,
            "detail": "queued",
            "imagebuilder_status": "init",
            "queue_position": 3,
        },
        {
            "status": 202,
            "request_hash": fake,
            "detail": "started",
            "imagebuilder_status": "building_image",
        },
    ]

    def answer(route: Any) -> None:
        if replies:
            route.fulfill(
                status=202, content_type="application/json", body=json.dumps(replies.pop(0))
            )
        else:
            route.continue_()

    site.open()
    site.search_and_open("archer c7 v5")
    page.route("**/api/v1/build**", answer)
    page.click("#submit")
    page.wait_for_selector("#queue-position")
    assert page.text_content("#build-step") == "Queued"
    assert page.text_content("#queue-position") == " · 3 builds ahead of yours"
    assert "Queued, 3 builds ahead of yours." in page.text_content("#build-status")
    site.shot("11-queued")
    page.wait_for_selector("#build-progress[data-step=building_image]")
    assert page.text_content("#build-step") == "Building the image"
    assert page.get_attribute(".steps li.current", "data-step") == "building_image"
    assert page.locator(".steps li.done").count() == 4
    # Then the real server, which never heard of this hash.
    page.wait_for_selector("#build-error")
    assert "no longer knows this request" in page.text_content("#build-error .detail")


@pytest.mark.browser
def test_shared_url_restores_the_form(site: Page) -> None:
    page = site.page
    query = (
        f"?version={VERSION}&target=ath79%2Fgeneric&profile=tplink%2Carcher-c7-v5"
        "&packages=base-files+busybox+htop+-ppp&rootfs_size_mb=128"
    )
    site.open(query)
    page.wait_for_selector("#device-view:not([hidden]) #official table")
    assert page.text_content("#device-title") == TITLE
    assert page.text_content("#device-facts code") == PROFILE
    assert site.packages() == ["base-files", "busybox", "htop", "-ppp"]
    assert page.input_value("#rootfs") == "128"
    assert "adds htop" in page.text_content("#packages-changes")
    site.shot("08-shared-url")

    page.fill("#packages", "base-files busybox nano")
    page.wait_for_function("location.search.includes('nano')")
    shared = page.evaluate("location.href")
    page.click("#share")
    page.wait_for_selector("#form-status:text('Link copied.')")
    assert page.evaluate("navigator.clipboard.readText()") == shared
    other = page.context.new_page()
    other.goto(shared)
    other.wait_for_selector("#device-view:not([hidden]) #official table")
    assert other.input_value("#packages") == "base-files busybox nano"
    assert other.input_value("#rootfs") == "128"
    other.close()


@pytest.mark.browser
def test_unknown_version_and_device_fall_back_to_search(site: Page) -> None:
    page = site.page
    site.console.expect(r"status of 404")
    site.open("?version=99.01.0&target=ath79%2Fgeneric&profile=no-such-device")
    page.wait_for_selector("#search-view:not([hidden]) #search:not([disabled])")
    assert "has no device “no-such-device” for ath79/generic" in page.text_content("#alert")
    assert page.input_value("#version") == VERSION
    assert page.evaluate("location.search") == f"?version={VERSION}"


@pytest.mark.browser
def test_keyboard_only(site: Page) -> None:
    page = site.page
    site.open()
    page.wait_for_selector("#search:not([disabled])")
    page.keyboard.type("carambola2")
    page.wait_for_selector("#results [role=option]")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_selector("#device-view:not([hidden]) #official table")
    assert page.evaluate("document.activeElement.id") == "device-title"
    for _ in range(40):
        if page.evaluate("document.activeElement.id") == "submit":
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail("Tab never reached the build button")
    site.shot("09-keyboard-focus", full=False)
    page.keyboard.press("Enter")
    assert site.wait_build_end() == "build-result"
    assert page.evaluate("document.activeElement.id") == "result-title"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "A"
    assert "/store/" in page.evaluate("document.activeElement.href")

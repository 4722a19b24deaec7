"""Fixtures for the real-browser tests: Debian's chromium (headless) under selenium, logged in to the
session's real Label Studio; a backend of our own on it; PNG screenshots on failure.

Nothing here downloads a browser or a driver: selenium gets /usr/bin/chromium and
/usr/bin/chromedriver explicitly and runs with SE_OFFLINE=true, so Selenium Manager is never asked.
`make test` installs the two packages (make install-system); where apt-get is missing the tests skip
with a loud reason, anywhere else a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.local_services import BackendServer, free_port  # noqa: E402

CHROMIUM = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--window-size=1400,1000")
ARTIFACTS = Path(os.environ.get("DISAL_TEST_ARTIFACTS", ROOT / "tmp" / "artifacts"))
BACKEND_AUTH = ("disal-ml", "browser-secret-pass")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.e2e)


def _browser_missing_reason() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return None
    return f"{', '.join(missing)} missing"


@pytest.fixture(scope="session")
def chrome_paths() -> tuple[Path, Path]:
    """The system browser and driver, or a loud skip where no package manager could install them."""
    reason = _browser_missing_reason()
    if reason is None:
        return CHROMIUM, CHROMEDRIVER
    if shutil.which("apt-get") is None:
        pytest.skip(f"!!! BROWSER TESTS SKIPPED: {reason} and there is no apt-get to install Debian's chromium "
                    "and chromium-driver (make install-system). Install a system chromium + chromedriver and set "
                    "CHROMIUM_BIN / CHROMEDRIVER_BIN to run them. !!!")
    pytest.fail(f"{reason}: run `make install-system` (apt-get install chromium chromium-driver); "
                "`make test` does it for you")


class Artifacts:
    """Screenshots for one test: `shot(name)` saves a PNG under ARTIFACTS/<run>/ and returns its path."""

    def __init__(self, test_name: str) -> None:
        self.dir = ARTIFACTS / time.strftime("%Y%m%dT%H%M%S") / test_name
        self.driver = None
        self.saved: list[Path] = []

    def shot(self, name: str) -> Path | None:
        if self.driver is None:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{len(self.saved):02d}-{name}.png"
        try:
            self.driver.save_screenshot(str(path))
        except Exception as exc:  # noqa: BLE001 - a dead browser must not hide the real failure
            print(f"could not save screenshot {path}: {exc}")
            return None
        self.saved.append(path)
        return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failing browser test, screenshot the page and name the file in the report."""
    report = yield
    if report.when == "call" and report.failed:
        arts = item.funcargs.get("artifacts") if hasattr(item, "funcargs") else None
        if isinstance(arts, Artifacts):
            path = arts.shot("failure")
            saved = [str(p) for p in arts.saved]
            if saved:
                report.sections.append(("browser screenshots", "\n".join(saved)))
                print(f"\nscreenshots of the failing browser test: {path or saved[-1]} (all: {arts.dir})")
    return report


def make_driver(chromium: Path, chromedriver: Path, profile: Path):
    """A fresh headless chromium with its own profile; the Service is the system chromedriver."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look anything up or download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(chromium)
    for arg in CHROME_ARGS:
        opts.add_argument(arg)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=str(chromedriver)), options=opts)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def driver(chrome_paths):
    pytest.importorskip("selenium", reason="selenium is in requirements-dev.txt: run `make install`")
    profile = Path(tempfile.mkdtemp(prefix="disal-chromium-"))
    drv = make_driver(*chrome_paths, profile)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def artifacts(request, driver) -> Artifacts:
    arts = Artifacts(request.node.name)
    arts.driver = driver
    return arts


@pytest.fixture(scope="module")
def ui_backend(tmp_path_factory, label_studio):
    """The backend with its DEFAULT settings (DELETE_OLD_VERSIONS and all), plus basic auth and
    uncertainty sampling, as a user runs it."""
    server = BackendServer(
        tmp_path_factory.mktemp("browser_model_dir"), free_port(), label_studio,
        extra_env={"BASIC_AUTH_USER": BACKEND_AUTH[0], "BASIC_AUTH_PASS": BACKEND_AUTH[1],
                   "USE_UNCERTAINTY_SAMPLING": "true", "LOG_LEVEL": "INFO"},
    )
    server.start()
    yield server
    server.stop()

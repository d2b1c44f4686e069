"""The page of ``segkit serve`` in a real browser: headless Chromium from Debian's packages (``chromium``,
``chromium-driver``; ``.ci/run`` installs them) driven by Selenium. It opens ``/``, uploads a CamVid test
image through the file input, waits for the overlay, checks the legend against ``segkit.Segmenter``, checks
that the browser fetched nothing from another origin, shows an upload error in the page, and saves a
screenshot. Without the browser the test skips with the reason, except under ``CI=true``, where it fails."""

import shutil
import threading
import time

import numpy as np
import pytest
from conftest import IN_CI
from PIL import Image

selenium = pytest.importorskip("selenium", reason='the browser test needs Selenium: pip install -e ".[test]"')
pytest.importorskip("uvicorn", reason='segkit serve needs the serve extra: pip install "segkit[serve]"')

from serve_helpers import camvid_test_images, trained_camvid  # noqa: E402

import segkit  # noqa: E402

BROWSERS = ("chromium", "chromedriver")  # Debian: chromium, chromium-driver


def browser_paths() -> tuple[str, str]:
    paths = {name: shutil.which(name) for name in BROWSERS}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        msg = (
            f"{', '.join(missing)} not found: install Debian's browser with `apt-get install -y chromium "
            "chromium-driver` (.ci/run does)"
        )
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return paths["chromium"], paths["chromedriver"]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """``segkit serve``'s app under uvicorn in a thread of this process, on a free port of 127.0.0.1."""
    import uvicorn

    from segkit.cli.serve import listen
    from segkit.serve import create_app

    final = trained_camvid(tmp_path_factory)
    app = create_app(final, device="cpu")
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(300):  # bounded: 30 s
        if server.started:
            break
        time.sleep(0.1)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", final
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,860"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 60.0):
    """Poll ``return <script>`` until it is truthy (bounded by ``timeout`` seconds)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {script}"))


def test_page_segments_an_uploaded_image_in_chromium(browser, server_url, tmp_path):  # no browser: skip first
    url, final = server_url
    image = camvid_test_images(1)[0]
    expected = segkit.Segmenter(final, device="cpu")(image)

    browser.get(f"{url}/")
    wait_for(browser, "document.body.dataset.ready === '1'")
    assert "segformer-b0" in browser.find_element("id", "model").text

    browser.find_element("id", "file").send_keys(str(image))
    assert wait_for(browser, "document.body.dataset.state") == "done", browser.find_element("id", "error").text
    overlay = browser.find_element("id", "overlay")
    assert overlay.is_displayed()
    size = browser.execute_script(
        "const i = document.getElementById('overlay'); return [i.naturalWidth, i.naturalHeight]"
    )
    assert size == [480, 360]
    legend = [li.get_attribute("data-class") for li in browser.find_elements("css selector", "#legend li")]
    assert legend == list(expected.areas())  # the classes present, largest first
    assert all("%" in li.text for li in browser.find_elements("css selector", "#legend li"))

    shot = tmp_path / "serve_page.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.array(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0).tolist()}
    top = expected.palette[expected.classes.index(legend[0])]
    assert tuple(top) in colours  # the legend swatch of the largest class is on screen

    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert origins and all(o.startswith(url + "/") for o in origins), origins  # nothing fetched from elsewhere

    notes = tmp_path / "notes.png"
    notes.write_text("not a picture\n" * 10)
    browser.find_element("id", "file").send_keys(str(notes))
    assert wait_for(browser, "document.body.dataset.state === 'error' && document.body.dataset.state")
    error = browser.find_element("id", "error")
    assert error.is_displayed() and "415" in error.text and "text file" in error.text

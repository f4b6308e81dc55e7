"""The course website, read as a person reads it: ``lessons/build_site.py`` builds every
lesson (fast settings), a local http.server on 127.0.0.1 serves it, and headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, driven by selenium) opens every page with
every other host unreachable. On each page: MathJax (served by the site itself) has typeset
every formula without an error, every image has loaded, every internal link and anchor
leads somewhere. Each lesson shows its exercise cells as exercises and links to its
notebook. Search finds a lesson. Without Chromium the test fails and says how to install it
(.ci/run installs it).

Set TINYDENSE_SITE_SCREENSHOT=docs/site-screenshot.png to rewrite the committed screenshot, and
TINYDENSE_SITE_DIR=DIR to test a site built already (python lessons/build_site.py --out DIR).
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "lessons" / "source").glob("[0-9][0-9]_*.py"))
INSTALL = ("the site test needs headless Chromium and its driver: apt-get install -y chromium "
           "chromium-driver (Debian), and pip install -e '.[dev]' (selenium)")


def _load_build_site():
    spec = importlib.util.spec_from_file_location("lessons_build_site", ROOT / "lessons" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_site = _load_build_site()


# --- without a browser ------------------------------------------------------------------

def test_pages_bring_their_linked_files_but_never_the_instructors(tmp_path):
    text = ("[answers](instructor/answers.md) [solutions](instructor/solutions.py) "
            "[curves](../docs/results/densenet-bc-L40-k12-cifar10-subset-curves.png) [more](../benchmarks/README.md)")
    pages = build_site.copy_page(ROOT / "lessons" / "README.md", tmp_path / "lessons" / "README.md", tmp_path, text)
    assert pages == ["benchmarks/README"]
    copied = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert copied == ["benchmarks/README.md", "docs/results/densenet-bc-L40-k12-cifar10-subset-curves.png",
                      "lessons/README.md"]


def test_unknown_lesson_is_a_clear_error():
    with pytest.raises(ValueError, match="no lesson matches 99.*01_autograd"):
        build_site.lesson_sources(["99"])


# --- in a browser -------------------------------------------------------------------------

def _chromium():
    """A headless Chromium that can reach 127.0.0.1 and nothing else."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(INSTALL)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail(INSTALL)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(60)
    browser.set_script_timeout(60)
    return browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory, cifar_dir):
    """(base URL, output folder): the whole course built once and served on 127.0.0.1."""
    if os.environ.get("TINYDENSE_SITE_DIR"):               # a site built already (for editing)
        out = Path(os.environ["TINYDENSE_SITE_DIR"])
    else:
        out = tmp_path_factory.mktemp("site") / "html"
    if not os.environ.get("TINYDENSE_SITE_DIR"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TINYDENSE_DATA", str(cifar_dir))      # real or generated: never a download
            build_site.build(out)
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", out
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    driver = _chromium()
    yield driver
    driver.quit()


def _typeset(browser):
    """Wait for MathJax to finish; returns (the page's formulas, those MathJax typeset, errors).
    Sphinx writes each formula into an element of class "math notranslate"; MathJax puts its
    rendering (class "MathJax") inside it."""
    return browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const count = () => {
            const formulas = [...document.querySelectorAll('.math.notranslate')];
            return [formulas.length, formulas.filter(f => f.querySelector('.MathJax')).length,
                    document.querySelectorAll('.MathJax_Error, merror').length];
        };
        if (!document.querySelector('.math.notranslate')) { done(count()); return; }
        const start = Date.now();          // MathJax that never loads: report what is there
        const wait = () => (window.MathJax && MathJax.Hub && MathJax.Hub.Queue)
            ? MathJax.Hub.Queue(() => done(count()))
            : (Date.now() - start > 20000 ? done(count()) : setTimeout(wait, 50));
        wait();""")


def _fetch(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def test_every_page_renders_math_and_images_and_every_link_works(browser, site):
    base, out = site
    pages, queue, files = {}, [base + "index.html"], set()    # pages: URL -> the ids in it
    wanted, broken = [], []                                     # (page, target, fragment)
    while queue:
        url = queue.pop()
        if url in pages:
            continue
        browser.get(url)
        page = browser.current_url.split("#")[0]               # index.html redirects
        assert page.startswith(base), f"{url} left the site for {page}"
        outside = browser.execute_script("""return [...document.querySelectorAll(
            'script[src], link[href]:not([rel=canonical]), img[src], iframe[src], source[src]')]
            .map(e => e.src || e.href).filter(u => !u.startsWith(arguments[0]));""", base)
        assert not outside, f"{page} loads files from elsewhere: {outside}"
        formulas, typeset, errors = _typeset(browser)
        assert typeset == formulas and errors == 0, (
            f"{page}: {formulas} formulas, {typeset} typeset by MathJax, {errors} errors")
        images = browser.execute_script(
            "return [...document.images].map(i => [i.src, i.complete && i.naturalWidth > 0]);")
        assert all(ok for _, ok in images), f"{page}: images that did not load: {images}"
        pages[url] = pages[page] = set(browser.execute_script(
            "return [...document.querySelectorAll('[id]')].map(e => e.id);"))
        for link in browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href);"):
            target, fragment = urldefrag(link)
            if not link.startswith(base):
                assert urlparse(link).scheme in ("https", "http", "mailto"), f"{page} -> {link}"
            elif target.endswith(".html"):
                queue.append(target)
                if fragment:
                    wanted.append((page, target, fragment))
            elif target not in files:
                files.add(target)
                try:
                    _fetch(target)
                except OSError as error:
                    broken.append(f"{page} -> {target}: {error}")
    broken += [f"{page} -> {target}#{fragment}: no such anchor"
               for page, target, fragment in wanted if fragment not in pages[target]]
    assert not broken, "broken links:\n" + "\n".join(broken)
    lessons = {p for p in pages if "/lessons/" in p and p.split("/")[-1][:2].isdigit()}
    assert len(lessons) == len(SOURCES), f"the site has {sorted(lessons)}"
    assert {base + "README.html", base + "lessons/README.html"} <= set(pages)
    assert (out / "_static" / "mathjax" / "MathJax.js").is_file()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_lesson_page_shows_exercises_outputs_and_its_notebook(browser, site, source):
    import nbformat
    base, _ = site
    browser.get(f"{base}lessons/{source.stem}.html")
    text = source.read_text()
    stubs = text.count('# %% tags=["exercise-stub"]')
    shown = browser.execute_script("""
        return [...document.querySelectorAll('div.cell.tag_exercise-stub')].map(
            c => getComputedStyle(c, '::before').content);""")
    assert len(shown) == stubs, f"{len(shown)} exercise cells shown, the source has {stubs}"
    assert all("Exercise" in label for label in shown), shown
    checks = browser.execute_script("return document.querySelectorAll('div.cell.tag_exercise-check').length;")
    assert checks == text.count('# %% tags=["exercise-check"]')
    outputs = browser.execute_script("return document.querySelectorAll('div.cell_output').length;")
    assert outputs > 0, "the lesson was not executed: no outputs on its page"
    title = browser.execute_script("return document.querySelector('h1').textContent;")
    assert title.startswith(text.splitlines()[1].lstrip("# ").split(":")[0]), title
    downloads = browser.execute_script("""
        return [...document.querySelectorAll('a.download')].map(a => a.href)
            .filter(h => h.endsWith('.ipynb') || h.endsWith('.py'));""")
    assert {Path(urlparse(h).path).name for h in downloads} == {f"{source.stem}.ipynb", source.name}
    notebook = next(h for h in downloads if h.endswith(".ipynb"))
    nb = nbformat.reads(_fetch(notebook)[1].decode(), as_version=4)
    assert [c.source for c in nb.cells] == [c.source for c in build_site.student_notebook(source).cells]
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert _fetch([h for h in downloads if h.endswith(".py")][0])[1] == source.read_bytes()


def test_search_finds_the_lessons(browser, site):
    base, _ = site
    browser.get(base + "search.html?q=growth+rate")
    hits = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        let tries = 0;
        const poll = () => {
            const items = [...document.querySelectorAll('#search-results li a')].map(a => a.href);
            if (items.length || ++tries > 200) done(items); else setTimeout(poll, 100);
        };
        poll();""")
    assert any("06_dense_connectivity" in hit for hit in hits), hits


def test_screenshot_of_a_lesson(browser, site, tmp_path):
    base, _ = site
    browser.get(base + "lessons/01_autograd.html")
    formulas, typeset, _ = _typeset(browser)
    assert typeset == formulas > 0
    browser.execute_script("document.querySelector('div.tag_exercise-stub').scrollIntoView(); window.scrollBy(0, -250);")
    target = Path(os.environ.get("TINYDENSE_SITE_SCREENSHOT") or tmp_path / "lesson.png")
    browser.save_screenshot(str(target))
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

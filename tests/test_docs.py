"""The docs site: its strict build runs every chapter's code and fails on any error, warning, broken link
or missing image; and, served on 127.0.0.1, every chapter shows typeset math, loads every image and logs no
error in a real browser (headless Chromium), with no request leaving the machine.

With CI=true a missing mkdocs, Playwright or Chromium fails these tests instead of skipping them.
"""
import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import need

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def need_mkdocs():
    missing = [name for name in ("mkdocs", "material", "markdown_exec", "pymdownx")
               if importlib.util.find_spec(name) is None]
    need(not missing, f"{', '.join(missing)} not installed: pip install -e '.[docs]'")


def docs_command(site_dir):
    """README's docs command (the line after <!-- docs-command -->), writing into site_dir instead of site/."""
    command = README.split("<!-- docs-command -->", 1)[1].split("```", 2)[1].strip()
    assert command.endswith(" --site-dir site"), command
    return command[:-len("site")].split() + [str(site_dir)]


def build(site_dir, cwd=REPO, config=None):
    command = docs_command(site_dir)
    assert command[:4] == ["python", "-m", "mkdocs", "build"] and "--strict" in command
    command[0] = sys.executable
    if config:
        command += ["--config-file", str(config)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               NO_MKDOCS_2_WARNING="1", OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def chapters():
    """The pages of mkdocs.yml's nav, in order, as paths under docs/ (just the home page without PyYAML, whose
    absence the tests then report as mkdocs's: pip install -e '.[docs]')."""
    try:
        import yaml
    except ImportError:
        return ["index.md"]
    pages = []

    def walk(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            walk(value) if isinstance(value, list) else pages.append(value)
    walk(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built by README's docs command in strict mode (every chapter's code runs)."""
    need_mkdocs()
    site_dir = tmp_path_factory.mktemp("site")
    done = build(site_dir)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return site_dir


def test_the_strict_build_passes_and_writes_every_chapter(site):
    for page in chapters():
        html = site / ("index.html" if page == "index.md" else page[:-len(".md")] + "/index.html")
        assert html.is_file(), f"{page} was not built"
    assert (site / "vendor" / "katex" / "katex.min.js").is_file()     # the math engine ships with the site


def lessons():
    """The pages under the nav's "Chapters": the lessons (the other pages are reference: extending, the explorer...)."""
    try:
        import yaml
    except ImportError:
        return []
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    section = next(entry["Chapters"] for entry in nav if isinstance(entry, dict) and "Chapters" in entry)
    return [next(iter(entry.values())) for entry in section]


@pytest.mark.parametrize("page", lessons())
def test_every_chapter_derives_codes_checks_and_ends_with_exercises(page):
    """Each chapter: display math, a link to a source line, a code block that runs and asserts, and 2 to 4
    exercises, each with a solution the build runs, collapsed for the reader."""
    import re
    text = (REPO / "docs" / page).read_text()
    assert "$$" in text, f"{page} has no display math"
    assert re.search(r'\{src numpyvae/[\w/]+\.py "', text), f"{page} links to no source line"
    blocks = re.findall(r'```python exec="on"[^\n]*\n(.*?)```', text, re.S)
    assert any("assert " in block for block in blocks), f"{page} checks nothing at build time"
    exercises = text.split("## Exercises", 1)[1].split('??? question "')[1:]
    assert 2 <= len(exercises) <= 4, f"{page} has {len(exercises)} exercises"
    for exercise in exercises:
        solution = exercise.split('??? success "Solution"', 1)
        assert len(solution) == 2 and 'exec="on"' in solution[1] and "assert " in solution[1], \
            f"{page}: exercise {exercise.splitlines()[0]!r} has no solution that the build runs and checks"


PLANTED = {
    "an exception in a code block": '```python exec="on"\nassert 1 + 1 == 3, "planted"\n```\n',
    "a warning in a code block": '```python exec="on"\nimport numpy as np\nprint(np.log(np.zeros(1)))\n```\n',
    "a missing image": "![gone](figures/no-such-picture.png)\n",
    "a broken link": "[gone](no-such-chapter.md)\n",
    "a link to a source line that is not there": '{src numpyvae/losses.py "def no_such_function"}\n',
}


@pytest.mark.parametrize("planted", PLANTED)
def test_the_build_fails_on(planted, tmp_path):
    """The same configuration on a one-page site with one thing wrong: the build must fail."""
    need_mkdocs()
    import yaml
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    config["nav"] = ["index.md"]
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs" / "hooks.py", tmp_path / "docs")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    page = "# A page\n\n$$x^2$$\n\n```python exec=\"on\"\nprint(2 + 2)\n```\n\n"
    (tmp_path / "docs" / "index.md").write_text(page)
    assert build(tmp_path / "site", cwd=tmp_path).returncode == 0, "the page without the planted fault must build"
    (tmp_path / "docs" / "index.md").write_text(page + PLANTED[planted])
    done = build(tmp_path / "site", cwd=tmp_path)
    assert done.returncode != 0, f"the build passed with {planted}:\n{done.stderr[-3000:]}"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(site):
    """The built site served on 127.0.0.1 (a free port); yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()
    server.server_close()


# Math left as source text: what a reader would see if KaTeX had not typeset it.
RAW_MATH = ["$$", "\\frac", "\\mathbb", "\\mathrm", "\\sum", "\\("]
SCREENSHOTS = {"likelihoods.md", "gradients.md"}    # NUMPYVAE_DOCS_SCREENSHOTS=docs/figures keeps them


@pytest.mark.parametrize("page", chapters())
def test_every_chapter_in_a_real_browser(page, served, browser, tmp_path):
    url = served + ("" if page == "index.md" else page[:-len(".md")] + "/")
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    errors, outside = [], []
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    tab.on("pageerror", lambda error: errors.append(str(error)))

    def local_only(route):        # the site must need nothing from the network: no CDN, no web fonts
        if route.request.url.startswith(served):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()
    tab.route("**/*", local_only)
    response = tab.goto(url, wait_until="networkidle")
    assert response.ok, f"{url}: HTTP {response.status}"
    tab.wait_for_function("document.fonts.status === 'loaded'")
    if page in SCREENSHOTS:
        folder = Path(os.environ.get("NUMPYVAE_DOCS_SCREENSHOTS", tmp_path))
        tab.screenshot(path=str(folder / f"docs_{page[:-len('.md')]}.png"))
    tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")   # solutions too
    math = tab.evaluate("""() => {
        const blocks = [...document.querySelectorAll('.arithmatex')];
        return {blocks: blocks.length, typeset: blocks.filter(b => b.querySelector('.katex')).length};
    }""")
    assert math["typeset"] == math["blocks"], f"{page}: {math['blocks'] - math['typeset']} math blocks not typeset"
    text = tab.evaluate("document.body.innerText")          # the page as shown: nav, contents and article
    shown = [raw for raw in RAW_MATH if raw in text]
    assert not shown, f"{page} shows raw math source: {shown}"
    images = tab.evaluate("""() => [...document.querySelectorAll('article img')]
        .map(img => ({src: img.src, ok: img.complete && img.naturalWidth > 0}))""")
    broken = [image["src"] for image in images if not image["ok"]]
    assert not broken, f"{page}: images not loaded: {broken}"
    assert not errors, f"{page}: console errors: {errors}"
    assert not outside, f"{page} asked the network for {outside}"
    context.close()


def test_readme_is_the_front_door():
    """README: at most 200 lines, the three command markers, the Python API and the first derivation on its
    first screen, and a map that links every chapter of the site."""
    lines = README.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    for marker in ("main-command", "test-command", "docs-command", "load-run"):
        assert README.count(f"<!-- {marker} -->") == 1, marker
    extending = (REPO / "docs" / "extending.md").read_text()     # the worked extension examples live there
    for marker in ("extend-likelihood", "extend-layer"):
        assert extending.count(f"<!-- {marker} -->") == 1, marker
    first_screen = "\n".join(lines[:40])
    assert "```python" in first_screen and "loss_and_grads" in first_screen and "docs/vae.md" in first_screen
    missing = [page for page in chapters() if page != "index.md" and f"(docs/{page})" not in README]
    assert not missing, f"README's map of the chapters lacks {missing}"


def test_the_explorer_page_embeds_the_default_runs_explorer(served, browser):
    """docs/explorer.md embeds the committed explorer of the default run (docs/explorer-site): in the built site
    it loads from 127.0.0.1, and its decode is numpyvae's decode of the committed weights, to float32 precision."""
    import json
    import numpy as np
    from numpyvae import VAE
    site = REPO / "docs" / "explorer-site"
    manifest = json.loads((site / "model.json").read_text())
    assert manifest["about"].startswith("default after epoch")
    weights = manifest["weights"]
    raw = np.frombuffer((site / weights["file"]).read_bytes(), dtype="<f4")
    model = VAE(784, 400, 20, likelihood=manifest["likelihood"]["name"], backend="numpy", dtype="float64")
    for tensor in weights["tensors"]:
        start = tensor["offset"] // 4
        model.params[tensor["name"]][...] = raw[start:start + int(np.prod(tensor["shape"]))].reshape(tensor["shape"])
    z = np.linspace(-2, 2, 20)
    expected = model.decode(z[None])[0]

    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    errors = []
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(served + "explorer/", wait_until="networkidle")
    tab.locator("iframe").scroll_into_view_if_needed()
    frame = tab.locator("iframe").element_handle().content_frame()
    frame.wait_for_function("window.numpyvae !== undefined")
    decoded = frame.evaluate("async z => { await window.numpyvae.ready; return Array.from(window.numpyvae.decode("
                             "new Float32Array(z))); }", z.tolist())
    assert len(decoded) == 784
    assert np.max(np.abs(np.array(decoded) - expected)) < 1e-5
    assert not errors, f"explorer page: console errors: {errors}"
    context.close()

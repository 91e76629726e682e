"""mkdocs hooks: numpyvae's source as pages of the site, chapters' links to its lines, and the explorer's page.

A chapter writes {src numpyvae/losses.py "def gaussian_kl_backward"} and the page gets a link to the
line of numpyvae/losses.py that starts with that text (leading spaces aside), in a page of the site
that shows the file with its line numbers. The line is looked up at every build, so a link follows the
code as it moves, and a link whose text is no longer in the file fails the build instead of pointing
at the wrong line.
"""
import re
import warnings
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["numpyvae/*.py", "benchmarks/torch_reference.py"]
LINK = re.compile(r'\{src ([\w/.]+)(?: "([^"]+)")?\}')
# The default run's explorer (docs/explorer-site) commits only what `numpyvae explore` derives from the run
# (model.json, the weights and the map); its page is the package's own, copied in at every build.
EXPLORER_PAGE = REPO / "numpyvae" / "explorer"


def source_page(path):
    """The site page (under source/) that shows repository file `path`."""
    return "source/" + path.replace("/", "_") + ".md"


def line_of(path, start):
    """1-based number of the first line of `path` that starts with `start`, ignoring indentation."""
    lines = (REPO / path).read_text().splitlines()
    found = [number for number, line in enumerate(lines, 1) if line.lstrip().startswith(start)]
    if not found:
        raise PluginError(f"{{src {path} \"{start}\"}}: no line of {path} starts with that")
    return found[0]


def on_config(config):
    # A warning from a chapter's code (markdown-exec names each block's module "_code_block_...") or from
    # numpyvae under it is an error, so it fails the build as an exception in a code block does: a lesson
    # that warns (a division by zero, an overflow) has something wrong in it.
    warnings.filterwarnings("error", module=r"(_code_block|numpyvae|docs)")
    return config


def on_files(files, config):
    for pattern in SOURCES:
        for file in sorted(REPO.glob(pattern)):
            path = file.relative_to(REPO).as_posix()
            text = f"# {path}\n\n```python linenums=\"1\"\n{file.read_text()}\n```\n"
            files.append(File.generated(config, source_page(path), content=text))
    if (Path(config["docs_dir"]) / "explorer-site").is_dir():      # a site that embeds an explorer
        for asset in sorted(EXPLORER_PAGE.iterdir()):
            uri = f"explorer-site/{asset.name}"
            copied = files.get_file_from_path(uri)      # left by a rerun of `numpyvae explore`: the package's wins
            if copied is not None:
                files.remove(copied)
            files.append(File.generated(config, uri, abs_src_path=str(asset)))
    return files


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")

    def link(match):
        path, start = match.group(1), match.group(2)
        if not (REPO / path).is_file():
            raise PluginError(f"{page.file.src_uri}: {{src {path}}} names no file of the repository")
        target = "../" * depth + source_page(path)
        if start is None:
            return f"[`{path}`]({target})"
        number = line_of(path, start)
        return f"[`{path}:{number}`]({target}#__codelineno-0-{number})"
    return LINK.sub(link, markdown)


def on_page_content(html, page, config, files):
    # mkdocs collects a page's anchors before the highlighted code (stashed HTML) is put back, so
    # it would not see the line anchors the links above point at: add them, as they are in the page.
    if page.file.src_uri.startswith("source/"):
        page.present_anchor_ids |= set(re.findall(r'id="(__codelineno-[\d-]+)"', html))
    return html

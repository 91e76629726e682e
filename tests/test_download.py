"""The downloader against a real HTTP server on 127.0.0.1 that serves small IDX files and misbehaves."""
from __future__ import annotations

import collections
import socket
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from numpyvae import download as download_module
from numpyvae.datasets import ALL_FILES, DataError, load_fashion_mnist
from numpyvae.download import DownloadError, download_fashion_mnist
from numpyvae.idx import read_idx, write_idx

TIMEOUT = 0.5        # seconds; the stalled-server cases wait this long per attempt
LAST = ALL_FILES[-1]  # the file made to fail: the three before it arrive, so the test sees a mixed dir


class ScriptedHandler(BaseHTTPRequestHandler):
    """Serves server.files; each request to a path first takes the next behaviour from server.plans."""

    def do_GET(self):
        server = self.server
        server.log.append(self.path)
        behaviour = server.plans[self.path].pop(0) if server.plans[self.path] else "ok"
        body = server.files.get(self.path)
        if body is None or behaviour == "404":
            return self.send_error(404)
        if behaviour == "500":
            return self.send_error(500)
        if behaviour == "drop":
            return  # close the connection without a word
        if behaviour == "stall-before-headers":
            server.release.wait(30)
            return
        if behaviour == "wrong-file":
            body = server.wrong_file
        if behaviour == "garbage":
            body = b"<html>this is not gzip</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if behaviour == "truncate":
            self.wfile.write(body[:len(body) // 2])
            return  # the connection closes short of Content-Length
        if behaviour == "stall-mid-body":
            self.wfile.write(body[:10])
            self.wfile.flush()
            server.release.wait(30)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # keep test output clean


@pytest.fixture
def server(small_fashion_mnist, tmp_path):
    """An HTTP server on 127.0.0.1 (port chosen by the OS) serving the small dataset's four .gz files."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    httpd.daemon_threads = True
    httpd.files = {f"/{path.name}": path.read_bytes() for path in small_fashion_mnist.data_dir.iterdir()}
    write_idx(tmp_path / "wrong.gz", np.zeros((3, 28, 28), np.uint8))  # well-formed, but not the file
    httpd.wrong_file = (tmp_path / "wrong.gz").read_bytes()
    httpd.plans = collections.defaultdict(list)
    httpd.log = []
    httpd.release = threading.Event()  # frees stalled handlers at teardown
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def download(server, small, data_dir, retries=2, **options):
    return download_fashion_mnist(data_dir, base_url=server.url, timeout=TIMEOUT, retries=retries, backoff=0,
                                  checksums=small.checksums, **options)


def assert_only_verified_files(data_dir, small):
    """No temporary, partial or corrupt file: everything in data_dir is a whole, verified file."""
    for path in data_dir.iterdir():
        assert not path.name.startswith("."), f"temporary file left behind: {path.name}"
        read_idx(path, sha256=small.checksums[path.name.removesuffix(".gz")])


def requests_for(server, name):
    return server.log.count(f"/{name}.gz")


# -- when all goes well --------------------------------------------------------------

def test_downloads_the_four_files_verified(server, small_fashion_mnist, tmp_path):
    data_dir = tmp_path / "new" / "data"  # created on the way
    paths = download(server, small_fashion_mnist, data_dir)
    assert [p.name for p in paths] == [f"{name}.gz" for name in ALL_FILES]
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(p.name for p in paths)
    assert_only_verified_files(data_dir, small_fashion_mnist)
    assert len(server.log) == 4


def test_intact_files_are_kept_and_damaged_ones_replaced(server, small_fashion_mnist, tmp_path):
    data_dir = tmp_path / "data"
    download(server, small_fashion_mnist, data_dir)
    (data_dir / f"{LAST}.gz").write_bytes(b"\x1f\x8b damaged leftover")
    download(server, small_fashion_mnist, data_dir)
    assert server.log[4:] == [f"/{LAST}.gz"]  # only the damaged file was fetched again
    assert_only_verified_files(data_dir, small_fashion_mnist)


def test_loader_downloads_the_missing_split_on_first_use(server, small_fashion_mnist, tmp_path):
    images, labels = load_fashion_mnist("test", data_dir=tmp_path / "data", download=True,
                                        checksums=small_fashion_mnist.checksums, system_dir=None,
                                        base_url=server.url)
    np.testing.assert_array_equal(images, small_fashion_mnist.test[0])
    np.testing.assert_array_equal(labels, small_fashion_mnist.test[1])
    assert sorted(server.log) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]


# -- failures: each leaves only verified files, and a later good download succeeds ----------

TRANSIENT = ["500", "truncate", "drop", "stall-before-headers", "stall-mid-body"]


@pytest.mark.parametrize("failure", TRANSIENT)
def test_transient_failure_is_retried(server, small_fashion_mnist, tmp_path, failure):
    server.plans[f"/{LAST}.gz"] = [failure]
    download(server, small_fashion_mnist, tmp_path / "data", retries=1)
    assert requests_for(server, LAST) == 2
    assert_only_verified_files(tmp_path / "data", small_fashion_mnist)
    assert len(list((tmp_path / "data").iterdir())) == 4


@pytest.mark.parametrize("failure", TRANSIENT)
def test_persistent_transient_failure_leaves_nothing_behind(server, small_fashion_mnist, tmp_path, failure):
    data_dir = tmp_path / "data"
    server.plans[f"/{LAST}.gz"] = [failure] * 2
    started = time.monotonic()
    with pytest.raises(DownloadError, match="2 attempts") as caught:
        download(server, small_fashion_mnist, data_dir, retries=1)
    assert time.monotonic() - started < 10 * TIMEOUT  # a stalled server is given up on, not waited out
    assert requests_for(server, LAST) == 2
    assert LAST in str(caught.value) and "\n" not in str(caught.value)
    assert not list(data_dir.glob(f"*{LAST}*"))
    assert_only_verified_files(data_dir, small_fashion_mnist)

    download(server, small_fashion_mnist, data_dir, retries=0)
    assert_only_verified_files(data_dir, small_fashion_mnist)
    assert (data_dir / f"{LAST}.gz").exists()


@pytest.mark.parametrize("failure, message", [("404", "HTTP 404"), ("wrong-file", "SHA-256"),
                                              ("garbage", "fails verification")])
def test_permanent_failure_is_not_retried_and_leaves_nothing_behind(server, small_fashion_mnist, tmp_path,
                                                                      failure, message):
    data_dir = tmp_path / "data"
    server.plans[f"/{LAST}.gz"] = [failure]
    with pytest.raises(DownloadError, match=message):
        download(server, small_fashion_mnist, data_dir, retries=3)
    assert requests_for(server, LAST) == 1
    assert not list(data_dir.glob(f"*{LAST}*"))
    assert_only_verified_files(data_dir, small_fashion_mnist)

    download(server, small_fashion_mnist, data_dir)
    assert (data_dir / f"{LAST}.gz").exists()


def test_backoff_doubles_between_retries(server, small_fashion_mnist, tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr(download_module, "time", types.SimpleNamespace(sleep=slept.append))
    server.plans["/train-images-idx3-ubyte.gz"] = ["500", "500", "500"]
    download_fashion_mnist(tmp_path / "data", base_url=server.url, timeout=TIMEOUT, retries=3, backoff=0.25,
                           names=["train-images-idx3-ubyte"], checksums=small_fashion_mnist.checksums)
    assert slept == [0.25, 0.5, 1.0]


def test_ctrl_c_mid_download_removes_the_temporary_file(server, small_fashion_mnist, tmp_path, monkeypatch):
    class InterruptedBar:
        def __init__(self, total, name):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, count):
            raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "_progress_bar", InterruptedBar)
    data_dir = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        download(server, small_fashion_mnist, data_dir)
    assert list(data_dir.iterdir()) == []


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once, as when offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_offline_failure_lists_the_ways_to_get_the_data(small_fashion_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as caught:  # through the loader, with its default retries
        load_fashion_mnist("train", data_dir=data_dir, download=True, checksums=small_fashion_mnist.checksums,
                           system_dir=None, base_url=closed_port_url())
    message = str(caught.value)
    assert "\n" not in message
    for part in ("4 attempts", "connect to the internet", "apt-get install dataset-fashion-mnist", str(data_dir)):
        assert part in message
    assert list(data_dir.iterdir()) == []

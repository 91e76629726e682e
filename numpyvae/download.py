"""Download the Fashion-MNIST files: streamed, retried, verified, and never leaving a partial file behind.

Each file is streamed into a hidden temporary file beside its final name, checked (complete,
well-formed IDX, the right SHA-256 once decompressed), and only then renamed into place; on
any failure, Ctrl-C included, the temporary file is removed. So the data directory holds
either a verified file or nothing, and the loader never picks up half a download.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from numpyvae.atomicfile import atomic_write
from numpyvae.datafiles import ALL_FILES, SHA256, DataError, find_file, how_to_get_data
from numpyvae.idx import IDXError, read_idx

UPSTREAM = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CHUNK = 1 << 16  # bytes per read from the socket


class DownloadError(DataError):
    """A file could not be downloaded intact; the message says why and the other ways to get the data."""


class _Transient(Exception):
    """A failure that another attempt may not meet: connection trouble, a 5xx answer, a body cut short."""


def download_fashion_mnist(data_dir, base_url=UPSTREAM, timeout=30.0, retries=3, backoff=1.0, *,
                           names=ALL_FILES, checksums=SHA256):
    """Download into `data_dir` the Fashion-MNIST files it lacks; files already there and intact are kept.

    Args:
        data_dir:  directory to fill (created if missing).
        base_url:  where the NAME.gz files are; upstream by default.
        timeout:   seconds to wait for a connection, and for each read: a stalled server fails after this.
        retries:   extra attempts per file after a connection error, a 5xx answer or a truncated body.
                   A 4xx answer or a wrong file is not retried: asking again cannot fix those.
        backoff:   seconds before the first retry; doubled before each further one.
        names:     which files (without ".gz"), all four by default.
        checksums: file name -> SHA-256 of its decompressed contents.
    Returns:
        The path of each file in `names`, in order.
    Raises:
        DownloadError (a DataError) whose one-line message says what failed and how else to get the data.
    """
    import requests  # here, not at the top: `import numpyvae` must not pull in requests

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with requests.Session() as session:
        for name in names:
            present = find_file(data_dir, name)
            if present is not None and _is_intact(present, checksums[name]):
                paths.append(present)
                continue
            target = data_dir / f"{name}.gz"
            url = f"{base_url.rstrip('/')}/{name}.gz"
            _fetch_with_retries(session, url, target, checksums[name], timeout, retries, backoff)
            paths.append(target)
    return paths


def _is_intact(path, sha256):
    try:
        read_idx(path, sha256=sha256)
    except IDXError:
        return False  # a damaged leftover: download over it
    return True


def _fetch_with_retries(session, url, target, sha256, timeout, retries, backoff):
    """Call _fetch until it succeeds, sleeping backoff, 2*backoff, 4*backoff... between transient failures."""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            return _fetch(session, url, target, sha256, timeout)
        except _Transient as error:
            reason = error
    attempts = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
    raise DownloadError(f"could not download {url} ({attempts}; last: {reason}). "
                        f"{how_to_get_data(target.parent)}")


def _fetch(session, url, target, sha256, timeout):
    """One attempt: stream `url` to a temporary file, verify it, move it to `target`."""
    import requests

    def verify(temp_path):
        try:
            read_idx(temp_path, sha256=sha256)
        except IDXError as error:
            raise DownloadError(f"{url} sent a file that fails verification, so it was discarded "
                                f"({error}). {how_to_get_data(target.parent)}") from error

    try:
        response = session.get(url, stream=True, timeout=timeout)
    except requests.RequestException as error:
        raise _Transient(_describe(error)) from error
    with response:
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code} {response.reason}")
        if response.status_code != 200:
            raise DownloadError(f"could not download {url}: HTTP {response.status_code} {response.reason}. "
                                f"{how_to_get_data(target.parent)}")
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        received = 0
        with atomic_write(target, check=verify) as file, _progress_bar(expected, target.name) as bar:
            try:
                for chunk in response.iter_content(_CHUNK):
                    file.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except requests.RequestException as error:  # reset, stalled past timeout, cut mid-chunk
                raise _Transient(f"connection lost after {received} bytes ({_describe(error)})") from error
            if expected is not None and received != expected:
                raise _Transient(f"body cut short: {received} of {expected} bytes")


def _describe(error):
    """A requests error in a few words: its type and the underlying cause."""
    cause = error.args[0] if error.args else error
    cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the real cause
    return f"{type(error).__name__}: {cause}"


def _progress_bar(total, name):
    """A tqdm byte counter on stderr; silent when stderr is not a terminal, and under CI."""
    from tqdm import tqdm  # lazily, like requests

    quiet = True if os.environ.get("CI", "").lower() == "true" else None  # None: tqdm checks for a TTY
    return tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, disable=quiet)

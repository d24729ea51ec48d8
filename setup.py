"""The long description PyPI shows: README.md with its relative links made absolute.

Everything else is in pyproject.toml. README.md links into the repository (`docs/cli.md`, `examples/...`) by
relative paths, which work on GitHub and in a checkout but not on PyPI; here each relative link target becomes
an address in the repository (README.md itself is not changed). pyproject.toml lists `readme` as dynamic so
that setuptools takes it from here.
"""
import re
from pathlib import Path

from setuptools import setup

# Where relative links point on PyPI: files (blob), and images (raw, so that PyPI can show them).
REPOSITORY = "https://github.com/f4load/f4load"
BLOB = REPOSITORY + "/blob/main/"
RAW = "https://raw.githubusercontent.com/f4load/f4load/main/"

# [text](target) and ![alt](target), optionally with a "title"; and reference definitions `[label]: target`.
INLINE_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^(?P<label> {0,3}\[[^\]]+\]:[ \t]*)(?P<target>\S+)", re.MULTILINE)


def is_relative(target: str) -> bool:
    return not re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|#|/)", target)


def absolute(target: str, image: bool = False) -> str:
    if not is_relative(target):
        return target
    return (RAW if image else BLOB) + re.sub(r"^\./", "", target)


def long_description(readme: str) -> str:
    readme = INLINE_LINK.sub(lambda m: f"{m['bang']}[{m['text']}]({absolute(m['target'], bool(m['bang']))}"
                                       f"{m['title'] or ''})", readme)
    return REFERENCE.sub(lambda m: m["label"] + absolute(m["target"]), readme)


setup(
    long_description=long_description((Path(__file__).resolve().parent / "README.md").read_text(encoding="utf-8")),
    long_description_content_type="text/markdown",
)

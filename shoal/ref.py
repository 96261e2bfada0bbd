"""``ModelRef``: ``[host[:port]/][namespace/]name[:tag]``, parsed by ollama's rules.

ollama's ``ParseName`` (types/model/name.go) decides, and shoal follows it so that a
name means the same model to both:

- ``http://`` or ``https://`` in front is dropped; what is left is 1 to 128 bytes.
- Scanned from the right: a ``:`` after the last ``/`` starts the tag; then up to three
  ``/``-separated parts: ``name``, ``namespace/name`` or ``host/namespace/name``. Two
  parts are always namespace and name (``localhost/tiny`` is namespace ``localhost``),
  never a host.
- Every part is non-empty and of ``A-Z a-z 0-9 _ - .``; a namespace has no ``.``; only
  the host may hold ``:`` (its port). Two dots in a row anywhere are refused.
- Missing parts are ``registry.ollama.ai``, ``library`` and ``latest``.

shoal is stricter in four ways, each a name ollama takes but shoal cannot use: a
``+build`` or ``@digest`` suffix (shoal names a tag), a part that is a lone ``.`` (it is
a path segment in stores and exports), a host that is not ``hostname[:port]`` (it
becomes a URL), and a name longer than 128 bytes written out in full
(``library/<128 bytes>`` would not parse back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.errors import InvalidRef

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MAX_REF_LEN = 128  # ollama's MaxNamePartLen, which bounds the whole name
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*"
)
_NAME_BYTES = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_NAMESPACE_BYTES = _NAME_BYTES - {"."}
_HINT = "expected [host[:port]/][namespace/]name[:tag], e.g. 'deepseek-r1:7b'"


@dataclass(frozen=True, slots=True, order=True)
class ModelRef:
    """A validated model reference; build one with ``ModelRef.parse``."""

    host: str
    namespace: str
    name: str
    tag: str

    def __post_init__(self) -> None:
        _check_host(self.host, self.host)
        for what, value in (("namespace", self.namespace), ("name", self.name), ("tag", self.tag)):
            _check_part(what, value, value)
        if len(str(self).encode()) > MAX_REF_LEN:  # it must parse back, here and in ollama
            raise InvalidRef(
                f"model reference {str(self)!r} is longer than {MAX_REF_LEN} bytes written out",
                "use a shorter name, namespace or tag",
            )

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse a reference; raises ``InvalidRef`` saying which part is wrong."""
        if not isinstance(text, str) or not text:
            raise InvalidRef("empty model reference", _HINT)
        name = text.removeprefix("http://") if text.startswith("http://") else text
        name = name.removeprefix("https://")
        if not name:
            raise InvalidRef(f"model reference {text!r} has no name", _HINT)
        if len(name.encode()) > MAX_REF_LEN:
            raise InvalidRef(f"model reference longer than {MAX_REF_LEN} bytes", _HINT)
        if "+" in name or "@" in name:
            raise InvalidRef(
                f"model reference {text!r} has a '+build' or '@digest' part",
                "shoal names models by tag: drop what follows '+' or '@'",
            )
        if ".." in name:
            raise InvalidRef(f"model reference {text!r} has two dots in a row", _HINT)
        rest, tag = name, DEFAULT_TAG
        colon = name.rfind(":")
        if colon > name.rfind("/"):
            rest, tag = name[:colon], name[colon + 1 :]
            if ":" in rest[rest.rfind("/") + 1 :]:
                raise InvalidRef(
                    f"model reference {text!r} has more than one ':tag'",
                    "give one tag, after the name: 'name:tag'",
                )
        parts = rest.split("/")
        if len(parts) > 3:
            raise InvalidRef(
                f"model reference {text!r} has {len(parts)} '/' parts, at most 3", _HINT
            )
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 3:
            host, namespace, model = parts
        elif len(parts) == 2:
            namespace, model = parts
        else:
            (model,) = parts
        _check_host(host, text)
        _check_part("namespace", namespace, text)
        _check_part("name", model, text)
        _check_part("tag", tag, text)
        return cls(host, namespace, model, tag)

    @property
    def short(self) -> str:
        """``namespace/name:tag``, the form shown to users and used in manifests."""
        return f"{self.namespace}/{self.name}:{self.tag}"

    @property
    def ollama_path(self) -> str:
        """Where ollama keeps this model's manifest under ``manifests/``: the four parts
        lowercased, as ollama's ``Name.Filepath`` writes and looks them up."""
        return "/".join(p.lower() for p in (self.host, self.namespace, self.name, self.tag))

    @property
    def slug(self) -> str:
        """``name-tag``: one safe path segment (output dirs, torrent names)."""
        return f"{self.name}-{self.tag}"

    def __str__(self) -> str:
        if self.host == DEFAULT_HOST:
            return self.short
        return f"{self.host}/{self.short}"


def _check_host(host: str, text: str) -> None:
    name, sep, port = host.partition(":")
    ok = bool(_HOST.fullmatch(name)) and len(host) <= 253
    if sep:
        ok = ok and port.isascii() and port.isdigit() and 0 < int(port) < 65536 and port[0] != "0"
    if not ok:
        raise InvalidRef(
            f"invalid host {host!r} in model reference {text!r}",
            "a host is a name or address with an optional :port",
        )


def _check_part(what: str, value: str, text: str) -> None:
    if not value:
        raise InvalidRef(f"empty {what} in model reference {text!r}", _HINT)
    allowed = _NAMESPACE_BYTES if what == "namespace" else _NAME_BYTES
    if not allowed.issuperset(value) or value == "." or ".." in value:
        rule = (
            "letters, digits, '_' or '-'"
            if what == "namespace"
            else ("letters, digits, '_', '-' or '.' (not '..', not a lone '.')")
        )
        raise InvalidRef(
            f"invalid {what} {value!r} in model reference {text!r}", f"a {what} holds {rule}"
        )

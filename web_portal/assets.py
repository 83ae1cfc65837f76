"""The portal's static files under versioned URLs, cached by browsers and proxies for a year.

``portal.js`` is served as ``/static/portal.<hash>.js``, the hash taken from its content when
the app is built: a new release changes the URL, so a file can be cached as immutable and the
page (never cached) always names the current one. A name that is not the current version of a
file (an old hash, the bare name, anything else) is a plain 404.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

PREFIX = "/static"
IMMUTABLE = "public, max-age=31536000, immutable"
HASH_LENGTH = 16  # hex digits of SHA-256: 64 bits, no two releases of a file collide


def versioned(name: str, content: bytes) -> str:
    """``portal.js`` -> ``portal.<hash>.js`` (the hash goes before the last suffix, so the
    served name keeps the type a proxy or a browser may infer from it)."""
    digest = hashlib.sha256(content).hexdigest()[:HASH_LENGTH]
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{digest}.{suffix}" if dot and stem else f"{name}.{digest}"


@dataclass(frozen=True)
class Assets:
    """The files of one folder (not its subfolders), each under its versioned name."""

    urls: dict[str, str]  # "portal.js" -> "/static/portal.<hash>.js"
    files: dict[str, Path]  # "portal.<hash>.js" -> the file

    @classmethod
    def scan(cls, folder: Path) -> "Assets":
        urls: dict[str, str] = {}
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                served = versioned(path.name, path.read_bytes())
                urls[path.name] = f"{PREFIX}/{served}"
                files[served] = path
        return cls(urls, files)

    def url(self, name: str) -> str:
        """The URL a page uses for the file ``name`` (a KeyError names a missing file)."""
        return self.urls[name]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        path = self.files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": IMMUTABLE})

    def route(self) -> web.RouteDef:
        return web.get(PREFIX + "/{name}", self.serve)

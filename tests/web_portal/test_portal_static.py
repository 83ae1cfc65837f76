"""Static files under versioned URLs, cached for a year; the page itself never cached."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.web_portal.conftest import Portal
from web_portal.assets import IMMUTABLE

STATIC = Path(__file__).resolve().parents[2] / "web_portal" / "static"
ASSET = re.compile(r'(?:href|src)="(/static/[^"]+)"')


async def page_assets(portal: Portal) -> dict[str, str]:
    """The static URLs the portal page names, by the file they stand for."""
    response = await (await portal.visitor()).client.get("/")
    assert response.status == 200
    urls = ASSET.findall(await response.text())
    named = {}
    for url in urls:
        stem, digest, suffix = url.removeprefix("/static/").rsplit(".", 2)
        named[f"{stem}.{suffix}"] = url
        assert re.fullmatch(r"[0-9a-f]{16}", digest), url
    assert set(named) == {"portal.js", "portal.css", "icon.svg"}
    return named


async def test_the_page_is_never_cached_and_names_each_file_by_its_content_hash(
    portal: Portal,
) -> None:
    response = await (await portal.visitor()).client.get("/")
    assert response.headers["Cache-Control"] == "no-store"
    for name, url in (await page_assets(portal)).items():
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:16]
        assert url == f"/static/{name.rsplit('.', 1)[0]}.{digest}.{name.rsplit('.', 1)[1]}"


@pytest.mark.parametrize(
    "name, content_type",
    [
        ("portal.js", "text/javascript"),
        ("portal.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ],
)
async def test_a_versioned_file_is_served_as_immutable_for_a_year(
    portal: Portal, name: str, content_type: str
) -> None:
    client = (await portal.visitor()).client
    url = (await page_assets(portal))[name]
    response = await client.get(url)
    assert response.status == 200
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert response.content_type in (content_type, "application/javascript")
    assert await response.read() == (STATIC / name).read_bytes()
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # a browser that revalidates anyway gets a 304 that keeps the caching
    again = await client.get(url, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304 and again.headers["Cache-Control"] == IMMUTABLE


@pytest.mark.parametrize(
    "path",
    [
        "/static/portal.js",  # unversioned
        "/static/portal.0123456789abcdef.js",  # a release ago
        "/static/portal.css.js",
        "/static/nothing.0123456789abcdef.png",
        "/static/",
        "/static/.gitignore",
    ],
)
async def test_an_old_or_unknown_static_url_is_a_plain_404_never_cached(
    portal: Portal, path: str
) -> None:
    response = await (await portal.visitor()).client.get(path)
    assert response.status == 404
    text = await response.text()
    assert text == "404 Not Found" and "Traceback" not in text
    assert response.headers["Cache-Control"] == "no-store"

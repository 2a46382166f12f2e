"""Draw a concept's emoji from an `@iconify-json` set as a cropped RGBA picture.

The sets are npm packages (package.json at the repository root; `npm ci` installs them into
node_modules/). Each holds every icon's SVG body in one `icons.json`; an icon becomes a standalone SVG
and resvg-py rasterises it. Aliases (a name pointing at another icon, perhaps flipped) are followed.
"""
from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from pathlib import Path

from PIL import Image

from extract.demo.concepts import ARTWORK_SETS, DemoConcept

REPO_ROOT = Path(__file__).resolve().parents[2]
RENDER_SIZE = 256  # rasterise at the corpus image size; scenes scale down from here


class ArtworkMissing(ValueError):
    """An artwork set (npm package) or an icon in it is not there."""


def node_modules_dirs() -> list[Path]:
    """Where the sets may be installed: $VGSME_NODE_MODULES, the repository root, the working directory."""
    dirs = [Path(p) for p in [os.environ.get("VGSME_NODE_MODULES", "")] if p]
    return dirs + [REPO_ROOT / "node_modules", Path.cwd() / "node_modules"]


def set_dir(set_key: str) -> Path:
    for base in node_modules_dirs():
        d = base / "@iconify-json" / set_key
        if (d / "icons.json").is_file():
            return d
    raise ArtworkMissing(
        f"the artwork set @iconify-json/{set_key} is not installed (looked in "
        f"{', '.join(str(b) for b in node_modules_dirs())}). `make demo` installs it; or run "
        f"`npm ci` in {REPO_ROOT} (node and npm from Debian: `apt-get install -y npm`).")


def check_artwork(set_keys: list[str]) -> None:
    """Fail before building when any set is missing, naming all of them at once."""
    missing = []
    for key in set_keys:
        try:
            set_dir(key)
        except ArtworkMissing:
            missing.append(f"@iconify-json/{key}")
    if missing:
        raise ArtworkMissing(f"the demo corpus needs the npm packages {', '.join(missing)}. `make demo` installs "
                             f"them; or run `npm ci` in {REPO_ROOT} (node and npm: `apt-get install -y npm`).")


def set_version(set_key: str) -> str:
    return json.loads((set_dir(set_key) / "package.json").read_text())["version"]


@lru_cache(maxsize=1)
def _load_set(set_key: str) -> dict:
    return json.loads((set_dir(set_key) / "icons.json").read_text())


def has_icon(set_key: str, name: str) -> bool:
    data = _load_set(set_key)
    return name in data["icons"] or name in data.get("aliases", {})


def icon_svg(set_key: str, name: str) -> str:
    """A standalone SVG for one icon (following aliases and their flips/rotations)."""
    data = _load_set(set_key)
    icons, aliases, extra = data["icons"], data.get("aliases", {}), {}
    seen = set()
    while name not in icons:
        if name not in aliases or name in seen:
            raise ArtworkMissing(f"@iconify-json/{set_key} has no icon {name!r}")
        seen.add(name)
        alias = aliases[name]
        extra = {**{k: v for k, v in alias.items() if k != "parent"}, **extra}
        name = alias["parent"]
    icon = {**icons[name], **extra}
    w, h = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
    left, top = icon.get("left", data.get("left", 0)), icon.get("top", data.get("top", 0))
    body = icon["body"]
    if icon.get("hFlip"):
        body = f'<g transform="translate({w + 2 * left} 0) scale(-1 1)">{body}</g>'
    if icon.get("vFlip"):
        body = f'<g transform="translate(0 {h + 2 * top}) scale(1 -1)">{body}</g>'
    if icon.get("rotate"):
        cx, cy = left + w / 2, top + h / 2
        body = f'<g transform="rotate({90 * icon["rotate"]} {cx} {cy})">{body}</g>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{body}</svg>')


def render_icon(set_key: str, name: str, size: int = RENDER_SIZE) -> Image.Image:
    """Rasterise an icon to RGBA at `size` px and crop it to its visible pixels."""
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=icon_svg(set_key, name), width=size, height=size)
    image = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ArtworkMissing(f"@iconify-json/{set_key} icon {name!r} renders empty")
    return image.crop(box)


def allowed_sets(concept: DemoConcept) -> list[str]:
    """The sets that may draw `concept` (before checking that they have the icon), in the table's order."""
    return [s.key for s in ARTWORK_SETS if (not concept.only_sets or s.key in concept.only_sets)
            and s.key not in concept.skip_sets]


def render_set(set_key: str, concepts: tuple[DemoConcept, ...], size: int = RENDER_SIZE) -> dict[str, bytes]:
    """Every concept that `set_key` draws, as cropped RGBA PNG bytes keyed by concept name.

    One call per set, so that a worker parses each set's (up to 99 MB) JSON once.
    """
    out = {}
    for concept in concepts:
        name = concept.icon_name(set_key)
        if set_key in allowed_sets(concept) and has_icon(set_key, name):
            buf = io.BytesIO()
            render_icon(set_key, name, size).save(buf, format="PNG")
            out[concept.name] = buf.getvalue()
    _load_set.cache_clear()
    return out

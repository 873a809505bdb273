"""Headless-Chromium screenshots of the HTML report, to check visually that it renders."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

_NAMES = ("chromium", "chromium-browser", "google-chrome")
_FALLBACK = Path("/usr/bin/chromium")


def find_chromium() -> str | None:
    """Path of a Chromium-family browser on PATH (or /usr/bin/chromium), None when there is none."""
    for name in _NAMES:
        if found := shutil.which(name):
            return found
    return str(_FALLBACK) if _FALLBACK.is_file() else None


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2000, timeout: float = 90.0) -> Path:
    """Render `html` in headless Chromium into `png` (width x height pixels); RuntimeError with stderr on failure."""
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no chromium / chromium-browser / google-chrome found")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="toolgym-chromium-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            Path(html).resolve().as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            raise RuntimeError(f"chromium timed out after {timeout}s: {stderr.strip()}") from None
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return png

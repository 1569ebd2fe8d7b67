"""Take docs/web.png: ``dsvl-chat web`` on a tiny random checkpoint, in headless Chromium, a picture attached.

    python tests/web/make_screenshot.py [OUT.png]

Needs /usr/bin/chromium and playwright, like the browser tests. The tiny model's
answers are noise, so the picture shows the app before a question is sent: the
uploaded picture's half-block preview, the question typed, the status bar.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ANSI = re.compile(r"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]|\x1b[=>78]")


def picture(path: Path) -> None:
    """A sunset: a sky gradient, a sun and a sea."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 200))
    draw = ImageDraw.Draw(image)
    for y in range(200):
        t = y / 130
        colour = (int(40 + 215 * t), int(40 + 100 * t), int(120 - 60 * t)) if y < 130 else (20, 50, 90 + (y - 130))
        draw.line([(0, y), (320, y)], fill=colour)
    draw.ellipse([130, 80, 190, 140], fill=(255, 210, 90))
    draw.rectangle([0, 130, 320, 200], fill=(25, 60, 110))
    image.save(path)


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from dsvl_tui.web.launcher import free_port
    from engine.testing.random_checkpoints import write_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        model = write_checkpoint(home / "tiny", tower="siglip", size="tiny", seed=7)
        sunset = home / "sunset.png"
        picture(sunset)
        env = {**os.environ, "DSVL_DATA_DIR": str(home / "data"), "DSVL_CONFIG_DIR": str(home / "config"),
               "PYTHONPATH": str(ROOT)}
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "dsvl_tui.cli", "web", "--model", str(model),
                                "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert web.stdout is not None
            url = web.stdout.readline().strip()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1100, "height": 620})
                frames: list[str] = []
                page.on("websocket", lambda socket: socket.on("framereceived", lambda frame: frames.append(
                    frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))))
                page.goto(url)

                def wait(text: str) -> None:
                    for _ in range(600):
                        if text in ANSI.sub("", "".join(frames)):
                            return
                        page.wait_for_timeout(100)
                    raise SystemExit(f"the page never showed {text!r}")

                wait("ready")
                page.mouse.click(550, 560)
                with page.context.expect_page() as opened:
                    page.keyboard.type("/upload")
                    page.keyboard.press("Enter")
                upload = opened.value
                upload.wait_for_load_state()
                upload.set_input_files("#files", str(sunset))
                upload.click("button[type=submit]")
                upload.wait_for_load_state()
                upload.close()
                wait("attached sunset.png")
                page.keyboard.type("What time of day is it in this picture?")
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            web.send_signal(signal.SIGINT)
            web.wait(30)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run as a file: the project's packages from this checkout
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "web.png")

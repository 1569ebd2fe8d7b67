"""The HTML of the web server's pages: self-contained (no outside resources), filled in with ``str.format``."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title} - dsvl-chat</title>
<style>
body {{ background: #0c181f; color: #e8eef2; font: 16px/1.5 menlo, "DejaVu Sans Mono", monospace; margin: 0; }}
main {{ max-width: 40em; margin: 10vh auto; padding: 1.5em 2em; background: #12232d; }}
h1 {{ font-size: 1.3em; }}
#drop {{ border: 2px dashed #5e7e91; padding: 2em 1em; text-align: center; margin: 1em 0; }}
#drop.over {{ border-color: #ac5af4; background: #1b3140; }}
button {{ padding: .6em 1.6em; background: #5e0ba7; color: #fff; border: none; font: inherit; cursor: pointer; }}
.ok {{ color: #8fe388; }} code {{ color: #ffd27f; }}
</style></head>
<body><main><h1>{title}</h1>
{body}
</main></body></html>
"""

SIGN_IN = """<p>Open the address that <code>dsvl-chat web</code> printed (it ends in <code>?token=...</code>),
or give the token it was started with:</p>
<form method="get" action="/"><input type="password" name="token" autocomplete="current-password" autofocus>
<button type="submit">Open</button></form>
"""

UPLOAD_FORM = """<form id="form" method="post" action="{action}" enctype="multipart/form-data">
<div id="drop">Drop files here, or<br><br><input id="files" type="file" name="file" multiple></div>
<p>Images are attached to the chat tab that opened this page, with the same checks as <code>/image</code>.
Up to {limit} MiB in all.</p>
<button type="submit">Send</button>
</form>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("files");
for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, e => {{
  e.preventDefault(); drop.classList.add("over"); }});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {{
  e.preventDefault(); input.files = e.dataTransfer.files; document.getElementById("form").submit(); }});
</script>
"""

# textual-serve's page, less its web fonts (the same Roboto Mono comes from its own static folder) and
# its start button and "ping" (used for hosted apps only), plus a script that gives the terminal the
# keyboard focus on load (textual-serve's page waits for a click).
INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dsvl-chat</title>
<link rel="stylesheet" href="/static/css/xterm.css">
<script src="/static/js/textual.js"></script>
<style>
@font-face {{ font-family: "Roboto Mono"; font-style: normal; font-weight: 100 700;
  src: url("/static/fonts/RobotoMono-VariableFont_wght.ttf") format("truetype"); }}
@font-face {{ font-family: "Roboto Mono"; font-style: italic; font-weight: 100 700;
  src: url("/static/fonts/RobotoMono-Italic-VariableFont_wght.ttf") format("truetype"); }}
body {{ background: #0c181f; }}
.dialog-container {{ position: absolute; width: 100vw; height: 100vh; display: flex; align-items: center;
  justify-content: center; z-index: 10; }}
.shade {{ position: absolute; width: 100%; height: 100%; background: #0c181f; }}
.intro {{ width: 640px; height: 240px; font-size: 16px; z-index: 20; font-family: "Roboto Mono", menlo, monospace;
  text-align: center; color: rgba(255, 255, 255, 0.95); background-color: #12232d; display: flex;
  flex-direction: column; align-items: center; justify-content: center; margin: 32px; }}
body.-first-byte .intro-dialog, body.-first-byte .intro-dialog .shade {{ opacity: 0; display: none; }}
body .textual-terminal {{ opacity: 0; transition: opacity 0.3s ease-out; }}
body.-first-byte .textual-terminal {{ opacity: 1; transition: opacity 0.3s ease-out; }}
button {{ padding: 16px 32px; background-color: #5e0ba7; color: rgba(255, 255, 255, 0.95); border: none;
  font-family: "Roboto Mono", menlo, monospace; margin: 16px; cursor: pointer; }}
.closed-dialog {{ opacity: 0; display: none; }}
body.-closed .closed-dialog {{ opacity: 1; display: flex; }}
</style>
</head>
<body>
<div class="dialog-container intro-dialog"><div class="shade"></div>
  <div class="intro">dsvl-chat: starting...</div></div>
<div class="dialog-container closed-dialog"><div class="shade"></div>
  <div class="intro"><div class="message">Session ended.</div>
  <button type="button" onclick="window.location.reload()">Restart</button></div></div>
<div id="terminal" class="textual-terminal" data-session-websocket-url="{ws}" data-font-size="{font_size}"></div>
<script>
// Typing works before any click: the terminal's input (xterm.js's textarea, made by textual.js in its
// window.onload) takes the keyboard focus once the page has loaded, and again when the app first draws.
function focusTerminal() {{
  const input = document.querySelector("#terminal .xterm-helper-textarea");
  if (input && document.activeElement !== input) input.focus();
}}
window.addEventListener("load", focusTerminal);
const firstDraw = new MutationObserver(() => {{
  if (document.body.classList.contains("-first-byte")) {{ firstDraw.disconnect(); focusTerminal(); }}
}});
firstDraw.observe(document.body, {{attributes: true, attributeFilter: ["class"]}});
</script>
</body>
</html>
"""

__all__ = ["INDEX", "PAGE", "SIGN_IN", "UPLOAD_FORM"]

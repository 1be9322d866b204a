"""The page: one HTML document, inline CSS and JavaScript, nothing loaded from another machine.

The script posts the chosen file to /v1/predict?explain=1 and draws the answer: verdict, P(fake),
threshold (and calibration), the face crops with their heatmaps, a bar chart of per-frame scores
(inline SVG) and the time taken. Upload progress, then a running clock while the server works.
Element ids (#file, #status, #verdict, #probability, ...) are what the browser test reads.

The model's name and threshold.json's text come from files anyone may have written, so `render` fills
the template in one pass (a value is never searched for placeholders) and escapes each value once for
where it goes: HTML text, or JSON inside a <script> element (every <, > and & as a \\u escape, so no
"</script>" or "<!--" can end it). The Content-Security-Policy lets only the page's own style and script
run, named by their SHA-256 (they are constants), so HTML that got in anyway could run nothing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re

_STYLE = """body{font-family:system-ui,sans-serif;max-width:880px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.4em;margin-bottom:.2em} .muted{color:#666;font-size:.9em}
#drop{border:2px dashed #999;border-radius:8px;padding:1.6em;text-align:center;margin:1em 0;cursor:pointer}
#drop.over{background:#eef5ff;border-color:#36c}
#status{min-height:1.4em} progress{width:100%;height:.8em}
#result{display:none;border-top:1px solid #ddd;margin-top:1em;padding-top:.6em}
#verdict{font-size:1.8em;font-weight:700} .fake{color:#c0392b} .real{color:#1e8449} .error{color:#c0392b}
#crops img{width:96px;height:96px;image-rendering:pixelated;margin:2px;border-radius:3px}
table{border-collapse:collapse} td{padding:1px 10px 1px 0}
"""

_SCRIPT = """const model = JSON.parse(document.getElementById('model').textContent);
const $ = id => document.getElementById(id);
let clock = null;
function status(text, cls) { $('status').textContent = text; $('status').className = cls || ''; }
function chart(scores, threshold) {
  const w = 640, h = 140, n = scores.length, bar = Math.min(w / Math.max(n, 1), 48);
  let svg = `<svg width="${w}" height="${h + 20}" role="img">`;
  scores.forEach((s, i) => { const bh = s * h;
    svg += `<rect x="${i * bar + 1}" y="${h - bh}" width="${Math.max(bar - 2, 1)}" height="${bh}"
      fill="${s >= threshold ? '#c0392b' : '#1e8449'}"><title>frame ${i}: ${s.toFixed(3)}</title></rect>`; });
  const ty = h - threshold * h;
  svg += `<line x1="0" x2="${w}" y1="${ty}" y2="${ty}" stroke="#000" stroke-dasharray="4"/>`;
  svg += `<text x="2" y="${h + 15}" font-size="11">threshold ${threshold.toFixed(3)}`
    + `${n > 1 ? `; ${n} frames` : ''}</text></svg>`;
  return svg;
}
function show(entry, code) {
  clearInterval(clock); $('progress').hidden = true; $('result').style.display = 'block';
  if (entry.error) {
    $('verdict').textContent = 'Cannot score this file'; $('verdict').className = 'error';
    status(`${code}: ${entry.error}`, 'error');
    ['probability', 'threshold', 'frames', 'seconds', 'crops', 'chart'].forEach(id => $(id).innerHTML = '');
    return;
  }
  $('verdict').textContent = entry.label.toUpperCase(); $('verdict').className = entry.label;
  $('probability').textContent = entry.fake_probability.toFixed(4) + (entry.temperature ? ' (calibrated)' : '');
  $('threshold').textContent = entry.threshold.toFixed(4);
  $('frames').textContent = entry.frames_used;
  $('seconds').textContent = entry.seconds.toFixed(2) + ' s';
  $('crops').innerHTML = entry.crops.map((src, i) => `<img src="${src}" alt="frame ${i}">`).join('');
  const scores = entry.frame_scores || [entry.fake_probability];
  $('chart-title').textContent = entry.frame_scores ? 'Per-frame P(fake)'
    : (entry.kind === 'video' ? 'P(fake) of the clip (the video model scores all frames together)' : 'P(fake)');
  $('chart').innerHTML = chart(scores, entry.threshold);
  status(`${entry.path}: done`, 'done');
}
function send(file) {
  if (!file) return;
  if (file.size > model.max_upload_mb * 1048576) {
    show({error: `the file is larger than the server's limit of ${model.max_upload_mb} MB`}, 413); return; }
  $('result').style.display = 'none';
  const form = new FormData(); form.append('file', file);
  const request = new XMLHttpRequest(); const started = performance.now();
  request.open('POST', '/v1/predict?explain=1');
  $('progress').hidden = false; $('progress').removeAttribute('value');
  request.upload.onprogress = e => { if (e.lengthComputable) {
    $('progress').max = e.total; $('progress').value = e.loaded;
    status(`Uploading ${file.name}: ${Math.round(100 * e.loaded / e.total)}%`); } };
  request.upload.onload = () => { $('progress').removeAttribute('value');
    clock = setInterval(() => status(`Scoring ${file.name}... ${((performance.now() - started) / 1000).toFixed(1)} s`,
                                     'working'), 100); };
  request.onload = () => { let entry; try { entry = JSON.parse(request.responseText); }
    catch (e) { entry = {error: request.responseText || request.statusText}; } show(entry, request.status); };
  request.onerror = () => show({error: 'the server did not answer'}, 0);
  status(`Uploading ${file.name}...`, 'working'); request.send(form);
}
$('file').addEventListener('change', e => send(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => {
  e.preventDefault(); drop.classList.remove('over'); send(e.dataTransfer.files[0]); });
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dfd: is this face real?</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>__STYLE__</style></head><body>
<h1>dfd &mdash; is this face real or AI-generated?</h1>
<div class="muted">Model <b>__NAME__</b> (__KIND__ model), threshold __THRESHOLD____CALIBRATION__.
Files are scored on this machine and deleted after the answer; nothing leaves it.</div>
<div id="drop">Drop an image or a video here, or <label><u>choose a file</u>
<input id="file" type="file" accept="image/*,video/*" hidden></label></div>
<div id="status"></div><progress id="progress" hidden></progress>
<div id="result">
 <div id="verdict"></div>
 <table><tr><td>P(fake)</td><td id="probability"></td></tr>
 <tr><td>threshold</td><td id="threshold"></td></tr>
 <tr><td>frames</td><td id="frames"></td></tr>
 <tr><td>time</td><td id="seconds"></td></tr></table>
 <h3>Face crops <span class="muted">(heatmap: where the model saw evidence of a fake)</span></h3>
 <div id="crops"></div>
 <h3 id="chart-title">Per-frame P(fake)</h3><div id="chart"></div>
</div>
<script id="model" type="application/json">__MODEL__</script>
<script>__SCRIPT__</script></body></html>
"""


_PLACEHOLDER = re.compile(r"__([A-Z]+)__")
_JSON_IN_SCRIPT = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# img-src data: the face crops arrive as PNG data URIs; connect-src 'self': the upload. Nothing else.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
                           "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")


def render(description: dict) -> str:
    calibration = description.get("calibration")
    note = f", calibrated P(fake) (temperature {calibration['temperature']:.3f})" if calibration else ""
    values = {
        "STYLE": _STYLE, "SCRIPT": _SCRIPT,   # constants, allowed by their hashes: nothing around them
        "NAME": html.escape(str(description["name"])),
        "KIND": html.escape(str(description["kind"])),
        "THRESHOLD": html.escape(f"{description['threshold']:.4f}"),
        "CALIBRATION": html.escape(note),
        "MODEL": json.dumps(description).translate(_JSON_IN_SCRIPT),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], _PAGE)

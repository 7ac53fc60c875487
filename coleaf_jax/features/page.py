"""One self-contained HTML page per parsed video: the player and its event timeline.

``OUTPUT/pages/<id>.html`` shows the video (linked by a path relative to the
page, nothing copied) with one timeline row per class that has an event;
bars are coloured by type (audible-only, visible-only, audible-visible), a
click on a bar (or on an event in the table below) seeks the video to the
event's onset and plays it, and a playhead follows the video.

Names come from file names and may hold anything: the text is HTML-escaped,
the video's address percent-encoded, and the events' JSON in its ``<script>``
element has ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\uXXXX``
escapes (:func:`script_json`), so no name can end the element or open a
comment in it. A video's warnings (a file that held less than its header
declared) are shown above the player.
"""

from __future__ import annotations

import html
import json
import os
import urllib.parse

from coleaf_jax import fileio
from coleaf_jax.evaluation.parsing import EVENT_TYPES

TYPE_COLOURS = {"audible-only": "#1f77b4", "visible-only": "#2ca02c", "audible-visible": "#d62728"}
BROWSER_CONTAINERS = (".mp4", ".m4v", ".webm", ".ogv", ".ogg", ".mov")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;margin:0 0 4px}.meta{color:#666;font-size:13px;margin-bottom:12px}
video{width:100%;max-height:360px;background:#000;border-radius:4px}
.note{background:#fff6d6;border:1px solid #e8d48a;padding:6px 10px;font-size:13px;margin:8px 0}
.timeline{position:relative;margin-top:12px;user-select:none}
.row{display:flex;align-items:center;height:24px;border-bottom:1px solid #eee}
.label{width:190px;flex:none;font-size:13px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;padding-right:8px}
.track{position:relative;flex:1;height:18px;background:#fafafa;cursor:pointer}
.bar{position:absolute;top:2px;height:14px;border-radius:3px;opacity:.85;cursor:pointer}
.bar:hover{opacity:1;outline:2px solid #333}
.axis{display:flex;height:18px}.axis .track{background:none;cursor:default;font-size:11px;color:#777}
.tick{position:absolute;top:0;border-left:1px solid #ccc;height:100%;padding-left:2px}
.playhead{position:absolute;top:0;bottom:0;width:2px;background:#000;pointer-events:none}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;margin-top:16px;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
a.seek{cursor:pointer;color:#0645ad;text-decoration:underline}
"""

_JS = """
const data = JSON.parse(document.getElementById('events').textContent);
const video = document.getElementById('video');
const tl = document.getElementById('timeline');
const D = data.duration;
function pct(t){ return (100 * Math.min(Math.max(t, 0), D) / D) + '%'; }
function seek(t){ video.currentTime = t; video.play().catch(() => {}); }
function row(label, fill){
  const r = document.createElement('div'); r.className = 'row';
  const l = document.createElement('div'); l.className = 'label'; l.textContent = label; l.title = label;
  const tr = document.createElement('div'); tr.className = 'track';
  r.appendChild(l); r.appendChild(tr); tl.appendChild(r); fill(tr); return tr;
}
const classes = [...new Set(data.events.map(e => e['class']))];
const tracks = [];
for (const c of classes) {
  tracks.push(row(c, tr => {
    tr.addEventListener('click', ev => {
      if (ev.target !== tr) return;
      const box = tr.getBoundingClientRect(); seek(D * (ev.clientX - box.left) / box.width);
    });
    for (const e of data.events.filter(e => e['class'] === c)) {
      const b = document.createElement('div'); b.className = 'bar';
      b.style.left = pct(e.onset); b.style.width = `calc(${pct(e.offset - e.onset)} - 1px)`;
      b.style.background = data.colours[e.type];
      b.title = `${e['class']} · ${e.type} · ${e.onset}–${e.offset} s · score ${e.score}`;
      b.addEventListener('click', () => seek(e.onset));
      tr.appendChild(b);
    }
  }));
}
if (!classes.length) { const p = document.createElement('p'); p.textContent = 'No event above the thresholds.'; tl.appendChild(p); }
const axis = row('seconds', tr => {
  const step = D > 60 ? 10 : (D > 20 ? 5 : 1);
  for (let t = 0; t <= D; t += step) {
    const k = document.createElement('div'); k.className = 'tick'; k.style.left = pct(t); k.textContent = t; tr.appendChild(k);
  }
});
axis.parentElement.classList.add('axis');
const heads = tracks.concat([axis]).map(tr => { const h = document.createElement('div'); h.className = 'playhead'; tr.appendChild(h); return h; });
function draw(){ for (const h of heads) h.style.left = pct(video.currentTime); if (!video.paused) requestAnimationFrame(draw); }
video.addEventListener('timeupdate', draw); video.addEventListener('play', draw); video.addEventListener('seeked', draw);
for (const a of document.querySelectorAll('a.seek')) a.addEventListener('click', () => seek(parseFloat(a.dataset.t)));
draw();
"""


_SCRIPT_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def script_json(obj) -> str:
    """``obj`` as JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&``, U+2028 and
    U+2029 as ``\\uXXXX`` escapes (valid JSON; ``JSON.parse`` reads the same strings),
    so no ``</script``, ``<!--`` or ``<script`` can appear in it."""
    return json.dumps(obj).translate(_SCRIPT_ESCAPES)


def video_page(
    video_path: str,
    page_path: str,
    events: list[dict],
    duration: float,
    num_segments: int,
    title: str | None = None,
    subtitle: str = "",
    warnings: list[str] = (),
) -> str:
    """The page's HTML (module docstring). ``events``: this video's records
    (``parsing.merge_events``); ``duration``: the timeline's extent in seconds
    (the segments'); ``subtitle``: a line under the title (model, thresholds);
    ``warnings``: lines shown above the player."""
    rel = os.path.relpath(os.path.abspath(video_path), os.path.dirname(os.path.abspath(page_path)))
    src = "/".join(html.escape(urllib.parse.quote(part), quote=True) for part in rel.split(os.sep))
    name = title or os.path.splitext(os.path.basename(video_path))[0]
    extent = max(float(duration), float(num_segments))
    payload = script_json({"duration": extent, "events": events, "colours": TYPE_COLOURS})
    note = "".join(f'<div class="note">{html.escape(w)}</div>' for w in warnings)
    if not video_path.lower().endswith(BROWSER_CONTAINERS):
        note += (
            f'<div class="note">Browsers may not play {html.escape(os.path.splitext(video_path)[1])}'
            f" files; the timeline and the table still work.</div>"
        )
    legend = "".join(
        f'<span><i style="background:{TYPE_COLOURS[t]}"></i>{t}</span>' for t in EVENT_TYPES
    )
    rows = "".join(
        f'<tr><td><a class="seek" data-t="{e["onset"]}">{e["onset"]:g}–{e["offset"]:g} s</a></td>'
        f'<td>{html.escape(e["class"])}</td><td style="color:{TYPE_COLOURS[e["type"]]}">'
        f"{e['type']}</td><td>{e['score']:.3f}</td></tr>"
        for e in events
    )
    table = (
        f"<table><tr><th>time</th><th>class</th><th>type</th><th>score</th></tr>{rows}</table>"
        if events
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)} · parsed events</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(name)}</h1>
<div class="meta">{html.escape(subtitle)}{" · " if subtitle else ""}{num_segments} one-second segments ·
{len(events)} events · click a bar to play from its onset</div>
{note}<video id="video" controls preload="metadata" src="{src}"></video>
<div class="legend">{legend}</div>
<div class="timeline" id="timeline"></div>
{table}
<script type="application/json" id="events">{payload}</script>
<script>{_JS}</script>
</body></html>
"""


def write_video_pages(
    records: list[dict], videos: dict[str, dict], out_dir: str, subtitle: str = ""
) -> list[str]:
    """Writes ``out_dir/pages/<id>.html`` for every video (each whole or not at all);
    ``videos`` maps an id to ``{'path', 'duration', 'num_segments'}`` and optional
    ``'warnings'``. Returns the pages' paths."""
    folder = os.path.join(out_dir, "pages")
    os.makedirs(folder, exist_ok=True)
    by_video: dict[str, list[dict]] = {vid: [] for vid in videos}
    for r in records:
        by_video.setdefault(r["video"], []).append(r)
    paths = []
    for vid, info in videos.items():
        page = os.path.join(folder, f"{vid}.html")
        text = video_page(
            info["path"],
            page,
            by_video.get(vid, []),
            info["duration"],
            info["num_segments"],
            vid,
            subtitle,
            info.get("warnings", ()),
        )
        fileio.atomic_write_text(page, text)
        paths.append(page)
    return paths

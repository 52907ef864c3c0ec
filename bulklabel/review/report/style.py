"""The report's stylesheet: a clean light theme, system fonts only (nothing is fetched)."""

CSS = """
:root {
  --ink: #1f2328; --muted: #6a737d; --line: #e3e6ea; --bg: #f5f6f8; --card: #ffffff;
  --accent: #3b5bdb; --accent-soft: #edf2ff; --warn: #e8590c; --warn-soft: #fff4e6;
  --bad: #c92a2a; --ok: #2b8a3e;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif;
}
.wrap { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header.top { background: var(--card); border-bottom: 1px solid var(--line); margin-bottom: 20px; }
header.top .wrap { padding-top: 18px; padding-bottom: 10px; }
h1 { font-size: 22px; margin: 0; font-weight: 650; letter-spacing: -0.01em; overflow-wrap: anywhere; }
.eyebrow { color: var(--accent); font-size: 12px; font-weight: 600; letter-spacing: .08em;
  text-transform: uppercase; margin: 0 0 2px; }
.subtitle { color: var(--muted); margin: 4px 0 10px; overflow-wrap: anywhere; }
nav { display: flex; flex-wrap: wrap; gap: 6px; }
nav a { color: var(--ink); text-decoration: none; font-size: 13px; padding: 3px 10px;
  border: 1px solid var(--line); border-radius: 999px; background: var(--bg); }
nav a:hover { border-color: var(--accent); color: var(--accent); }
nav a .n { color: var(--muted); margin-left: 4px; font-variant-numeric: tabular-nums; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 22px 20px; margin: 0 0 20px; }
h2 { font-size: 17px; margin: 0 0 4px; font-weight: 650; }
h3 { font-size: 14px; margin: 18px 0 8px; font-weight: 600; overflow-wrap: anywhere; }
.lead { color: var(--muted); margin: 0 0 14px; font-size: 13.5px; }
.muted { color: var(--muted); font-weight: 400; }
.empty { color: var(--muted); font-style: italic; margin: 6px 0 0; }
.empty.ok { color: var(--ok); font-style: normal; }
.note { background: var(--warn-soft); border-left: 3px solid var(--warn); padding: 8px 12px;
  border-radius: 4px; font-size: 13.5px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin: 12px 0 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fbfbfc; }
.card-name { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.card-value { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; line-height: 1.3; }
.card-note { color: var(--muted); font-size: 12.5px; }
.card.bad .card-value { color: var(--bad); }
.card-value .unit { font-size: 13px; font-weight: 500; color: var(--muted); }
dl.details { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; font-size: 14px; }
dl.details dt { color: var(--muted); }
dl.details dd { margin: 0; overflow-wrap: anywhere; }
code, .path { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: 12.5px; }
.path { overflow-wrap: anywhere; word-break: break-all; }
.chart-box { overflow-x: auto; }
svg.chart { display: block; width: 100%; max-width: 1080px; height: auto; font-size: 13px; }
svg.chart text { fill: #343a40; }
svg.chart .bar rect { fill: var(--accent); }
svg.chart .other rect { fill: #adb5bd; }
svg.chart .low rect { fill: var(--warn); }
svg.chart g:hover rect { opacity: .8; }
svg.chart .value { fill: #495057; font-variant-numeric: tabular-nums; }
svg.chart .share, svg.chart .tick, svg.chart .axis-title { fill: var(--muted); }
svg.chart .tick { font-size: 12px; }
svg.chart .grid { stroke: #edf0f2; }
svg.chart .axis { stroke: #adb5bd; }
.label-block + .label-block { border-top: 1px solid var(--line); }
.label-block h3 { margin-top: 14px; }
.label-name { background: var(--accent-soft); color: var(--accent); padding: 1px 8px; border-radius: 4px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(calc(var(--thumb) + 12px), 1fr));
  gap: 10px; margin-bottom: 14px; }
figure.tile { margin: 0; padding: 5px; border: 1px solid var(--line); border-radius: 8px; background: #fbfbfc;
  display: flex; flex-direction: column; align-items: center; }
figure.tile.flagged { border-color: var(--warn); background: var(--warn-soft); }
figure.tile figcaption { font-size: 12px; margin-top: 4px; display: flex; gap: 6px; align-items: center;
  font-variant-numeric: tabular-nums; }
.badge { background: var(--warn); color: #fff; border-radius: 3px; padding: 0 5px; font-size: 10.5px;
  font-weight: 600; text-transform: uppercase; letter-spacing: .04em; }
img.thumb { display: block; width: var(--thumb); height: var(--thumb); object-fit: contain;
  background: #eceef1; border-radius: 4px; }
.thumb-missing { display: flex; flex-direction: column; align-items: center; justify-content: center;
  width: var(--thumb); height: var(--thumb); border-radius: 4px; border: 1px dashed #ced4da; color: var(--muted);
  background: repeating-linear-gradient(45deg, #f1f3f5, #f1f3f5 6px, #f8f9fa 6px, #f8f9fa 12px);
  font-size: 11px; text-align: center; padding: 4px; overflow: hidden; line-height: 1.25; }
.thumb-missing small { display: block; font-size: 9.5px; margin-top: 3px; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th { text-align: left; font-size: 11.5px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em;
  font-weight: 600; padding: 6px 10px; border-bottom: 1px solid var(--line); }
td { padding: 6px 10px; border-bottom: 1px solid #f0f2f4; vertical-align: middle; overflow-wrap: anywhere; }
tbody tr:hover { background: #fafbfc; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.cell-thumb { width: 1%; }
td.cell-thumb img.thumb, td.cell-thumb .thumb-missing {
  width: calc(var(--thumb) * .75); height: calc(var(--thumb) * .75); }
.meter { display: block; margin: 3px 0 0 auto; width: 64px; height: 5px; background: #e9ecef; border-radius: 3px;
  overflow: hidden; }
.meter span { display: block; height: 100%; background: var(--accent); }
.meter.mid span { background: #f59f00; }
.meter.low span { background: var(--warn); }
details { margin-top: 14px; }
details > summary { cursor: pointer; font-weight: 600; font-size: 14px; padding: 4px 0; }
details > summary:hover { color: var(--accent); }
table.reasons td:first-child { width: 100%; }
footer { color: var(--muted); font-size: 12.5px; padding-bottom: 28px; }
@media (max-width: 640px) {
  section { padding: 14px; }
  dl.details { grid-template-columns: 1fr; }
  dl.details dd { margin-bottom: 6px; }
}
"""

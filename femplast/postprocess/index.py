"""Index pages (``index.html`` and ``index.md``) linking every figure of an output directory."""

from __future__ import annotations

import html
import os
from pathlib import Path

from femplast.postprocess.data import RunData
from femplast.postprocess.figures import Entry

SECTIONS = [("figure", "Figures"), ("render", "Field renders"), ("animation", "Animation")]


def _rel(p: Path, base: Path) -> str:
    return Path(os.path.relpath(p, base)).as_posix()


def _facts(run: RunData) -> list[tuple[str, str]]:
    s = run.summary or {}
    out = [("output directory", str(run.outdir)), ("families", ", ".join(run.families()))]
    case = s.get("case", {})
    if case:
        out.append(("case", f"{case.get('name', '?')}: {case.get('description', '')}"))
        m = case.get("mesh", {})
        if m:
            out.append(("mesh", f"{m.get('kind')} n = {m.get('n')}, L = {m.get('L')}"))
    for k in ("num_cells", "slip_systems_per_cell", "backend", "total_slip_events", "wall_time"):
        if k in s:
            v = s[k]
            out.append((k, f"{v:.3g}" if isinstance(v, float) else str(v)))
    st = s.get("stationary")
    if st:
        out.append(("stationary", ", ".join(f"{k} = {v:.4g}" if isinstance(v, float)
                                            else f"{k} = {v}" for k, v in st.items())))
    if run.realizations:
        out.append(("realizations", str(len(run.realizations))))
    return out


def write_index(run: RunData, figdir: Path, entries: list[Entry],
                failures: list[tuple[str, str]] = ()) -> tuple[Path, Path]:
    figdir = Path(figdir)
    title = f"femplast figures: {run.name}"
    md = [f"# {title}", "", "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in _facts(run)]
    h = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}"
         "</title>", "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;"
         "padding:1em}img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"
         "figcaption{font-size:90%;color:#333}td{padding:2px 8px;vertical-align:top}"
         "</style></head><body>", f"<h1>{html.escape(title)}</h1>", "<table>"]
    h += [f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
          for k, v in _facts(run)]
    h.append("</table>")
    for kind, head in SECTIONS:
        es = [e for e in entries if e.kind == kind]
        if not es:
            continue
        md += ["", f"## {head}", ""]
        h.append(f"<h2>{head}</h2>")
        for e in es:
            rel = _rel(e.path, figdir)
            other = "".join(f" [{p.suffix[1:]}]({_rel(p, figdir)})" for p in e.extra)
            md += [f"### {e.path.stem}", "", f"![{e.path.stem}]({rel})", "",
                   e.caption + other, ""]
            oth = "".join(f" <a href='{_rel(p, figdir)}'>{p.suffix[1:]}</a>" for p in e.extra)
            h.append(f"<figure id='{e.path.stem}'><a href='{rel}'><img src='{rel}' "
                     f"alt='{e.path.stem}'></a><figcaption><b>{e.path.stem}</b>: "
                     f"{html.escape(e.caption)}{oth}</figcaption></figure>")
    if run.xdmf:
        md += ["", "## ParaView", "",
               "Cell fields as XDMF time series (one grid per snapshot, named cell data); open "
               "with `paraview <file>` (reader: *Xdmf3 Reader S* or *XDMF Reader*), then "
               "colour by a field and step through time.", ""]
        h += ["<h2>ParaView</h2>", "<p>Cell fields as XDMF time series (one grid per snapshot, "
              "named cell data); open with <code>paraview &lt;file&gt;</code> (reader: Xdmf3 "
              "Reader S or XDMF Reader), colour by a field and step through time.</p><ul>"]
        for p in run.xdmf:
            md.append(f"- [{p.name}]({_rel(p, figdir)}) (+ {p.with_suffix('.h5').name})")
            h.append(f"<li><a href='{_rel(p, figdir)}'>{p.name}</a></li>")
        h.append("</ul>")
    if failures:
        md += ["", "## Not produced", ""] + [f"- {n}: {err}" for n, err in failures]
        h += ["<h2>Not produced</h2><ul>"] + [f"<li>{html.escape(n)}: {html.escape(err)}</li>"
                                             for n, err in failures] + ["</ul>"]
    h.append("</body></html>")
    pm, ph = figdir / "index.md", figdir / "index.html"
    pm.write_text("\n".join(md) + "\n")
    ph.write_text("\n".join(h) + "\n")
    return ph, pm

#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb without quarto: markdown cells as they are, visible code
cells as python blocks followed by their stored text output. `--check` exits 1 when README.md differs."""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]

def render(nb):
    out = []
    for c in nb["cells"]:
        src = "".join(c["source"]).rstrip()
        if c["cell_type"] == "markdown":
            out.append(src.replace("](../", "](").replace("](nbs/", "](nbs/")); continue
        first = src.splitlines()[0] if src else ""
        if first.startswith("#| hide") or "#| hide" in src.splitlines()[:3]: continue
        code = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
        if code and "#| echo: false" not in src: out.append(f"```python\n{code}\n```")
        for o in c.get("outputs", []):
            txt = "".join(o.get("text", "")) or "".join(o.get("data", {}).get("text/markdown", "")) \
                  or "".join(o.get("data", {}).get("text/plain", ""))
            if not txt.strip(): continue
            if "text/markdown" in o.get("data", {}): out.append(txt.rstrip())
            else: out.append(f"```\n{txt.rstrip()}\n```")
    return "<!-- generated from nbs/index.ipynb by .ci/make_readme.py: edit the notebook -->\n\n" + "\n\n".join(out) + "\n"

text = render(json.loads((root/"nbs/index.ipynb").read_text()))
if "--check" in sys.argv:
    same = (root/"README.md").exists() and (root/"README.md").read_text() == text
    if not same: print("README.md is not in sync with nbs/index.ipynb: run `make readme`"); sys.exit(1)
else: (root/"README.md").write_text(text)

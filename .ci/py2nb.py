#!/usr/bin/env python3
"""Convert a `# %%`-delimited .py draft into a clean Jupyter notebook (nbformat 4).
usage: py2nb.py draft.py out.ipynb    (markdown cells: `# %% [markdown]`, lines start with '# ')"""
import json, sys, re

def convert(src):
    cells, cur, kind = [], None, None
    def flush():
        if cur is None: return
        lines = list(cur)
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if not lines: return
        if kind == 'markdown':
            lines = [l[2:] if l.startswith('# ') else (l[1:] if l.startswith('#') else l) for l in lines]
            cells.append(dict(cell_type='markdown', metadata={}, source=_join(lines)))
        else:
            cells.append(dict(cell_type='code', execution_count=None, metadata={}, outputs=[], source=_join(lines)))
    for line in src.splitlines():
        if line.startswith('# %%'):
            flush(); cur = []; kind = 'markdown' if '[markdown]' in line else 'code'
        else:
            if cur is None: cur, kind = [], 'code'
            cur.append(line)
    flush()
    return dict(cells=cells, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')),
                nbformat=4, nbformat_minor=5)

def _join(lines): return [l + '\n' for l in lines[:-1]] + [lines[-1]]

if __name__ == '__main__':
    nb = convert(open(sys.argv[1]).read())
    with open(sys.argv[2], 'w') as f: json.dump(nb, f, indent=1, ensure_ascii=False); f.write('\n')

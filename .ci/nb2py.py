#!/usr/bin/env python3
"""Inverse of py2nb: notebook -> `# %%` draft (drops outputs)."""
import json, sys
nb = json.load(open(sys.argv[1]))
out = []
for c in nb['cells']:
    src = ''.join(c['source']).splitlines()
    if c['cell_type'] == 'markdown':
        out.append('# %% [markdown]'); out += ['# ' + l if l else '#' for l in src]
    else:
        out.append('# %%'); out += src
    out.append('')
open(sys.argv[2], 'w').write('\n'.join(out) + '\n')

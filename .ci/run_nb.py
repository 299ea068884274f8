#!/usr/bin/env python3
"""Execute notebooks in place (from their folder) and store their outputs: run_nb.py nbs/10_x.ipynb ..."""
import os, sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
for p in sys.argv[1:]:
    p = Path(p).resolve(); cwd = os.getcwd(); os.chdir(p.parent)
    try:
        nb = read_nb(p); sh = CaptureShell(); sh.run_all(nb, exc_stop=True)
        write_nb(nb, p); print("ran", p.name)
    finally: os.chdir(cwd)

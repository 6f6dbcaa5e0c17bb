"""Mechanical rename: top-level `core`/`tui` imports -> `shepherd.core`/`shepherd.tui`."""
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
pat_imp = re.compile(r'^(\s*)(from|import) (core|tui)(?=[.\s])', re.M)
pat_str = re.compile(r'''(["'])(core|tui)\.(?=[a-z_])''')   # "shepherd.core.store.db.x", "shepherd.tui.cli"
n = 0
for p in list(root.rglob('*.py')):
    if any(part in ('.git', '__snapshots__', 'build') for part in p.parts):
        continue
    s = p.read_text()
    t = pat_imp.sub(lambda m: f"{m[1]}{m[2]} shepherd.{m[3]}", s)
    t = pat_str.sub(lambda m: f"{m[1]}shepherd.{m[2]}.", t)
    t = t.replace('b"shepherd.tui.cli"', 'b"shepherd.tui.cli"')
    if t != s:
        p.write_text(t); n += 1
print("files changed:", n)

import subprocess, sys
from pathlib import Path
from app.config import Config
from app.storage import open_storage

CHILD = r"""
import subprocess, sys
from app.config import load
from app.storage import open_storage
lower, upper, work, root, session = sys.argv[1:]
subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", root], check=True)
with open_storage(load(), writer=True, kind="tests", wanted="use") as store:
    new = store.create_session("new")["id"]
    steps = [lambda: store.put_file(session, "a.txt", b"v2", replace=True),
             lambda: store.put_file(session, "c.txt", b"c"),
             lambda: store.delete_file(session, "b.txt"),
             lambda: store.restore(session, file="b.txt"),
             lambda: store.put_file(new, "n.txt", b"n"),
             lambda: store.delete_session(new),
             lambda: store.restore(new),
             lambda: store.get_session(session),
             lambda: store.empty_trash(),
             ]
    for step in steps:
        try:
            r = step()
            print("ok", str(r)[:150])
        except Exception as e:
            print("ERR", type(e).__name__, e)
    print(store.check(repair=False).findings)
with open_storage(load(), writer=True, kind="tests", wanted="use") as store:
    print(store.check(repair=False).findings)
    print(store.get_session(session))
"""

def test_overlay(app_config: Config, tmp_path) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill") as store:
        s = store.create_session("x")["id"]
        store.put_file(s, "a.txt", b"v1")
        store.put_file(s, "b.txt", b"b")
    lower = tmp_path / "lower"
    root.rename(lower)
    root.mkdir()
    (tmp_path / "upper").mkdir(); (tmp_path / "work").mkdir()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD,
                        str(lower), str(tmp_path / "upper"), str(tmp_path / "work"), str(root), s],
                       capture_output=True, text=True)
    print(r.stdout, r.stderr[-3000:])
    assert 0

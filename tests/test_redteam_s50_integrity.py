"""Red team 50 on integrity: checks made outside the session's lock, under real concurrency.

What broke (each test says how it was found):

* a file's ``uploaded_at`` was stamped when its upload's commit began, before it took the
  session's lock: a ``PUT`` that waited for another client's commit of the same name was
  recorded (and listed, and answered) as uploaded before the version it replaced, so the
  newest version read as the older one (2 of 150 pairs of ``PUT`` at once on a real server,
  9 of 100 pairs of commits in one process). It is now stamped under the lock, and never
  before the version it replaces (a clock stepped back), as the trash names its entries.
"""

from __future__ import annotations

import threading

from app.config import Config
from app.storage import FileEntry, open_storage


def test_a_put_that_waited_for_anothers_commit_is_never_stamped_before_the_version_it_replaced(
    app_config: Config,
) -> None:
    """Two commits of one name at once, each on a thread of its own (as two clients' PUTs
    are): the version that ends up in the session replaced the other, so it must not read
    as uploaded before it. Before the fix the stamp was taken before the lock was waited
    for: 9 of 100 rounds read so."""
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        sid = store.create_session("two at once")["id"]
        store.put_file(sid, "a.txt", b"first")
        for round_ in range(60):
            uploads = [store.begin_upload(sid, "a.txt", replace=True) for _ in range(2)]
            answers: list[FileEntry | None] = [None, None]
            for index, upload in enumerate(uploads):
                upload.write(b"round %d, client %d" % (round_, index))

            def commit(index: int) -> None:
                answers[index] = uploads[index].commit()

            threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert answers[0] is not None and answers[1] is not None
            (current,) = store.list_files(sid)
            assert current in answers  # the answer is what was stored
            (replaced,) = [a for a in answers if a != current]
            assert current["uploaded_at"] > replaced["uploaded_at"], (round_, current, replaced)

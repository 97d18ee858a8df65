"""State written by 0.2 (JSON, tests/data/state_v1.json, made by tests/data/state_v1.py on commit 3af1345) is
read by this version as if it had written it: loaded, then fed the second half of the stream, each stage's
state equals the state of a run over the whole stream from scratch, and its next checkpoint replaces every
JSON field."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from monitor.core.state_codec import BLOB_PREFIX, MAGIC, changed_fields, read_fields
from tests.helpers import comparable_state, plain

DATA = Path(__file__).parent / "data"


def _fixture() -> Any:
    spec = importlib.util.spec_from_file_location("state_v1", DATA / "state_v1.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_state_of_0_2_migrates_on_load_and_continues_as_if_never_stopped(tmp_path: Path) -> None:
    v1 = _fixture()
    stored = json.loads((DATA / "state_v1.json").read_text())
    old = {k: {f: v.encode() for f, v in stored[k].items()} for k in ("stage1", "stage2", "labels")}
    assert all(not raw.startswith(MAGIC) for fields in old.values() for raw in fields.values())

    proc, models = v1.processors(tmp_path)
    part, mpart, labels = proc.new_partition(0), models.new_partition(0), v1.label_partition()
    part.load_fields(old["stage1"])
    mpart.load_fields(old["stage2"])
    labels.load_fields(old["labels"])
    v1.run(proc, models, part, mpart, labels, v1.HALF, v1.EVENTS, stored["block_offset"])

    (tmp_path / "fresh").mkdir()
    proc2, models2 = v1.processors(tmp_path / "fresh")
    part2, mpart2, labels2 = proc2.new_partition(0), models2.new_partition(0), v1.label_partition()
    v1.run(proc2, models2, part2, mpart2, labels2, 0, v1.EVENTS, 0)

    assert part.events == v1.EVENTS and comparable_state(part) == comparable_state(part2)
    mpart.dirty |= set(mpart.streams)
    mpart2.dirty |= set(mpart2.streams)
    assert plain(read_fields(mpart.to_fields())) == plain(read_fields(mpart2.to_fields()))
    assert labels.events == v1.EVENTS and labels.to_fields() == labels2.to_fields()
    # The next checkpoint rewrites every JSON field in the current format (and deletes none it still needs).
    for fields, current in ((old["stage1"], part.to_fields()), (old["stage2"], mpart.to_fields()),
                            (old["labels"], labels.to_fields())):
        changed, gone = changed_fields(current, fields)
        assert set(fields) - set(gone) <= set(changed)
        assert all(v.startswith(MAGIC) for name, v in changed.items() if not name.startswith(BLOB_PREFIX))

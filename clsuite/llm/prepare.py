"""``llm_prepare``: a configured sequence → ``data/prepared_text/<sequence>/``.

``tasks/`` is :func:`clsuite.data.text.sequence.write_sequence`'s folder of the trained
tasks; ``heldout/`` the same format with the one held-out task (its test side is scored at
every stage, it is never trained on; its train side, ``heldout.background`` examples, is
the general text that methods needing one get as ``LLMContext.background``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clsuite.data.text.sequence import build_sequence, write_sequence
from clsuite.io import replace_dir, temp_dir_beside
from clsuite.llm.config import SequenceConfig
from clsuite.llm.train import HELDOUT_DIR, TASKS_DIR


def prepare_sequence(name: str, cfg: SequenceConfig, raw_root: Path, out_dir: Path) -> Path:
    tasks = build_sequence(cfg.tasks, raw_root, seed=cfg.data_seed, train=cfg.train, test=cfg.test,
                           where=f"llm.sequences.{name}.tasks")
    tmp = temp_dir_beside(out_dir)
    try:
        write_sequence(tasks, tmp / TASKS_DIR, info={"sequence": name})
        if cfg.heldout is not None:
            h = cfg.heldout
            spec = {"source": h.source, "name": h.name, "train": h.background, "test": h.test, "options": dict(h.options)}
            held = build_sequence([{k: v for k, v in spec.items() if v is not None}], raw_root, seed=cfg.data_seed,
                                  where=f"llm.sequences.{name}.heldout")
            clash = {t.task for t in tasks} & {held[0].task}
            if clash:
                from clsuite.errors import ParamsError

                raise ParamsError(f"llm.sequences.{name}.heldout: task {held[0].task!r} is also trained on; "
                                  "give the held-out task another source or name")
            write_sequence(held, tmp / HELDOUT_DIR, info={"sequence": name, "heldout": True})
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

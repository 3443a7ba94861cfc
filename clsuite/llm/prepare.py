"""``llm_prepare``: a configured sequence → ``data/prepared_text/<sequence>/``.

``tasks/`` is :func:`clsuite.data.text.sequence.write_sequence`'s folder of the trained
tasks; ``heldout/`` the same format with the one held-out task (its test side is scored at
after every task, it is never trained on); ``background/`` the same format with the sequence's
``background`` corpus: its ``n`` train-side examples are the general text that methods
needing one get as ``LLMContext.background`` (sparse memory finetuning's TF-IDF statistics).
The background shares no example text with any trained or held-out task (checked here; the
params check compares task names and corpora).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clsuite.data.text.sequence import TaskData, build_sequence, write_sequence
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.io import replace_dir, temp_dir_beside
from clsuite.llm.config import SequenceConfig
from clsuite.llm.train import BACKGROUND_DIR, HELDOUT_DIR, TASKS_DIR

HELDOUT_TRAIN = 32


def prepare_sequence(name: str, cfg: SequenceConfig, raw_root: Path, out_dir: Path) -> Path:
    tasks = build_sequence(cfg.tasks, raw_root, seed=cfg.data_seed, train=cfg.train, test=cfg.test,
                           where=f"llm.sequences.{name}.tasks")
    tmp = temp_dir_beside(out_dir)
    try:
        write_sequence(tasks, tmp / TASKS_DIR, info={"sequence": name})
        if cfg.heldout is not None:
            h = cfg.heldout
            # the train side is never used; 32 examples as before, so that a reasoning-gym held-out
            # test side (generated to avoid the train questions) stays what it was
            spec = {"source": h.source, "name": h.name, "train": HELDOUT_TRAIN, "test": h.test, "options": dict(h.options)}
            held = build_sequence([{k: v for k, v in spec.items() if v is not None}], raw_root, seed=cfg.data_seed,
                                  where=f"llm.sequences.{name}.heldout")
            clash = {t.task for t in tasks} & {held[0].task}
            if clash:
                raise ParamsError(f"llm.sequences.{name}.heldout: task {held[0].task!r} is also trained on; "
                                  "give the held-out task another source or name")
            write_sequence(held, tmp / HELDOUT_DIR, info={"sequence": name, "heldout": True})
            tasks = tasks + held
        if cfg.background is not None:
            b = cfg.background
            spec = {"source": b.source, "name": b.name, "train": b.n, "test": 1, "options": dict(b.options)}
            background = build_sequence([{k: v for k, v in spec.items() if v is not None}], raw_root,
                                        seed=cfg.data_seed, where=f"llm.sequences.{name}.background")
            check_disjoint(background[0], tasks, f"llm.sequences.{name}.background")
            write_sequence(background, tmp / BACKGROUND_DIR, info={"sequence": name, "background": True})
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def check_disjoint(background: TaskData, evaluated: list[TaskData], where: str) -> None:
    """DataError unless ``background`` shares no task name and no prompt with ``evaluated``."""
    prompts = set(background.train.prompt) | set(background.test.prompt)
    for t in evaluated:
        if t.task == background.task:
            raise ParamsError(f"{where}: task name {t.task!r} is also an evaluated task; rename or replace it")
        shared = prompts & (set(t.train.prompt) | set(t.test.prompt))
        if shared:
            raise DataError(f"{where}: {len(shared)} background example(s) also occur in the evaluated task "
                            f"{t.task!r} (e.g. {sorted(shared)[0][:80]!r}); the background must be text no "
                            "evaluated task contains: choose another source")

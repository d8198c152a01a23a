"""dvclive for training runs, imported only when a run logs (dvclive brings DVC, which a bare GPU machine lacks)."""

from __future__ import annotations

import os

from dvclive import Live
from dvclive import env as dvclive_env


class RunLive(Live):
    """dvclive writing only its own folder when no DVC command runs this one (``DVC_ROOT`` unset).

    There dvclive's DVC side has nothing to record into (no experiment, no ``dvc.yaml``: ``save_dvc_exp`` and
    ``dvcyaml`` are off) yet opens the DVC repository, which writes DVC's site cache
    (``/var/tmp/dvc/repo/<token>/``) and ``.dvc/tmp/``, and in a git repository without DVC even runs
    ``dvc init``. Under ``dvc repro`` / ``dvc exp run`` dvclive keeps its own behaviour."""

    def _init_dvc(self) -> None:
        if os.getenv(dvclive_env.DVC_ROOT):
            super()._init_dvc()
        else:
            self._dvc_file = "dvc.yaml"  # what dvclive's own setup sets; unused with dvcyaml=False

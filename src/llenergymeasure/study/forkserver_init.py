"""Imported by a study's fork server only (see :mod:`llenergymeasure.study.child`), never by
anything else: it ties the server's life to the study's and imports the frameworks once.

A study starts its experiment children from a ``forkserver``: one server process per study
process, started on the first experiment, that has imported torch and transformers (no CUDA:
importing torch does not initialise it) and forks a fresh child per experiment. Each child
therefore starts with the frameworks already imported instead of paying their import (seconds
per experiment) again; it is still a process of its own, with its own CUDA context, memory and
exit, as a ``spawn`` child is. Importing this module

- asks the kernel to kill the server when its parent (the study) dies (``prctl``; the
  server also exits when its pipe to the study closes), so the chain study -> server ->
  child never leaves an orphan (each child arms its own parent-death signal on the server);
- and, listed after it when the study runs real experiments, ``forkserver_frameworks``
  imports what the pytorch and vLLM backends' runs import first.
"""

from __future__ import annotations

import os

from llenergymeasure.lifeline import die_with_parent

die_with_parent(os.getppid())  # the server's parent: the study process

"""Run directories: their layout (:mod:`.layout`: file names, checkpoints, ``latest.json``,
``metrics.jsonl``, the writer ``RunDir``; below ``distributed/``) and a training checkpoint
loaded for use (:mod:`.trained`)."""

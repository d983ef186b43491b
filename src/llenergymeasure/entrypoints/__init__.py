"""Process entry points other than the ``llem`` command (docs/ARCHITECTURE.md).

``container``: ``python -m llenergymeasure.entrypoints.container`` runs one experiment of a
study inside its backend's container image (`study.docker_runner` starts it).
"""

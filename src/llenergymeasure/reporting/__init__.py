"""Reading saved results back: the HTML report, DataFrames and exports, comparisons.

Layer (docs/ARCHITECTURE.md): below ``_api`` (which writes a study's report when it ends),
above ``study`` (it reads study manifests for cycles and uses ``study.stats`` for CIs). It
never measures; plotly and pandas (the ``report`` extra) are imported inside functions.
"""

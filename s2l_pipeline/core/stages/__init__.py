"""The top floor of core: one function per pipeline stage, typed manifests in and out.

The Dagster assets, the ``s2l`` command and the benchmarks call these and nothing below them
to build a stage, so a fix lands once. Nothing else in core imports this package.
"""

"""The top floor of core: one function per pipeline stage, typed manifests in and out.

The Dagster assets, the ``s2l`` command and the benchmarks build a pipeline stage only through
these, so a fix lands once. Nothing else in core imports this package (a test holds it).
"""

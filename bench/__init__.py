"""bivio's side-by-side benchmark suite (see docs/performance.md).

``python -m bench.run`` measures bivio against its peers; ``--smoke`` runs
each scenario briefly against bivio alone so CI can prove the suite works.
"""

"""Variants of a benchmark, built once by ``prepare`` (``variants:`` in params.yaml).

- :mod:`.corruptions`: ImageNet-C-style corrupted copies of the clean test split;
- :mod:`.long_tail`: a long-tailed train split (test stays balanced);
- :mod:`.ood`: an out-of-distribution test set (another source, or held-out classes);
- :mod:`.corruption_cache`: corrupted blocks computed once (shared cache, worker processes);
- :mod:`.build`: the variant arrays and manifest entry that ``prepare`` writes;
- :mod:`.sets`: those arrays loaded back as named evaluation sets for the records.

Kept free of heavy imports: :mod:`clsuite.config` imports the corruption names from here.
"""

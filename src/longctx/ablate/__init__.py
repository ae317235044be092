"""``longctx ablate``: the paper's mixture ablation (Table 5, Fig. 3/4) as one command.

``config`` parses and checks the YAML (arms may differ only in the mixture unless they say
so), ``run`` drives the existing stages for every arm x seed, ``summary`` turns their output
folders into ``ablation.json`` with means, seed spreads and verdicts.
"""

"""Corpus side of longctx: readers, tokenizer, demo corpus, length scan and statistics.

Public entry points (other stages import these; keep them stable):
- ``readers``: ``expand_inputs``, ``iter_file``, ``iter_documents``, ``Fields``, ``Document``,
  ``DataError`` and the skip-reason constants (``SKIP_REASONS``).
- ``tokenizer``: ``load_tokenizer`` -> ``Tokenizer`` (``encode_documents``,
  ``encode_documents_where``, ``encode_plain``, ``count_tokens``, ``fingerprint``, ``describe``,
  ``dtype``, ``decode``; picklable).
- ``demo_corpus``: ``write_demo_corpus``.
- ``lengths``: ``scan_lengths``, ``iter_scan``, ``scan_file``.
- ``stats``: ``StatsConfig``, ``run_stats``, ``compute_stats``, ``plot_stats``.
"""

"""Search by meaning: embedding models, the vector store, the index job and the query.

``core.search.embedders`` (sentence and CLIP/SigLIP models), ``core.search.store`` (the
``embeddings`` table and its in-memory matrix), ``core.search.index_job`` (``update_index``)
and ``core.search.query`` (``search``, ``similar``).  torch is imported only when a model loads.
"""

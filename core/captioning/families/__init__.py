"""One module per model family.

Each module exposes ``load(ctx: LoadContext) -> HFCaptioner`` and is imported
by :mod:`core.captioning.registry` only when a model of that family is
loaded, so the heavy transformers imports happen then and not at
``import core.captioning``.
"""

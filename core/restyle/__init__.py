"""The restyle stage: a text language model rewrites a model's caption in a style.

Kept import-free (the submodules are imported by name) so that ``core.training.versions``
can reach :mod:`core.restyle.model` without a package-level cycle:

* :mod:`core.restyle.model` — loading a causal LM (or a server chat model) as a restyler,
  the prompt both training and restyling use, batched left-padded generation;
* :mod:`core.restyle.spec` — what a restyle run is (:class:`~core.restyle.spec.RestyleSpec`)
  and which restyler a name means (a trained restyler version, a folder or hub id);
* :mod:`core.restyle.job` — the restyle job (progress, cancel, resume, per-caption errors);
* :mod:`core.restyle.pairs` — the library's (model caption → verified caption) pairs;
* :mod:`core.restyle.training` — ``train --restyler``: LoRA, QLoRA or full fine-tuning
  on those pairs, saved as a model version recording ``target: restyler``.
"""
